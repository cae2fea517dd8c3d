"""Outputs: results.json, goldens, the report (matrix, sections), compare, merge, review."""
