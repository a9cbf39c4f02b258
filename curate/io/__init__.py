"""Data in and out: ingest of shards into a workspace, export of the kept documents."""
