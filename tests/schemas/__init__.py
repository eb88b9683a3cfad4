"""Schemas of the custom resources the program renders (no API server in tests: we
validate the rendered objects against the upstream API types ourselves)."""
