"""Batch jobs: ``retrieval index`` (a photo archive into a collection, resumable) and
``retrieval embed`` (into Parquet shards). Imported only by the CLI; ``import retrieval`` stays light."""
