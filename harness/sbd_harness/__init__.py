"""Host-side harness for the security-by-design reference firmware."""

__version__ = "0.1.0"
