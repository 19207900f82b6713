"""Benchmarks: run with `task bench`; results go to docs/BENCHMARKS.md, never into timed tests."""
