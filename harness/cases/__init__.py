"""Case files in: line-aware YAML, the schema, validated Case objects, discovery, lint, new-case."""
