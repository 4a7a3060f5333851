"""Operator and developer scripts; the benchmarks are the :mod:`scripts.bench` package."""
