"""chromadb's ``chromadb.execution`` import path (see :mod:`retrieval.execution.expression`)."""
