"""Peer implementations (FinRL 0.3.7 code loaded by file path) for parity tests and benchmarks."""
