"""ingest-gateway: the HTTP edge where leads, approvals, reports and exports enter the platform."""
