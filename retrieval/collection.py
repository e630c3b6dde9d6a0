"""``Collection``: a thin handle that validates input once, embeds it, and calls the backend.

The backend (``retrieval.backend.Backend``) is the storage engine in this process or a server over
HTTP; this module is the same for both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from retrieval import validation as v
from retrieval.component_errors import component_errors, maps_component_errors
from retrieval.config import modified_config, modified_metadata
from retrieval.errors import InvalidArgumentError
from retrieval.inputs import InputEmbedder
from retrieval.query.filters import parse_where, parse_where_document
from retrieval.results import get_result, query_result, stored_columns
from retrieval.types import (
    DEFAULT_INCLUDE_GET,
    DEFAULT_INCLUDE_QUERY,
    INCLUDE_GET,
    INCLUDE_QUERY,
    CollectionRecord,
    DeleteResult,
    GetRequest,
    GetResult,
    QueryRequest,
    QueryResult,
)

if TYPE_CHECKING:
    from retrieval.backend import Backend


class Deferred:
    """A collection part (embedding function, loader, sparse pair) built on first use.

    ``list_collections`` hands these out: one collection whose embedding function is not
    registered in this process must not break the listing of all (issue 8).

    Args:
        build: called once, on first use; its result is kept.
    """

    __slots__ = ("build",)

    def __init__(self, build: Callable[[], Any]):
        self.build = build


class Collection:
    """A named set of records; obtain one from a client, never construct it directly.

    Example:
        >>> import retrieval
        >>> col = retrieval.EphemeralClient().create_collection("docs", embedding_function=None)
        >>> col.add(ids=["a"], embeddings=[[0.1, 0.2]], documents=["hello"])
        >>> col.count()
        1
    """

    def __init__(
        self,
        backend: Backend,
        record: CollectionRecord,
        embedding_function: Any,
        data_loader: Any,
        sparse: tuple[str, Any] | None = None,
    ):
        self._backend = backend
        self._record = record
        # Any of these may be a Deferred, built on first use. ``sparse`` is (Search API key,
        # sparse embedding function), filled from documents.
        self._parts: dict[str, Any] = {"embedding_function": embedding_function, "data_loader": data_loader, "sparse": sparse}
        self._inputs = InputEmbedder(lambda: self.name, self._part)

    def _part(self, name: str) -> Any:
        value = self._parts[name]
        if isinstance(value, Deferred):
            with component_errors():
                value = value.build()
            self._parts[name] = value
        return value

    @property
    def _embedding_function(self) -> Any:
        return self._part("embedding_function")

    @property
    def _data_loader(self) -> Any:
        return self._part("data_loader")

    @property
    def _sparse(self) -> tuple[str, Any] | None:
        return self._part("sparse")

    # ------------------------------------------------------------- properties

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def metadata(self) -> dict | None:
        return self._record.metadata

    @property
    def tenant(self) -> str:
        return self._record.tenant

    @property
    def database(self) -> str:
        return self._record.database

    @property
    def configuration(self) -> dict:
        return self._record.config.to_public_dict()

    @property
    def configuration_json(self) -> dict:
        return self.configuration

    @property
    def embedding_function(self) -> Any:
        return self._embedding_function

    @property
    def schema(self) -> Any:
        """chromadb's ``collection.schema``: a :class:`retrieval.schema.Schema` of this collection's
        indexes (vector space, HNSW settings and embedding function; its sparse index, if any)."""
        from retrieval.schema import Schema

        return Schema.from_configuration(self.configuration, self._embedding_function, self._part("sparse"))

    @property
    def data_loader(self) -> Any:
        return self._data_loader

    def __repr__(self) -> str:
        return f"Collection(name={self.name!r}, id={self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Collection) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # ------------------------------------------------------------------ reads

    def count(self) -> int:
        return self._backend.count(self._record)

    def peek(self, limit: int = 10) -> GetResult:
        return self.get(limit=limit, include=["embeddings", "documents", "metadatas"])

    @maps_component_errors
    def get(
        self,
        ids: Any = None,
        where: dict | None = None,
        limit: int | None = None,
        offset: int | None = None,
        where_document: dict | None = None,
        include: Sequence[str] | None = None,
    ) -> GetResult:
        """Records by id and/or filter, in insertion order (or the order of ``ids``).

        Args:
            ids: one id or a list; ids that do not exist are left out of the answer. None: any id.
            where: a metadata filter, e.g. ``{"page": {"$gte": 3}}`` or ``{"$and": [f1, f2]}``
                (two clauses or more), or a ``K(...)`` filter. None: no filter; ``{}`` is an error.
            limit: at most this many records (None: all).
            offset: skip this many matching records first.
            where_document: a document filter, e.g. ``{"$contains": "cat"}`` or ``{"$regex": "^a"}``.
            include: any of ``"documents"``, ``"metadatas"``, ``"embeddings"``, ``"uris"``, ``"data"``
                (loads each record's URI with the data loader). Default: documents and metadatas.

        Returns:
            chromadb's column-major ``GetResult``: ``ids`` plus one list per included field.

        Raises:
            InvalidArgumentError: a bad filter, include item, limit or offset; nothing is read.

        Example:
            >>> import retrieval
            >>> col = retrieval.EphemeralClient().create_collection("get-doc", embedding_function=None)
            >>> col.add(ids=["a", "b", "c"], embeddings=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
            ...         documents=["a cat", "a dog", "two cats"], metadatas=[{"n": 1}, {"n": 2}, {"n": 3}])
            >>> col.get(where={"n": {"$gte": 2}}, where_document={"$contains": "cat"})["ids"]
            ['c']
            >>> col.get(ids=["b", "a"], include=["metadatas"])["metadatas"]
            [{'n': 2}, {'n': 1}]
            >>> col.get(limit=1, offset=1)["documents"]
            ['a dog']
        """
        ids = None if ids is None else v.validate_ids(ids)  # [] raises, as in chromadb (pass ids=None for all)
        include = _with_uris_for_data(v.validate_include(include, INCLUDE_GET, DEFAULT_INCLUDE_GET))
        limit, offset = v.validate_limit_offset(limit, offset)
        where_tree, document_tree = parse_where(where), parse_where_document(where_document)
        self._check_data_loader(include)
        request = GetRequest(
            ids=ids,
            where=where_tree,
            where_document=document_tree,
            limit=limit,
            offset=offset,
            include=stored_columns(include),
        )
        return get_result(self._backend.get(self._record, request), include, self._data_loader)

    @maps_component_errors
    def query(
        self,
        query_embeddings: Any = None,
        query_texts: Any = None,
        query_images: Any = None,
        query_uris: Any = None,
        ids: Any = None,
        n_results: int = 10,
        where: dict | None = None,
        where_document: dict | None = None,
        include: Sequence[str] | None = None,
    ) -> QueryResult:
        """Nearest records to each query, by embedding, text, image array or URI.

        Give exactly one of ``query_embeddings``, ``query_texts``, ``query_images`` or
        ``query_uris``; texts, images and URIs are embedded with the collection's function (URIs
        read through its data loader).

        Args:
            query_embeddings: one vector or a list of them, of the collection's dimension.
            query_texts: one string or a list.
            query_images: one image (HxW / HxWx3 / HxWx4 array or PIL image) or a list.
            query_uris: one URI or a list (any fsspec URI the data loader reads).
            ids: only consider these ids.
            n_results: neighbours per query (clamped to the number of matching records).
            where: a metadata filter, as in :meth:`get`.
            where_document: a document filter, as in :meth:`get`.
            include: as in :meth:`get`, plus ``"distances"``. Default: documents, metadatas, distances.

        Returns:
            chromadb's ``QueryResult``: one inner list per query in each field, nearest first.

        Raises:
            InvalidArgumentError: no or several query kinds, a bad filter, a vector of the wrong
                dimension, or no embedding function to embed texts/images/URIs.

        Example:
            >>> import retrieval
            >>> col = retrieval.EphemeralClient().create_collection("query-doc", embedding_function=None)
            >>> col.add(ids=["a", "b", "c"], embeddings=[[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]],
            ...         metadatas=[{"kind": "x"}, {"kind": "y"}, {"kind": "y"}])
            >>> col.query(query_embeddings=[[1.0, 0.0]], n_results=2)["ids"]
            [['a', 'c']]
            >>> col.query(query_embeddings=[1.0, 0.0], n_results=2, where={"kind": "y"}, include=[])["ids"]
            [['c', 'b']]
        """
        n_results = v.validate_n_results(n_results)
        include = _with_uris_for_data(v.validate_include(include, INCLUDE_QUERY, DEFAULT_INCLUDE_QUERY))
        ids = None if ids is None else v.validate_ids(ids, allow_empty=True)
        where_tree, document_tree = parse_where(where), parse_where_document(where_document)
        self._check_data_loader(include)
        queries = self._inputs.queries(query_embeddings, query_texts, query_images, query_uris)
        request = QueryRequest(
            embeddings=queries,
            n_results=n_results,
            ids=ids,
            where=where_tree,
            where_document=document_tree,
            include=stored_columns(include),
        )
        return query_result(self._backend.query(self._record, request), include, self._data_loader)

    # ----------------------------------------------------------------- writes

    @maps_component_errors
    def add(
        self,
        ids: Any,
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
        images: Any = None,
        uris: Any = None,
    ) -> None:
        """Add new records. Ids that already exist are skipped with a warning (as in chromadb).

        Each record is embedded from exactly one source: ``embeddings`` if given, else
        ``documents``, ``images`` or ``uris`` through the collection's embedding function.
        The batch is validated completely first and written in one transaction: all or nothing.

        Args:
            ids: one id or a list of unique, non-empty strings.
            embeddings: one vector per id (a list of lists or an (n, d) array).
            metadatas: one dict (or None) per id; values are str, int (64-bit), float, bool or a
                non-empty list of one of those. ``None`` values mean "no such key".
            documents: one text (or None) per id.
            images: one image array or PIL image per id; embedded, not stored.
            uris: one URI per id; stored, and read with the data loader to embed.

        Raises:
            InvalidArgumentError: a bad id, vector, metadata value or count mismatch; nothing is written.
            DimensionMismatchError: vectors of another length than the collection's.

        Example:
            >>> import retrieval
            >>> col = retrieval.EphemeralClient().create_collection("add-doc", embedding_function=None)
            >>> col.add(ids=["a", "b"], embeddings=[[0.0, 1.0], [1.0, 0.0]], documents=["one", "two"],
            ...         metadatas=[{"page": 1}, None])
            >>> col.count()
            2
        """
        batch = self._inputs.batch(ids, embeddings, metadatas, documents, images, uris, mode="add")
        self._backend.write(self._record, "add", batch)

    @maps_component_errors
    def update(
        self,
        ids: Any,
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
        images: Any = None,
        uris: Any = None,
    ) -> None:
        """Change existing records; metadata merges and a ``None`` value deletes its key.

        Ids that do not exist are skipped with a logged error (as in chromadb). Fields not given
        are kept; a new document, image or URI is re-embedded (a record holds one modality).

        Args:
            ids: the records to change.
            embeddings: new vectors, one per id.
            metadatas: one dict (or None) per id, merged into the stored metadata.
            documents: new texts, one per id.
            images: new images, one per id (embedded; the stored document is cleared).
            uris: new URIs, one per id (read with the data loader and embedded).

        Raises:
            InvalidArgumentError: bad input, as for :meth:`add`; nothing is written.

        Example:
            >>> import retrieval
            >>> col = retrieval.EphemeralClient().create_collection("update-doc", embedding_function=None)
            >>> col.add(ids=["a"], embeddings=[[0.0, 1.0]], metadatas=[{"page": 1, "draft": True}])
            >>> col.update(ids=["a"], metadatas=[{"page": 2, "draft": None}])
            >>> col.get(ids=["a"])["metadatas"]
            [{'page': 2}]
        """
        batch = self._inputs.batch(ids, embeddings, metadatas, documents, images, uris, mode="update")
        self._backend.write(self._record, "update", batch)

    @maps_component_errors
    def upsert(
        self,
        ids: Any,
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
        images: Any = None,
        uris: Any = None,
    ) -> None:
        """Update records that exist and add the others.

        Args:
            ids: the records to write.
            embeddings: one vector per id (required for ids that are new, unless embedded from
                documents, images or uris).
            metadatas: one dict (or None) per id; for existing records it merges, and a ``None``
                value deletes its key.
            documents: one text per id.
            images: one image per id.
            uris: one URI per id.

        Raises:
            InvalidArgumentError: bad input, as for :meth:`add`; nothing is written.

        Example:
            >>> import retrieval
            >>> col = retrieval.EphemeralClient().create_collection("upsert-doc", embedding_function=None)
            >>> col.add(ids=["a"], embeddings=[[0.0, 1.0]], metadatas=[{"v": 1}])
            >>> col.upsert(ids=["a", "b"], embeddings=[[0.0, 1.0], [1.0, 0.0]], metadatas=[{"v": 2}, {"v": 1}])
            >>> got = col.get(include=["metadatas"])
            >>> got["ids"], got["metadatas"]
            (['a', 'b'], [{'v': 2}, {'v': 1}])
        """
        batch = self._inputs.batch(ids, embeddings, metadatas, documents, images, uris, mode="upsert")
        self._backend.write(self._record, "upsert", batch)

    def delete(
        self,
        ids: Any = None,
        where: dict | None = None,
        where_document: dict | None = None,
        limit: int | None = None,
    ) -> DeleteResult:
        """Delete records by id and/or filter (all conditions must hold); returns ``{"deleted": n}``.

        Args:
            ids: one id or a non-empty list (``[]`` is an error, as in chromadb); missing ids are ignored.
            where: a metadata filter, as in :meth:`get`.
            where_document: a document filter, as in :meth:`get`.
            limit: delete at most this many matching records, the oldest first; as in chromadb
                it needs a ``where`` or ``where_document`` filter.

        Raises:
            InvalidArgumentError: nothing to select by, ``ids=[]``, a bad filter or limit; nothing is deleted.

        Example:
            >>> import retrieval
            >>> col = retrieval.EphemeralClient().create_collection("delete-doc", embedding_function=None)
            >>> col.add(ids=["a", "b", "c"], embeddings=[[0.0]] * 3, metadatas=[{"k": 1}, {"k": 2}, {"k": 2}])
            >>> col.delete(ids=["a", "zzz"])
            {'deleted': 1}
            >>> col.delete(where={"k": 2}, limit=1)
            {'deleted': 1}
            >>> col.get()["ids"]
            ['c']
        """
        ids = None if ids is None else v.validate_ids(ids, allow_empty=True)
        where_tree, document_tree = parse_where(where), parse_where_document(where_document)
        limit = v.validate_delete(ids, where_tree, document_tree, limit)
        if limit == 0:
            return {"deleted": 0}
        return {"deleted": self._backend.delete(self._record, ids, where_tree, document_tree, limit)}

    @maps_component_errors
    def modify(self, name: str | None = None, metadata: dict | None = None, configuration: dict | None = None) -> None:
        """Rename, replace metadata, or change the mutable HNSW settings (``ef_search``, ``num_threads``...)."""
        if name is not None:
            v.validate_collection_name(name)
        if metadata is not None:
            metadata = modified_metadata(metadata)
        config = None
        if configuration is not None:
            config = modified_config(self._record.config, configuration)
        self._record = self._backend.modify_collection(self._record, name, metadata, config)

    @maps_component_errors
    def search(self, searches: Any) -> Any:
        """Run Search API requests (Knn, Rrf, filters, group-by) against this collection.

        Text and image Knn queries are embedded here, with this collection's functions; the
        backend evaluates the rest (one request over HTTP).
        """
        from retrieval.search.embed_queries import embed_knn_queries
        from retrieval.search.plan import Search

        batch = [searches] if isinstance(searches, Search) else list(searches)
        if not batch or not all(isinstance(s, Search) for s in batch):
            raise InvalidArgumentError(f"search() takes a Search or a non-empty list of Search; got {searches!r}")
        batch = embed_knn_queries(batch, self._inputs.search_query)
        result = self._backend.search(self._record, batch)
        return _load_search_data(result, self._data_loader)

    # -------------------------------------------------------------- internals

    def _check_data_loader(self, include: Sequence[str]) -> None:
        if "data" in include and self._data_loader is None:
            raise InvalidArgumentError(
                f"include=['data'] loads records from their uris, but collection {self.name!r} has no data loader; "
                "create it with data_loader=ImageLoader()"
            )


def _with_uris_for_data(include: Sequence[str]) -> list[str]:
    """chromadb answers ``include=["data"]`` with the URIs the data was loaded from as well."""
    include = list(include)
    if "data" in include and "uris" not in include:
        include.append("uris")
    return include


def _load_search_data(result: Any, loader: Any) -> Any:
    """Load the ``data`` column of searches that selected ``#data``: backends return each record's
    URI there, and only the handle (which holds the data loader) reads URIs."""
    data = result.get("data") or []
    for position, selected in enumerate(result.get("select") or []):
        if "#data" not in selected or data[position] is None:
            continue
        uris = data[position]
        data[position] = loader(uris) if loader is not None and any(u is not None for u in uris) else [None] * len(uris)
    return result
