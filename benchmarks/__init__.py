"""Performance benchmarks: each module has `run(quick: bool) -> dict` (JSON-able) and prints a table."""
