"""What the web page asks of the server, without HTTP: list collections, search them, make thumbnails.

Everything goes through the ``Backend`` seam and the public ``Collection`` handle, so the page sees
exactly what a client would. Server-side embedding (a typed text or a dropped image) uses the
collection's own stored embedding function, rebuilt from its registry name and config, and only
when the operator listed that name in ``ui.embed_functions``. Each distinct function (name + config)
is built once and kept, so a model loads on the first query and stays loaded; two collections made
with the same model share it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval import embedding as emb
from retrieval.backend import Backend
from retrieval.collection import Collection
from retrieval.config import ComponentSpec
from retrieval.errors import InvalidArgumentError, NotAllowedError, NotFoundError
from retrieval.server.thumbnails import Thumbnail, Thumbnailer, resolve_local_image
from retrieval.server.ui_config import ENABLE_EMBEDDING_HINT, ENABLE_THUMBNAILS_HINT, UiConfig
from retrieval.types import CollectionRecord

#: A page may scroll this far into one query's results (query n_results = offset + limit).
MAX_RESULTS = 1000
MAX_PAGE = 200
_KEY_SAMPLE = 200  # records sampled to suggest metadata keys and values for the filter
#: Seconds since 1970 when a photo was taken, as `retrieval index` stores it (loaders.photo_metadata):
#: where the sample holds it, the page offers a date range over it.
_DATE_KEY = "date_taken_ts"
_QUERY_CACHE = 128  # query vectors kept, so "more results" does not embed the query again


@dataclass(frozen=True)
class SearchRequest:
    """One page search, parsed from the page's JSON. At most one of text, image, uri, like_id.

    ``image`` is the raw file bytes; with no query at all the collection is browsed in stored order.
    """

    text: str | None = None
    image: bytes | None = None
    uri: str | None = None
    like_id: str | None = None
    where: dict | None = None
    where_document: dict | None = None
    offset: int = 0
    limit: int = 24

    @classmethod
    def from_json(cls, body: Any, max_upload_bytes: int) -> SearchRequest:
        """Validate the page's request body; errors name the bad field and value."""
        if not isinstance(body, dict):
            raise InvalidArgumentError(f"the search body must be a JSON object; got {type(body).__name__}")
        known = {"text", "image", "uri", "like_id", "where", "where_document", "offset", "limit"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise InvalidArgumentError(f"unknown search field(s) {unknown}; known: {sorted(known)}")
        given = [k for k in ("text", "image", "uri", "like_id") if body.get(k) not in (None, "")]
        if len(given) > 1:
            raise InvalidArgumentError(f"search by one of text, image, uri or like_id at a time; got {given}")
        for key in ("text", "uri", "like_id", "image"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise InvalidArgumentError(f"search field {key!r} must be a string; got {body[key]!r}")
        for key in ("where", "where_document"):
            if body.get(key) is not None and not isinstance(body[key], dict):
                raise InvalidArgumentError(f"search field {key!r} must be a JSON object or null; got {body[key]!r}")
        offset, limit = body.get("offset", 0), body.get("limit", 24)
        for key, value, low, high in (("offset", offset, 0, MAX_RESULTS), ("limit", limit, 1, MAX_PAGE)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidArgumentError(f"search field {key!r} must be an integer in [{low}, {high}]; got {value!r}")
        return cls(
            text=body.get("text") or None,
            image=_decode_image(body["image"], max_upload_bytes) if body.get("image") else None,
            uri=body.get("uri") or None,
            like_id=body.get("like_id") or None,
            where=body.get("where") or None,
            where_document=body.get("where_document") or None,
            offset=offset,
            limit=limit,
        )

    @property
    def mode(self) -> str:
        for mode in ("text", "image", "uri", "like_id"):
            if getattr(self, mode) is not None:
                return "similar" if mode == "like_id" else mode
        return "browse"


def _decode_image(data: str, max_upload_bytes: int) -> bytes:
    if data.startswith("data:"):  # a data URL as FileReader.readAsDataURL makes it
        data = data.partition(",")[2]
    if len(data) > (max_upload_bytes * 4) // 3 + 8:
        raise InvalidArgumentError(
            f"the uploaded image is over the server's limit of {max_upload_bytes} bytes (ui.max_upload_bytes)"
        )
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidArgumentError(f"search field 'image' must be base64 (or a data: URL); {e}") from e


class UiService:
    """The page's operations over one backend.

    Args:
        backend: the storage the server serves.
        config: the operator's switches for the page.
    """

    def __init__(self, backend: Backend, config: UiConfig):
        self.backend = backend
        self.config = config
        self.thumbnailer = Thumbnailer(config.thumbnail_size)
        self._functions: dict[str, tuple[Any, threading.Lock]] = {}
        self._functions_lock = threading.Lock()
        self._vectors: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._vectors_lock = threading.Lock()

    # -------------------------------------------------------------- reading

    def info(self) -> dict[str, Any]:
        return {
            "version": self.backend.get_version(),
            "embedding": {
                "enabled": self.config.embedding_enabled,
                "functions": list(self.config.embed_functions),
                "hint": None if self.config.embedding_enabled else ENABLE_EMBEDDING_HINT,
            },
            "thumbnails": {
                "enabled": bool(self.config.thumbnail_roots),
                "hint": None if self.config.thumbnail_roots else ENABLE_THUMBNAILS_HINT,
            },
            "max_upload_bytes": self.config.max_upload_bytes,
        }

    def databases(self, tenant: str) -> list[str]:
        return [d["name"] for d in self.backend.list_databases(tenant, None, 0)]

    def collections(self, tenant: str, database: str) -> list[dict[str, Any]]:
        self.backend.get_tenant(tenant)  # a typo in the page's tenant or database is a 404, not "empty"
        self.backend.get_database(database, tenant)
        records = self.backend.list_collections(tenant, database, None, 0)
        return [self._summary(r) for r in records]

    def describe(self, tenant: str, database: str, name: str) -> dict[str, Any]:
        """A collection's summary plus metadata keys (and some values) to offer in the filter."""
        record = self.backend.get_collection(tenant, database, name)
        sample = Collection(self.backend, record, None, None).get(limit=_KEY_SAMPLE, include=["metadatas"])
        keys: dict[str, dict[str, Any]] = {}
        for metadata in sample["metadatas"] or []:
            for key, value in (metadata or {}).items():
                entry = keys.setdefault(key, {"key": key, "type": _type_name(value), "values": []})
                if isinstance(value, (str, int, float, bool)) and value not in entry["values"] and len(entry["values"]) < 50:
                    entry["values"].append(value)
        for entry in keys.values():
            entry["values"].sort(key=lambda x: (str(type(x)), x))
        return {**self._summary(record), "metadata_keys": sorted(keys.values(), key=lambda e: e["key"]),
                "date_range": _date_range(sample["metadatas"] or [])}

    def _summary(self, record: CollectionRecord) -> dict[str, Any]:
        config = record.config
        ef, loader = config.embedding_function, config.data_loader
        can_embed, why = self._embedding_allowed(ef, record.name)
        return {
            "name": record.name,
            "id": record.id,
            "tenant": record.tenant,
            "database": record.database,
            "count": self.backend.count(record),
            "dimension": record.dimension,
            "space": config.hnsw.space,
            "metadata": record.metadata,
            "embedding_function": None if ef is None else {"name": ef.name, "config": ef.config},
            "data_loader": None if loader is None else loader.name,
            "can_embed": can_embed,
            "embed_hint": why,
        }

    # ------------------------------------------------------------ searching

    def search(self, tenant: str, database: str, name: str, request: SearchRequest) -> dict[str, Any]:
        """One page of results: nearest records to the query, or stored records when browsing."""
        record = self.backend.get_collection(tenant, database, name)
        collection = Collection(self.backend, record, None, None)
        include = ["metadatas", "documents", "uris"]
        if request.mode == "browse":
            got = collection.get(
                where=request.where,
                where_document=request.where_document,
                limit=request.limit + 1,  # one extra says whether there is more
                offset=request.offset,
                include=include,
            )
            rows = _rows(got["ids"], got, None)
            has_more = len(rows) > request.limit
            rows = rows[: request.limit]
        else:
            vector = self._query_vector(record, request)
            # A query's results end at MAX_RESULTS: the last page is cut there, and says there is no more.
            want = max(1, min(request.offset + request.limit, MAX_RESULTS))
            got = collection.query(
                query_embeddings=vector[None, :],
                n_results=want,
                where=request.where,
                where_document=request.where_document,
                include=include + ["distances"],
            )
            flat = {k: (v[0] if isinstance(v, list) and v else v) for k, v in got.items() if k != "included"}
            rows = _rows(flat["ids"], flat, flat["distances"])[request.offset :]
            has_more = len(flat["ids"]) == want and want < MAX_RESULTS
        thumbs = bool(self.config.thumbnail_roots)
        for row in rows:
            row["thumbnail"] = thumbs and row["uri"] is not None
        return {"mode": request.mode, "offset": request.offset, "items": rows, "has_more": has_more}

    def _query_vector(self, record: CollectionRecord, request: SearchRequest) -> np.ndarray:
        if request.like_id is not None:
            got = Collection(self.backend, record, None, None).get(ids=[request.like_id], include=["embeddings"])
            if not got["ids"]:
                raise NotFoundError(f"no record {request.like_id!r} in collection {record.name!r}")
            return np.asarray(got["embeddings"][0], dtype=np.float32)
        spec = record.config.embedding_function
        allowed, why = self._embedding_allowed(spec, record.name)
        if not allowed:
            raise NotAllowedError(why)
        if request.text is not None:
            payload, kind = request.text.encode(), "text"
        elif request.image is not None:
            payload, kind = request.image, "image"
        else:
            path = resolve_local_image(request.uri, self.config.thumbnail_roots)
            payload, kind = path.read_bytes(), "image"
        key = (_spec_key(spec), kind, hashlib.sha256(payload).hexdigest())
        with self._vectors_lock:
            if key in self._vectors:
                self._vectors.move_to_end(key)
                return self._vectors[key]
        function, lock = self._function(spec)
        with lock:  # one embedding at a time per model: lazy loading and torch are not re-entrant
            if kind == "text":
                embed = getattr(function, "embed_query", None) or function
                vectors = embed([request.text])
            else:
                vectors = function([_decode_pixels(payload)])
        vector = np.asarray(vectors[0], dtype=np.float32)
        with self._vectors_lock:
            self._vectors[key] = vector
            while len(self._vectors) > _QUERY_CACHE:
                self._vectors.popitem(last=False)
        return vector

    def _embedding_allowed(self, spec: ComponentSpec | None, name: str) -> tuple[bool, str | None]:
        if spec is None or spec.legacy:
            return False, (
                f"collection {name!r} has no stored embedding function, so the server cannot embed a query "
                "for it; browse it, filter it, or use 'Similar' on a record"
            )
        if not self.config.embedding_enabled:
            return False, ENABLE_EMBEDDING_HINT
        if spec.name not in self.config.embed_functions:
            return False, (
                f"collection {name!r} embeds with {spec.name!r}, which the server may not run: add it to "
                f"ui.embed_functions in the server config (now {list(self.config.embed_functions)})"
            )
        return True, None

    def _function(self, spec: ComponentSpec) -> tuple[Any, threading.Lock]:
        key = _spec_key(spec)
        with self._functions_lock:
            if key not in self._functions:
                self._functions[key] = (emb.build(spec, "embedding_function"), threading.Lock())
            return self._functions[key]

    # ----------------------------------------------------------- thumbnails

    def thumbnail(self, tenant: str, database: str, name: str, record_id: str) -> Thumbnail:
        """The thumbnail of a record's stored URI; only stored URIs, only under the allowed roots."""
        path = self.thumbnail_path(tenant, database, name, record_id)
        return self.thumbnailer.render(path)

    def thumbnail_path(self, tenant: str, database: str, name: str, record_id: str):
        record = self.backend.get_collection(tenant, database, name)
        got = Collection(self.backend, record, None, None).get(ids=[record_id], include=["uris"])
        if not got["ids"]:
            raise NotFoundError(f"no record {record_id!r} in collection {name!r}")
        uri = got["uris"][0]
        if uri is None:
            raise NotFoundError(f"record {record_id!r} of collection {name!r} has no URI to show")
        return resolve_local_image(uri, self.config.thumbnail_roots)


def _spec_key(spec: ComponentSpec) -> str:
    return json.dumps([spec.name, spec.config], sort_keys=True, default=str)


def _decode_pixels(data: bytes) -> np.ndarray:
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidArgumentError(f"the query image could not be decoded ({e}); send a PNG, JPEG, WebP or GIF file") from e


def _rows(ids: list[str], got: dict[str, Any], distances: list[float] | None) -> list[dict[str, Any]]:
    rows = []
    for i, record_id in enumerate(ids):
        rows.append(
            {
                "id": record_id,
                "distance": None if distances is None else float(distances[i]),
                "metadata": (got.get("metadatas") or [None] * len(ids))[i],
                "document": (got.get("documents") or [None] * len(ids))[i],
                "uri": (got.get("uris") or [None] * len(ids))[i],
            }
        )
    return rows


def _date_range(metadatas: list[Any]) -> dict[str, Any] | None:
    """``{"key", "min", "max"}`` of the photo dates in a sample, or ``None`` when it has none."""
    stamps = [m[_DATE_KEY] for m in metadatas
              if m and isinstance(m.get(_DATE_KEY), (int, float)) and not isinstance(m.get(_DATE_KEY), bool)]
    return {"key": _DATE_KEY, "min": min(stamps), "max": max(stamps)} if stamps else None


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list"
