"""Load tests and benchmarks: ``python -m loadtests.bench MODE`` and ``locustfile.py`` (docs/performance.md)."""
