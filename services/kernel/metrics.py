"""Prometheus metrics of a worker process: the kernel's counters and what the watcher samples.

Every metric is documented in the README (section "Watching a worker") with its labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "packages_messages_total",
    "Inbound messages by how they ended (applied, duplicate, rejected, ignored, deferred,"
    " dead_lettered)",
    ["service", "topic", "outcome"],
)
DEAD_LETTERS = Counter(
    "packages_dead_letters_total", "Messages parked in a .dlq topic", ["service", "topic", "code"]
)
RETRIES = Counter(
    "packages_retries_total", "Batches retried after a transient failure", ["service"]
)
PUBLISHED = Counter("packages_outbox_published_total", "Outbound events published", ["service"])
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_SECONDS = Histogram(
    "packages_batch_seconds",
    "Time to handle one fetched batch, from its decoding to its poison parked",
    ["service"],
    buckets=SECONDS,
)
TRANSACTION_SECONDS = Histogram(
    "packages_batch_transaction_seconds",
    "Time of one batch transaction (inbox, handler, outcomes, outbox, commit)",
    ["service"],
    buckets=SECONDS,
)
BATCH_SIZE = Histogram(
    "packages_batch_size",
    "Records in one fetched batch",
    ["service"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
LAG = Gauge(
    "packages_consumer_lag",
    "Messages of a partition the service's consumer group has not committed yet"
    " (end offset - committed offset)",
    ["service", "topic", "partition"],
)
LAG_SAMPLED = Gauge(
    "packages_consumer_lag_sampled_timestamp_seconds",
    "When packages_consumer_lag was last refreshed (Unix time)",
    ["service"],
)
OUTBOX_UNSENT = Gauge("packages_outbox_unsent", "Outbox rows not yet published", ["service"])
OUTBOX_OLDEST_UNSENT = Gauge(
    "packages_outbox_oldest_unsent_age_seconds",
    "Age of the oldest outbox row not yet published; 0 when none waits",
    ["service"],
)
RELAY_HOLDER = Gauge(
    "packages_relay_holder",
    "1 while this process's relay holds the service's outbox lock (publishes), else 0",
    ["service"],
)
EARLY_EVENTS = Gauge(
    "packages_early_events_waiting",
    "Events kept until what they depend on arrives (a plan, a package)",
    ["service"],
)
TABLE_BYTES = Gauge(
    "packages_table_bytes",
    "On-disk size of the service's inbox and outbox, indexes included",
    ["service", "table"],
)
PRUNED = Counter(
    "packages_pruned_rows_total",
    "Rows deleted past their retention (sent outbox rows, inbox rows)",
    ["service", "table"],
)
READY = Gauge(
    "packages_ready",
    "1 while every readiness check passes (PostgreSQL, consumer group, relay), else 0",
    ["service"],
)


def declare(service: str) -> None:
    """Give each of a service's own series a first value, so that they are served from the start
    (a rule on `rate()` or `absent()` then sees them before their first event)."""
    for labelled in (RETRIES, PUBLISHED, BATCH_SECONDS, TRANSACTION_SECONDS, BATCH_SIZE):
        labelled.labels(service)
    RELAY_HOLDER.labels(service).set(0)
    READY.labels(service).set(0)
    for table in ("inbox", "outbox"):
        PRUNED.labels(service, table)
