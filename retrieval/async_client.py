"""``AsyncClient`` and ``AsyncCollection``: async twins of the sync handles.

There is one implementation of the rules (validation, embedding, result shaping): ``Client`` and
``Collection``. The twins are written out in ``retrieval.async_handles``, generated from them
(``python -m retrieval.async_codegen``) so IDEs, ``help()`` and type checkers see every method,
and their signatures cannot drift (``tests/test_async_client.py`` checks the file is current).
How a twin runs its sync method (one trip to a worker thread, I/O included) is
``retrieval.async_shell``.
"""

from __future__ import annotations

from retrieval.async_handles import AsyncClient, AsyncCollection
from retrieval.async_shell import client_executor, public_methods

__all__ = ["AsyncClient", "AsyncCollection", "client_executor", "public_methods"]
