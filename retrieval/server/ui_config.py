"""What the operator allows the web page to do (the ``ui`` section of the server config).

The page is on by default but does nothing the plain API does not: it lists collections and shows
stored records. Two things need the operator's explicit consent, because they make the server do
work a client asked for:

- **server-side embedding**: a text or image typed into the page is embedded on the server with the
  collection's own stored embedding function, and only when that function's registry name is in
  ``embed_functions``;
- **thumbnails and URI queries**: the server reads image files, and only under ``thumbnail_roots``.

Example config (YAML or the same keys in JSON)::

    ui:
      enabled: true
      embed_functions: [open_clip]
      thumbnail_roots: [assets/gallery]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from retrieval.errors import InvalidArgumentError

#: How to turn server-side embedding on; the page shows this when it is off.
ENABLE_EMBEDDING_HINT = (
    "Server-side embedding is off. To search by text or image from this page, list the collection's "
    "embedding function in the server config, e.g. `ui: {embed_functions: [open_clip]}`, and restart "
    "`retrieval run --config server.yaml`."
)
ENABLE_THUMBNAILS_HINT = (
    "Thumbnails are off. To show images, list the folders that hold them in the server config, e.g. "
    "`ui: {thumbnail_roots: [/photos]}`."
)

_KEYS = ("enabled", "embed_functions", "thumbnail_roots", "thumbnail_size", "max_upload_bytes")


@dataclass(frozen=True)
class UiConfig:
    """The web page's switches.

    Args:
        enabled: serve the page at ``/`` and its JSON API under ``/ui/api``.
        embed_functions: registry names of embedding functions the server may build and run for
            page queries (e.g. ``("open_clip",)``); empty means no server-side embedding.
        thumbnail_roots: folders whose image files may be read for thumbnails and URI queries;
            empty means no thumbnails. Stored as resolved absolute paths.
        thumbnail_size: the longest side, in pixels, of a served thumbnail.
        max_upload_bytes: the largest image a page may upload as a query.

    Example:
        >>> UiConfig.from_dict({"embed_functions": ["open_clip"]}).embedding_enabled
        True
    """

    enabled: bool = True
    embed_functions: tuple[str, ...] = ()
    thumbnail_roots: tuple[Path, ...] = field(default=())
    thumbnail_size: int = 256
    max_upload_bytes: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise InvalidArgumentError(f"ui.enabled must be true or false; got {self.enabled!r}")
        names = self.embed_functions
        if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
            raise InvalidArgumentError(
                f"ui.embed_functions must be a list of embedding function names such as ['open_clip']; got {names!r}"
            )
        object.__setattr__(self, "embed_functions", tuple(names))
        roots = self.thumbnail_roots
        if isinstance(roots, (str, os.PathLike)) or not all(isinstance(r, (str, os.PathLike)) for r in roots):
            raise InvalidArgumentError(f"ui.thumbnail_roots must be a list of folders; got {roots!r}")
        resolved = []
        for root in roots:
            path = Path(os.path.realpath(os.path.expanduser(os.fspath(root))))
            if not path.is_dir():
                raise InvalidArgumentError(
                    f"ui.thumbnail_roots entry {os.fspath(root)!r} is not a folder (resolved to {str(path)!r}); "
                    "give an existing folder of images"
                )
            resolved.append(path)
        object.__setattr__(self, "thumbnail_roots", tuple(resolved))
        for key, low, high in (("thumbnail_size", 16, 2048), ("max_upload_bytes", 1024, 1 << 30)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidArgumentError(f"ui.{key} must be an integer in [{low}, {high}]; got {value!r}")

    @property
    def embedding_enabled(self) -> bool:
        return bool(self.embed_functions)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> UiConfig:
        """Parse the ``ui`` section of a server config; unknown keys are an error (likely typos)."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidArgumentError(f"the server config's 'ui' section must be a mapping; got {data!r}")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise InvalidArgumentError(f"unknown key(s) {unknown} in the server config's 'ui' section; known: {list(_KEYS)}")
        values = dict(data)
        for key in ("embed_functions", "thumbnail_roots"):
            if key in values and isinstance(values[key], list):
                values[key] = tuple(values[key])
        return cls(**values)
