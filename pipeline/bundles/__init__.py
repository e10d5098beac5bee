"""The survey bundle, the one ingest format: reading and checking it, and the sample cuts and splits."""
