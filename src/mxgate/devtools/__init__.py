"""Tools for demos, tests and benchmarks that run whole mail flows on one machine (loopback only)."""
