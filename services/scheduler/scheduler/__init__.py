"""scheduler: runs the platform's cron jobs, once per slot whatever the number of replicas."""
