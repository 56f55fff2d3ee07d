"""The output stream: one Avro message per processed alert, to Redis Streams (default) or Kafka.

A message (schema ``pipeline/output/output_alert.avsc``) holds the alert's own detection (corrected
where the survey has a correction), the object's magstats, every stored class probability (stamp and
light-curve classifiers, each level its own classifier_name), the outlier score and the version of
every step and model behind them. It is written in Avro single-object encoding (magic C3 01, the
schema's 8-byte CRC-64-AVRO fingerprint, the binary record), so a reader can check it has the right
schema.

Exactly once: an alert is sent when it is in the raw-alert index and not yet in ``published_alert``
(the record of what this database sent; ``repair`` re-runs objects with alerts still pending there).
An alert is (survey, candid): a Rubin diaSourceId may equal a ZTF candid.
On Redis the dedup and the XADD run in one server-side script (``SET <stream>:sent:<deployment>:<survey>:<candid>
NX`` then ``XADD``), so a batch re-delivered after a worker died between sending and recording sends
nothing twice. The keys carry the deployment (``deployment_id``): another database on the same Redis
sends its own alerts. On Kafka the producer is idempotent, but a crash between the broker's acknowledgement and the
``published_alert`` write re-sends that chunk: at least once, consumers keep the first of a (survey, candid).

Backends are chosen by OUTPUT_STREAM_URL's scheme and share ``send(messages) -> candids sent`` and
``read(...)``; an empty URL turns publishing off.
"""
import datetime as dt
import io
import json
import math
import os
import signal
import uuid
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import fastavro
import fastavro.schema
from django.conf import settings

SCHEMA_PATH = Path(__file__).resolve().parent / "output_alert.avsc"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
PARSED_SCHEMA = fastavro.parse_schema(SCHEMA)
FINGERPRINT = bytes.fromhex(
    fastavro.schema.fingerprint(fastavro.schema.to_parsing_canonical_form(SCHEMA), "CRC-64-AVRO")
)
MAGIC = b"\xc3\x01"
CHUNK = int(os.environ.get("OUTPUT_STREAM_CHUNK", "100"))
#: Test hook: a worker that finds this variable set (to a marker path not yet present) kills itself
#: with SIGKILL right after sending its first chunk, before recording it: a worker killed mid-batch.
FAULT_KILL_AFTER_FIRST_CHUNK = "BROKER_FAULT_KILL_PUBLISH"


class StreamUnavailable(Exception):
    """The output stream cannot be reached (transient): the alerts stay pending and go out later."""


def encode(message: dict) -> bytes:
    buffer = io.BytesIO()
    buffer.write(MAGIC + FINGERPRINT)
    fastavro.schemaless_writer(buffer, PARSED_SCHEMA, message)
    return buffer.getvalue()


def decode(data: bytes) -> dict:
    if data[:2] != MAGIC:
        raise ValueError("not Avro single-object encoding (no C3 01 marker)")
    if data[2:10] != FINGERPRINT:
        raise ValueError(f"written with another schema (fingerprint {data[2:10].hex()}, ours {FINGERPRINT.hex()})")
    return fastavro.schemaless_reader(io.BytesIO(data[10:]), PARSED_SCHEMA, None)


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------
class OutputStream:
    """Where messages go. ``send`` returns the candids it really sent (not those sent before)."""

    name = ""

    def send(self, messages):
        raise NotImplementedError

    def read(self, from_start=False, block_ms=1000, count=None):
        """Yield (message id, decoded message) as they arrive, forever unless ``count`` is given or
        ``block_ms`` is 0 (then up to the end of what is there)."""
        raise NotImplementedError


_SEND_ONCE = """
local sent = {}
for i = 3, #ARGV, 4 do
  if redis.call('SET', KEYS[2] .. ARGV[i] .. ':' .. ARGV[i + 1], '1', 'NX', 'EX', ARGV[2]) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'candid', ARGV[i + 1], 'oid', ARGV[i + 2], 'avro', ARGV[i + 3])
    sent[#sent + 1] = ARGV[i + 1]
  end
end
return sent
"""


