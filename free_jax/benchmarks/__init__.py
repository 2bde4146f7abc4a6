"""Benchmark suites run by ``experiments/benchmark.py``; each writes its own BENCHMARKS.md section."""
