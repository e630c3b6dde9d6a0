"""chromadb's ``chromadb.api`` import path; the names people import live in :mod:`retrieval.api.types`."""
