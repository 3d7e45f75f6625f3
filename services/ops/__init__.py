"""Operator tools: replay dead letters, trace a message's fate, reset a consumer group."""
