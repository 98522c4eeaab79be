"""End-to-end applications built on the public API."""
