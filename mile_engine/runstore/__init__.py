"""A run folder on disk: its file names, saves, manifest, locks, records and requests."""