class RedisStream(OutputStream):
    """A Redis stream bounded to about ``maxlen`` entries (XADD MAXLEN ~), fields candid, oid, avro;
    ``broker:<deployment>:alerts`` unless the URL names it (``?stream=NAME``)."""

    def __init__(self, url, deployment=None):
        import redis

        parts = urlparse(url)
        query = parse_qs(parts.query)
        self.deployment = deployment or deployment_id()
        self.stream = query.get("stream", [f"broker:{self.deployment}:alerts"])[0]
        self.sent_prefix = f"{self.stream}:sent:{self.deployment}:"
        self.maxlen = int(query.get("maxlen", ["100000"])[0])
        self.client = redis.Redis.from_url(parts._replace(query="").geturl(), socket_timeout=10,
                                           socket_connect_timeout=5)
        self.script = self.client.register_script(_SEND_ONCE)
        self.name = f"redis://{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}/{self.stream}"
        self.dedup_seconds = int(settings.OUTPUT_STREAM_DEDUP_DAYS * 86400)

    def send(self, messages):
        import redis

        args = [self.maxlen, self.dedup_seconds]
        for message in messages:
            args += [message["survey"], message["candid"], message["oid"], encode(message)]
        try:
            return [int(c) for c in self.script(keys=[self.stream, self.sent_prefix], args=args)]
        except redis.ConnectionError as exc:
            raise StreamUnavailable(f"{self.name}: {exc}") from exc

    def read(self, from_start=False, block_ms=1000, count=None):
        last, seen = ("0-0" if from_start else "$"), 0
        while count is None or seen < count:
            reply = self.client.xread({self.stream: last}, count=100, block=block_ms or None)
            if not reply:
                if not block_ms:  # not following: the stream is read to its end
                    return
                continue
            for entry_id, fields in reply[0][1]:
                last = entry_id
                seen += 1
                yield entry_id.decode(), decode(fields[b"avro"])
                if count is not None and seen >= count:
                    return


class KafkaStream(OutputStream):
    """A Kafka topic; key oid, value the Avro message (idempotent producer, acks=all)."""

    def __init__(self, url):
        parts = urlparse(url)
        self.bootstrap = parts.netloc
        self.topic = parts.path.strip("/") or "broker-alerts"
        self.name = f"kafka://{self.bootstrap}/{self.topic}"
        self._producer = None

    def producer(self):
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                                       "acks": "all", "message.timeout.ms": 30000})
        return self._producer

    def send(self, messages):
        failures = []

        def delivered(err, _msg):
            if err is not None:
                failures.append(err)

        producer = self.producer()
        for message in messages:
            producer.produce(self.topic, key=message["oid"].encode(), value=encode(message), on_delivery=delivered)
            producer.poll(0)
        left = producer.flush(40)
        if failures or left:
            raise StreamUnavailable(f"{self.name}: {left} undelivered, errors: {failures[:3]}")
        return [m["candid"] for m in messages]

    def read(self, from_start=False, block_ms=1000, count=None, group=None):
        import uuid

        from confluent_kafka import Consumer

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group or f"listen-{uuid.uuid4().hex[:8]}",
                             "auto.offset.reset": "earliest" if from_start else "latest",
                             "enable.auto.commit": False, "session.timeout.ms": 10000})
        consumer.subscribe([self.topic])
        seen = idle = 0
        try:
            while count is None or seen < count:
                msg = consumer.poll((block_ms or 500) / 1000)
                if msg is None or msg.error():
                    idle += 1
                    if not block_ms and idle >= 20:  # not following: 10 s of nothing is the end
                        return
                    continue
                idle = 0
                seen += 1
                yield f"{msg.partition()}:{msg.offset()}", decode(msg.value())
        finally:
            consumer.close()


def deployment_id():
    """BROKER_DEPLOYMENT_ID, else this database's own random id (made on first use, kept in the database)."""
    if settings.BROKER_DEPLOYMENT_ID:
        return settings.BROKER_DEPLOYMENT_ID
    from pipeline.models import Deployment
    from pipeline.store import db

    key = Deployment.objects.filter(id=1).values_list("key", flat=True).first()
    if key is None:  # two processes may race here: the first insert wins, both read it back
        db.insert_ignore(Deployment, [dict(id=1, key=uuid.uuid4().hex[:12], created=db.now_param())])
        key = Deployment.objects.get(id=1).key
    return key


def output_stream(url=None):
    """The backend of ``url`` (default OUTPUT_STREAM_URL) for this deployment; None when publishing is off."""
    url = settings.OUTPUT_STREAM_URL if url is None else url
    return _backend(url, deployment_id() if url else "")


@lru_cache(maxsize=4)
def _backend(url, deployment):
    if not url:
        return None
    scheme = urlparse(url).scheme
    if scheme in ("redis", "rediss"):
        return RedisStream(url, deployment)
    if scheme == "kafka":
        return KafkaStream(url)
    raise ValueError(f"OUTPUT_STREAM_URL {url!r}: scheme must be redis://, rediss:// or kafka://")


output_stream.cache_clear = _backend.cache_clear


# --------------------------------------------------------------------------------------------
# Messages from the database
# --------------------------------------------------------------------------------------------
DETECTION_FIELDS = [f["name"] for f in SCHEMA["fields"][6]["type"]["fields"]]
MAGSTAT_FIELDS = [f["name"] for f in SCHEMA["fields"][7]["type"]["items"]["fields"]]


