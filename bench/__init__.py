"""Benchmarks (``switchyard bench``): numbers measured against a same-run baseline."""

__all__: list[str] = []
