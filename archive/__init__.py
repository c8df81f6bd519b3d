"""The raw archive: each raw table's rows per ingest hour as Parquet, written and read by ClickHouse.

Layout: `<archive>/<table>/dt=YYYY-MM-DD/hour=HH/part.parquet` (zstd), where the hour is the rows'
`loaded_at` hour (when the loader wrote them), so every stored row is in exactly one hour's file.
`location.py` renders paths and the file()/s3() table functions, `tables.py` says which tables are
archived, `writer.py` archives an hour, `replay.py` restores the raw tables or Kafka from it.
"""
