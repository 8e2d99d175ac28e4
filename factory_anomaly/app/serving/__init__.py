"""Running requests: the inference pool, the micro-batcher and the service object the routes call."""
