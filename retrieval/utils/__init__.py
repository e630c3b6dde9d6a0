"""chromadb-style import paths: ``retrieval.utils.embedding_functions`` and ``retrieval.utils.data_loaders``."""
