"""The templates family's check logic that is more than a render and a comparison (the render,
agreement and prompt-token checks are short enough to live in harness/suite/test_templates.py)."""
