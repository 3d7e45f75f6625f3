"""The fault-injection suite: the invariants hold while processes, broker and database fail."""
