"""Benchmarks: each measures one target of the README's results table on this machine and
writes bench/results/<name>.json."""
