"""Benchmarks against named peers; `make bench` (python -m bench) runs them all."""
