"""Fault injection: the pipeline under worker, broker and database faults, checked from PostgreSQL afterwards."""
