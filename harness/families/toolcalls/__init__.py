"""Tool-call family: round trip, handler prompts, streaming, schema-valid arguments."""
