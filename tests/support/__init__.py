"""Helpers the tests share: events, a Kafka reader and writer, service processes."""
