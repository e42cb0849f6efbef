"""Blocking device adapters (GNSS, OBD-II, GPIO) that emit the project's own samples."""
