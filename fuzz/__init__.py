"""Seeded mutation fuzzers for the callback path and the compliance linter (see README.md)."""
