"""The server's OpenAPI 3 document, generated from the route table (``GET /openapi.json``).

One entry per route of ``retrieval.http.wire.ROUTES``; request bodies are described as loosely as
the handlers accept them (every field optional unless the handler requires it, filters as free
objects) so the document is honest documentation and a fair target for schema-driven fuzzing
(schemathesis runs against it in the tests). The authoritative validation stays in the handlers.
"""

from __future__ import annotations

from typing import Any

from retrieval.http.wire import API_PREFIX, ROUTES

_ANY_OBJECT: dict[str, Any] = {"type": "object"}
_NULLABLE_OBJECT: dict[str, Any] = {"type": ["object", "null"]}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_NULLABLE_STRINGS = {"type": ["array", "null"], "items": {"type": ["string", "null"]}}
_EMBEDDINGS = {
    "type": ["array", "null"],
    "items": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string", "format": "byte"}]},
}
_INCLUDE = {"type": ["array", "null"], "items": {"type": "string", "enum": ["embeddings", "documents", "uris", "metadatas", "distances", "data"]}}
_INT = {"type": ["integer", "null"], "minimum": 0}
_FILTERS = {"where": _NULLABLE_OBJECT, "where_document": _NULLABLE_OBJECT}


def _object(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


_RECORDS = dict(ids=_STRINGS, embeddings=_EMBEDDINGS, metadatas={"type": ["array", "null"], "items": _NULLABLE_OBJECT},
                documents=_NULLABLE_STRINGS, uris=_NULLABLE_STRINGS)

BODIES: dict[str, dict[str, Any]] = {
    "create_tenant": _object(("name",), name={"type": "string"}),
    "create_database": _object(("name",), name={"type": "string"}),
    "create_collection": _object(
        ("name",), name={"type": "string"}, metadata=_NULLABLE_OBJECT, configuration=_NULLABLE_OBJECT,
        schema=_NULLABLE_OBJECT, get_or_create={"type": "boolean"},
    ),
    "modify_collection": _object(
        new_name={"type": ["string", "null"]}, new_metadata=_NULLABLE_OBJECT, new_configuration=_NULLABLE_OBJECT
    ),
    "add": _object(("ids", "embeddings"), **_RECORDS),
    "upsert": _object(("ids", "embeddings"), **_RECORDS),
    "update": _object(("ids",), **_RECORDS),
    "delete": _object(ids={"type": ["array", "null"], "items": {"type": "string"}}, limit=_INT, **_FILTERS),
    "get": _object(ids={"type": ["array", "null"], "items": {"type": "string"}}, limit=_INT, offset=_INT,
                   include=_INCLUDE, **_FILTERS),
    "query": _object(
        ("query_embeddings",), query_embeddings=_EMBEDDINGS, n_results={"type": "integer", "minimum": 1},
        ids={"type": ["array", "null"], "items": {"type": "string"}}, include=_INCLUDE, **_FILTERS,
    ),
    "search": _object(("searches",), searches={"type": "array", "items": _ANY_OBJECT}, read_level={"type": "string"}),
    "reset": {"type": ["object", "null"]},
}

_PAGED = ("list_databases", "list_collections")


def openapi_document(version: str, *, auth: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the Chroma v2 API this server speaks.

    Args:
        version: the server's version string.
        auth: whether credentials are required (adds the security schemes and requirements).

    Example:
        >>> doc = openapi_document("0.1.0", auth=False)
        >>> sorted(doc["paths"]["/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/query"])
        ['post']
    """
    paths: dict[str, dict[str, Any]] = {}
    for verb, route in ROUTES.items():
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in ("tenant", "database", "collection")
            if "{" + name + "}" in route.path
        ]
        if verb in _PAGED:
            parameters += [{"name": n, "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}}
                           for n in ("limit", "offset")]
        operation: dict[str, Any] = {
            "operationId": verb,
            "summary": verb.replace("_", " "),
            "parameters": parameters,
            "responses": {
                "200": {"description": "the answer, in chromadb's JSON shape", "content": {"application/json": {}}},
                "default": {"description": "an error: {error, message}", "content": {"application/json": {}}},
            },
        }
        if verb in BODIES:
            operation["requestBody"] = {"required": verb != "reset", "content": {"application/json": {"schema": BODIES[verb]}}}
        if auth and route.action != "public":
            operation["security"] = [{"bearer": []}, {"chromaToken": []}, {"basic": []}]
        for path in route.paths:
            alias = path != route.path
            paths.setdefault(API_PREFIX + path, {})[route.method.lower()] = (
                {**operation, "operationId": f"{verb}_at_{path.strip('/') or 'root'}"} if alias else operation
            )
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "retrieval (Chroma v2 API)", "version": version},
        "paths": paths,
    }
    if auth:
        document["components"] = {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "chromaToken": {"type": "apiKey", "in": "header", "name": "X-Chroma-Token"},
            "basic": {"type": "http", "scheme": "basic"},
        }}
    return document
