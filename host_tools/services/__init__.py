"""Real servers the platform runs on, started from Debian's packages for tests, benchmarks and
the demo: each private to its caller (its own ports, data directory and processes), each
stopped with everything it started."""

from host_tools.services._proc import ServiceError, free_port

__all__ = ["ServiceError", "free_port"]
