"""pytest-benchmark modules run by `harness bench` (never by `harness run`: they live outside
harness/suite). Throughput per case declared in `checks.throughput`, and the harness's own
overhead (time outside backend calls in a suite run; collection time of generated cases)."""
