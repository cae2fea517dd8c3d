"""Running checks: models once per worker, fork isolation, xdist grouping, shards, the llama-server build."""
