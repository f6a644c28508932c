"""Starting Kafka and Redis locally for tests and the demo."""
