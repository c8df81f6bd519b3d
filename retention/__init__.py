"""Data retention beyond the raw tables' TTL: physically removing soft-deleted orders (deleted_orders.py).

The raw tables' TTL (from `loaded_at`) is set where they are created, ingestion/raw_tables.py;
Kafka topics' `retention.ms` where they are created, ingestion/topics.py.
"""
