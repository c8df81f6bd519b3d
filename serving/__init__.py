"""`eventhouse serve`: the event collector, the read-only KPI API and the dashboards, in one FastAPI app."""
