"""``retrieval run``: the HTTP server (Starlette on uvicorn) over the embedded engine.

Importing ``retrieval`` never imports this package (nor Starlette); ``retrieval.server.app`` does.
"""
