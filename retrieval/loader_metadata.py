"""A collection's data loader, kept in its metadata: the one form every Chroma server keeps.

Chroma's server (``chroma run``, the distributed deployment, Chroma Cloud) parses a collection's
configuration into its own typed struct: keys it does not know, such as our ``data_loader``, are
dropped on the way in. It cannot go inside the embedding function's config either: the server
keeps that JSON as is, but chromadb's client checks it against a schema that refuses extra keys.
Collection metadata is kept verbatim by every Chroma server, so retrieval's HTTP clients also
write the loader's spec there, as a JSON string under one reserved key::

    {"retrieval:data_loader": "{\\"config\\": {\\"max_pixels\\": 89478485}, \\"name\\": \\"image\\", \\"type\\": \\"known\\"}"}

On the way back the key is taken out of the metadata (``collection.metadata`` never shows it)
and is the loader whenever the configuration has none, so ``get_collection(name)`` rebuilds the
loader from either server. ``retrieval run`` moves the key into the configuration it stores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from retrieval.config import ComponentSpec

__all__ = ["LOADER_KEY", "split_loader", "with_loader"]

#: The reserved metadata key (settings in metadata have a precedent: chromadb's ``hnsw:*`` keys).
LOADER_KEY = "retrieval:data_loader"


def with_loader(metadata: Mapping[str, Any] | None, loader: ComponentSpec | None) -> dict[str, Any] | None:
    """``metadata`` plus the loader's spec under :data:`LOADER_KEY` (unchanged when there is no loader).

    Example:
        >>> with_loader({"topic": "shapes"}, ComponentSpec("image", {"max_pixels": 100}))
        {'topic': 'shapes', 'retrieval:data_loader': '{"config": {"max_pixels": 100}, "name": "image", "type": "known"}'}
        >>> with_loader(None, None) is None
        True
    """
    if loader is None or loader.legacy:
        return dict(metadata) if metadata is not None else None
    return {**(metadata or {}), LOADER_KEY: json.dumps(loader.to_dict(), sort_keys=True)}


def split_loader(metadata: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, ComponentSpec | None]:
    """The user's metadata (``None`` when nothing else is left) and the loader stored in it, if any.

    A value under the key that is not a loader spec is left in the metadata as the user's own.

    Example:
        >>> split_loader({"topic": "shapes", "retrieval:data_loader": '{"name": "image", "config": {}}'})
        ({'topic': 'shapes'}, ComponentSpec(name='image', config={}, legacy=False))
        >>> split_loader({"retrieval:data_loader": '{"name": "image"}'})[0] is None
        True
    """
    if not metadata or LOADER_KEY not in metadata:
        return (dict(metadata) if metadata is not None else None), None
    try:
        spec = ComponentSpec.from_dict(json.loads(metadata[LOADER_KEY]), "data_loader")
    except (TypeError, ValueError):  # not JSON, or not a spec (InvalidArgumentError is a ValueError)
        return dict(metadata), None
    user = {k: v for k, v in metadata.items() if k != LOADER_KEY}
    return (user or None), spec
