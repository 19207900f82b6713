"""export-worker: writes CSV report exports."""
