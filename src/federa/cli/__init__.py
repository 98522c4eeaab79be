"""The `federa` command line: parses flags and TOML into dataclasses and calls the public API."""
