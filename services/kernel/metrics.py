"""Prometheus metrics of the kernel."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES = Counter(
    "packages_messages_total", "Inbound messages by how they ended", ["service", "topic", "outcome"]
)
DEAD_LETTERS = Counter(
    "packages_dead_letters_total", "Messages parked in a .dlq topic", ["service", "topic", "code"]
)
RETRIES = Counter(
    "packages_retries_total", "Batches retried after a transient failure", ["service"]
)
PUBLISHED = Counter("packages_outbox_published_total", "Outbound events published", ["service"])
BATCH_SECONDS = Histogram(
    "packages_batch_seconds",
    "Time to apply one fetched batch, commit included",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
