"""A board farm on labgrid: places acquired through labgrid's coordinator (place.py), and emulated
boards exported to it (exporter.py). Needs the `farm` extra (labgrid)."""
