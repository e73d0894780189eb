"""Data sets: seeded synthetic generators and readers of the standard files."""
