"""What happened after deployment: the serving log, feedback, online metrics, drift."""
