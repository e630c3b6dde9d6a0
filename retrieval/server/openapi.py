"""The server's OpenAPI 3 document, generated from the route table (``GET /openapi.json``).

One entry per route of ``retrieval.http.wire.ROUTES``; each request body is the schema the server
checks bodies against and each answer the schema its answers are tested against (both from
``retrieval.http.verbs.VERBS``), so the document is honest documentation and
a fair target for schema-driven fuzzing (schemathesis runs against it in the tests). What values
mean (unique ids, well-formed filters) the verbs' parsers check beyond it.
"""

from __future__ import annotations

from typing import Any

from retrieval.http.verbs import PAGED, VERBS
from retrieval.http.wire import API_PREFIX, ROUTES


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
            for name in ("tenant", "database", "collection", "function")
            if "{" + name + "}" in route.path
        ]
        if verb in PAGED:
            parameters += [{"name": n, "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}}
                           for n in ("limit", "offset")]
        operation: dict[str, Any] = {
            "operationId": verb,
            "summary": verb.replace("_", " "),
            "parameters": parameters,
            "responses": {
                "201" if verb == "add" else "200": {
                    "description": "the answer, in chromadb's JSON shape",
                    "content": {"application/json": {"schema": VERBS[verb].returns} if VERBS[verb].returns else {}},
                },
                "default": {"description": "an error: {error, message}", "content": {"application/json": {
                    "schema": {"type": "object", "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                               "required": ["error", "message"]}}}},
            },
        }
        body = VERBS[verb].body
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body.schema()}}}
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
