"""Live ingestion from a survey's Kafka stream (ZTF's nightly topics, Rubin's alert stream).

The consumer reads a batch, stores and archives it with ``ingest_batch`` (the same code as file
ingestion), launches its canvas, and only then commits the batch's offsets: a crash before the
commit replays the batch, and idempotent ingestion makes the replay harmless. SIGTERM/SIGINT end the
run after the batch in hand (stored and committed). librdkafka reconnects by itself when the broker
goes away; broker errors are logged and the loop goes on, so a broker restart costs a pause, not the
process. A live rate (alerts/s) is shown on stderr.
"""
import logging
import signal
import sys
import threading
import time

from tqdm import tqdm

from pipeline.backends import archive
from pipeline.ingest.batch import IngestSummary, ingest_batch
from pipeline.ingest.sources import Packet, SourceProblem
from pipeline.workflow import batches

log = logging.getLogger(__name__)


def consumer_config(bootstrap, group, **overrides):
    """librdkafka settings: manual commits, start at the earliest offset of a new group."""
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 2000,
        "max.poll.interval.ms": 900000,  # a batch's ingest + canvas launch may take minutes
        "reconnect.backoff.max.ms": 5000,
        "fetch.message.max.bytes": 8 * 1024 * 1024,  # ZTF packets with cutouts are ~100 kB
    }
    config.update(overrides)
    return config


def packets_of(messages):
    """Kafka messages -> Packet (or SourceProblem for an empty one), named topic[partition]@offset."""
    items = []
    for msg in messages:
        source = f"kafka:{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        value = msg.value()
        items.append(Packet(source, value) if value else SourceProblem(source, "empty Kafka message (no value)"))
    return items


class KafkaIngest:
    """Consume ``topics`` as consumer group ``group`` until stopped (or idle for ``stop_when_idle`` s)."""

    def __init__(self, bootstrap, topics, group, batch_size=300, batch_timeout=5.0, pipeline=True, progress=True,
                 stop_when_idle=None, max_alerts=None, consumer=None, **config):
        self.topics = list(topics)
        self.batch_size, self.batch_timeout = batch_size, batch_timeout
        self.pipeline, self.progress = pipeline, progress
        self.stop_when_idle, self.max_alerts = stop_when_idle, max_alerts
        self._config = consumer_config(bootstrap, group, error_cb=self._broker_error, **config)
        self._consumer = consumer
        self.stopping = False
        self.summary = IngestSummary()
        self.broker_errors = 0

    def _broker_error(self, err):
        self.broker_errors += 1
        log.warning("Kafka: %s (librdkafka retries by itself)", err)

    def stop(self, *_):
        self.stopping = True

    def consumer(self):
        if self._consumer is None:
            from confluent_kafka import Consumer

            self._consumer = Consumer(self._config)
        return self._consumer

    def run(self):
        consumer = self.consumer()
        consumer.subscribe(self.topics)
        previous = {}
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        bar = tqdm(desc="alerts", unit="alert", disable=not self.progress, file=sys.stderr, smoothing=0.1)
        idle_since = time.monotonic()
        try:
            while not self.stopping:
                messages = consumer.consume(num_messages=self.batch_size, timeout=self.batch_timeout)
                good = [m for m in messages if not m.error()]
                for m in messages:
                    if m.error():
                        self._broker_error(m.error())
                if not good:
                    if self.stop_when_idle is not None and time.monotonic() - idle_since > self.stop_when_idle:
                        break
                    continue
                self._ingest(good)
                self._commit(consumer)
                idle_since = time.monotonic()
                bar.update(len(good))
                if self.max_alerts is not None and self.summary.alerts_read >= self.max_alerts:
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            bar.close()
            consumer.close()
        return self.summary

    def _ingest(self, messages):
        result = ingest_batch(packets_of(messages), archive())
        self.summary.add(result.summary)
        self.summary.batch_ids.append(result.batch_id)
        if self.pipeline:
            try:
                batches.launch(result.batch_id, result.oids, result.new_oids)
            except Exception as exc:  # the alerts are stored: a failed step must not stop the stream
                log.exception("pipeline failed for batch %s", result.batch_id)
                self.summary.step_failures.append(f"batch {result.batch_id}: {exc!r}")

    def _commit(self, consumer):
        """Commit the offsets after the stored batch. If the broker is away the commit is retried with
        the next batch; a crash before then only replays alerts that are already stored."""
        from confluent_kafka import KafkaException

        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            self._broker_error(exc)
