"""A minimal Faust app for the foundation test, run as ``python _faust_app.py <args> worker``.

It counts records per key in a changelog-backed table and emits ``<count>:<payload>``
for each record, so the test can tell a recovered count from a replayed record.
Usage: ``_faust_app.py BOOTSTRAP APP_ID SOURCE_TOPIC OUTPUT_TOPIC worker -l info``.
"""

from __future__ import annotations

import sys

import faust

BOOTSTRAP, APP_ID, SOURCE, OUTPUT = sys.argv[1:5]
del sys.argv[1:5]  # leave faust's own command line

app = faust.App(
    APP_ID,
    broker=f"kafka://{BOOTSTRAP}",
    store="memory://",  # nothing on disk: after a restart the table can only come from its changelog
    topic_partitions=3,
    topic_replication_factor=1,
    stream_wait_empty=False,
    table_standby_replicas=0,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    broker_commit_every=1,
    broker_commit_interval=0.2,
    producer_acks=-1,
)
source = app.topic(SOURCE, key_serializer="raw", value_serializer="raw", partitions=3)
output = app.topic(OUTPUT, key_serializer="raw", value_serializer="raw")
counts = app.Table("counts", default=int, partitions=3, key_type=bytes, value_type=int)


@app.agent(source)
async def count(stream):  # type: ignore[no-untyped-def]
    async for key, payload in stream.items():
        counts[key] += 1
        await output.send(key=key, value=f"{counts[key]}:{payload.decode()}".encode())


if __name__ == "__main__":
    app.main()