def _plain(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def pending(oids):
    """(candid, survey) of the ingested alerts of ``oids`` that the output stream has not had yet."""
    from pipeline.models import PublishedAlert, RawAlert

    alerts = list(RawAlert.objects.filter(oid__in=list(oids)).order_by("candid", "survey")
                  .values_list("candid", "survey"))
    done = set(PublishedAlert.objects.filter(candid__in=[c for c, _ in alerts]).values_list("candid", "survey"))
    return [key for key in alerts if key not in done]


def build_messages(keys, batch_id):
    """One output message per alert (candid, survey) (the alert's own detection must be stored)."""
    from pipeline.models import Detection, MagStats, Object, ObjectFeatureState, OutlierScore, Probability

    keys = list(keys)
    detections = {(d["candid"], d["survey"]): d for d in Detection.objects.filter(candid__in=[c for c, _ in keys])
                  .values("candid", "oid", "survey", *DETECTION_FIELDS)}
    oids = {d["oid"] for d in detections.values()}
    magstats, probabilities, outliers, models = {}, {}, {}, {oid: {} for oid in oids}
    for row in MagStats.objects.filter(oid__in=oids).order_by("oid", "fid").values("oid", *MAGSTAT_FIELDS):
        magstats.setdefault(row.pop("oid"), []).append({k: _plain(v) for k, v in row.items()})
    for row in Probability.objects.filter(oid__in=oids).order_by("oid", "classifier_name", "ranking").values(
            "oid", "classifier_name", "classifier_version", "class_name", "probability", "ranking"):
        oid = row.pop("oid")
        probabilities.setdefault(oid, []).append(row)
        models[oid][row["classifier_name"]] = row["classifier_version"]
    for row in OutlierScore.objects.filter(oid__in=oids).order_by("oid", "id").values(
            "oid", "version", "branch", "score", "is_outlier"):
        outliers[row.pop("oid")] = row  # the newest row of an object wins
    for oid, version in Object.objects.filter(oid__in=oids).exclude(step_id_corr="").values_list("oid", "step_id_corr"):
        models[oid]["correction"] = version
    for oid, version in ObjectFeatureState.objects.filter(oid__in=oids).values_list("oid", "version"):
        models[oid]["features"] = version
    for oid, row in outliers.items():
        models[oid]["outliers"] = row["version"]
    now = dt.datetime.now(dt.timezone.utc)
    messages = []
    for key in keys:
        det = detections.get(key)
        if det is None:
            continue
        candid = key[0]
        oid = det["oid"]
        messages.append({
            "schema_version": "1.0", "oid": oid, "candid": candid, "survey": det["survey"], "batch_id": batch_id,
            "published_ms": now,
            "detection": {k: _plain(det[k]) for k in DETECTION_FIELDS},
            "magstats": magstats.get(oid, []),
            "probabilities": probabilities.get(oid, []),
            "outlier": outliers.get(oid),
            "models": models[oid],
        })
    return messages


def _fault_point():
    marker = os.environ.get(FAULT_KILL_AFTER_FIRST_CHUNK)
    if marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def publish(oids, batch_id, stream=None):
    """Send every pending alert of ``oids``; returns how many went out now. Idempotent."""
    from pipeline.models import PublishedAlert
    from pipeline.store import db

    stream = stream or output_stream()
    if stream is None:
        return 0
    todo = pending(oids)
    sent_total = 0
    for start in range(0, len(todo), CHUNK):
        messages = build_messages(todo[start:start + CHUNK], batch_id)
        if not messages:
            continue
        sent = set(stream.send(messages))
        sent_total += len(sent)
        _fault_point()
        now = db.now_param()
        db.insert_ignore(PublishedAlert, [
            dict(candid=m["candid"], survey=m["survey"], oid=m["oid"], stream=stream.name[:255], batch_id=batch_id,
                 published=now)
            for m in messages
        ])
    return sent_total


def describe(message) -> str:
    """One line for a person: what, where, how bright, what it probably is."""
    det = message["detection"]
    from pipeline.models import BANDS

    band = dict(BANDS).get(det["fid"], str(det["fid"]))
    mag = det["magpsf_corr"] if det.get("magpsf_corr") is not None else det["magpsf"]
    err = det["sigmapsf_corr"] if det.get("magpsf_corr") is not None else det["sigmapsf"]
    brightness = f"{mag:6.2f} ± {err:4.2f}" if mag is not None and err is not None else "  no magnitude"
    sign = "+" if det["isdiffpos"] > 0 else "-"
    best = {}
    for p in message["probabilities"]:
        if p["ranking"] == 1:
            best[p["classifier_name"]] = f"{p['class_name']} {p['probability']:.2f}"
    classes = ", ".join(f"{name}: {text}" for name, text in sorted(best.items())) or "not classified"
    outlier = message["outlier"]
    odd = f" | outlier score {outlier['score']:.3f}{' (OUTLIER)' if outlier['is_outlier'] else ''}" if outlier else ""
    return (f"{message['survey'].upper():4} {message['oid']:<20} {message['candid']:>20}  MJD {det['mjd']:.5f}"
            f"  {band:<6} {sign}{brightness}  ra {det['ra']:9.5f} dec {det['dec']:+9.5f} | {classes}{odd}")
