"""The limit: a raw aiokafka consume → produce pass-through with no database.

`python -m bench.limit`. It reads the booking topics in batches (getmany), produces one small
outcome per input to `bench.passthrough`, and commits the offsets once the broker has
acknowledged them: the least any correct consumer must do. It fetches, produces and runs on
the same loop and settings as ours, so the gap between the two is the database work.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.workload import INBOUND_TOPICS
from services.kernel.settings import Settings

OUTPUT = "bench.passthrough"
GROUP = "bench-limit"


async def pass_through(settings: Settings, stop: asyncio.Event) -> None:
    """Pass every inbound event through until `stop` is set."""
    options = settings.kafka_options()
    consumer = AIOKafkaConsumer(
        *INBOUND_TOPICS,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=2 * 1024 * 1024,
        **options,
    )
    # The producer settings of ours's outbox relay.
    producer = AIOKafkaProducer(
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        max_batch_size=512 * 1024,
        max_request_size=2 * 1024 * 1024,
        **options,
    )
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(
                timeout_ms=settings.batch_timeout_ms, max_records=settings.batch_max_records
            )
            if not batches:
                continue
            sent = []
            offsets: dict[TopicPartition, int] = {}
            for tp, records in batches.items():
                for r in records:
                    cause = orjson.loads(r.value or b"{}").get("event_id")
                    out = orjson.dumps({"event_id": str(uuid.uuid4()), "causation_id": cause})
                    sent.append(await producer.send(OUTPUT, out, key=r.key))
                offsets[tp] = records[-1].offset + 1
            await asyncio.gather(*sent)
            await consumer.commit(offsets)
    finally:
        await consumer.stop()
        await producer.stop()


async def _main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await pass_through(Settings(), stop)


def main() -> None:
    """Run on uvloop where installed, as `faststream run` does."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the project
        asyncio.run(_main())
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_main())


if __name__ == "__main__":
    main()
