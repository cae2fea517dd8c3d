"""Benchmarks: provenance, runners, overhead attribution, storage."""
