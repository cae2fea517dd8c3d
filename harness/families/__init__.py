"""Check families: item expansion and check logic per family (the registry: harness.families.registry)."""
