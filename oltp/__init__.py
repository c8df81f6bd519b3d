"""The orders service's OLTP side: its PostgreSQL schema, the transactional outbox and CDC."""
