"""``AsyncClient`` and ``AsyncCollection``: async twins of the sync handles.

There is one implementation of the rules (validation, embedding, result shaping): ``Client`` and
``Collection``. The twins are written out in ``retrieval.async_handles``, generated from them
(``python -m retrieval.async_codegen``) so IDEs, ``help()`` and type checkers see every method,
and their signatures cannot drift (``tests/test_async_client.py`` checks the file is current).
How a twin runs its sync method, and how I/O gets back to the event loop, is
``retrieval.async_shell``.
"""

from __future__ import annotations

from retrieval.async_handles import AsyncClient, AsyncCollection
from retrieval.async_shell import LoopBridge, public_methods

__all__ = ["AsyncClient", "AsyncCollection", "LoopBridge", "public_methods"]
