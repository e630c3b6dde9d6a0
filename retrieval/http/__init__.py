"""Client/server over Chroma's v2 REST API: the sans-IO wire codec and the httpx transports.

``retrieval.http.wire`` and ``retrieval.http.calls`` import no HTTP library; the transports
(``retrieval.http.transport``) import httpx, and load only when an HTTP client is created.
"""
