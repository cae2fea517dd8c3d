"""Hostile-template family: untrusted chat templates through every renderer."""
