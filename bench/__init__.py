"""Benchmarks: each measures one target from DESIGN.md on this machine and writes bench/results/<name>.json."""
