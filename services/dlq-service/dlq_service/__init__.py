"""dlq-service: captures every dead letter and serves the admin API over them."""
