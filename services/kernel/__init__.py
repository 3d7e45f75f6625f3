"""The one message-handling kernel every consumer runs on."""
