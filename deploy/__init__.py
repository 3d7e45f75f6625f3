"""Local infrastructure: a real Kafka broker and PostgreSQL server for tests and development."""
