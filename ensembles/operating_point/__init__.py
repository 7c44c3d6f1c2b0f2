"""The operating point: its schema (point) and the dual-level files and their one loader (levels)."""
