"""email-worker: renders and sends email jobs through SMTP."""
