"""What operators and ops see: Prometheus metrics, the request middleware, structured logs."""
