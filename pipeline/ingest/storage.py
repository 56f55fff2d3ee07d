"""Raw-alert archive: every packet stored byte for byte under a key derived from its candid.

Shaped like Django's ``contrib.sessions``: one small base class with fixed verbs
(:class:`ArchiveBackend`) and one backend per medium, chosen by a setting
(``ALERT_ARCHIVE_URL``) through :func:`get_archive`:

- :class:`LocalArchive` -- a folder; atomic writes (temporary file + ``os.replace``), files
  fanned out into hashed sub-folders so millions of alerts never share one directory;
- :class:`S3Archive` -- an S3 bucket (AWS, MinIO, Ceph, ...) through boto3; credentials come
  from the standard ``AWS_*`` environment variables / profiles, as boto3 reads them.

Keys are ``/``-separated relative names (``ztf/1234567890.avro``, ``lsst/<diaSourceId>.avro``):
:func:`alert_key` builds the key of a raw alert from its survey and id, :func:`quarantine_key` that
of a packet that could not be parsed.
No Django here: the Django side passes ``settings.ALERT_ARCHIVE_URL`` to :func:`get_archive`.
"""
import hashlib
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = [
    "ArchiveBackend",
    "ArchiveMissing",
    "LocalArchive",
    "S3Archive",
    "QUARANTINE_PREFIX_BYTES",
    "alert_key",
    "digest_stream",
    "get_archive",
    "quarantine_key",
]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class ArchiveMissing(KeyError):
    """No object is stored under this key (a ``KeyError``, so ``except KeyError`` works too)."""

    def __init__(self, key):
        super().__init__(key)
        self.key = key

    def __str__(self):
        return f"no archived object under key {self.key!r}"


def alert_key(candid, survey="ztf"):
    """Archive key of the raw Avro packet of alert ``candid`` of ``survey``: ``'<survey>/<candid>.avro'``."""
    if isinstance(candid, bool):
        raise TypeError("candid must be an integer, not a bool")
    value = int(candid)
    exact = value == candid or str(value) == str(candid).strip()
    if value < 0 or not exact:
        raise ValueError(f"not a valid candid: {candid!r}")
    return f"{survey}/{value}.avro"


def quarantine_key(digest):
    """Archive key of a quarantined packet: ``'quarantine/<sha256>.bin'``.

    ``digest`` is the hex SHA-256 of the raw bytes (``hashlib.sha256(raw).hexdigest()``), so the
    same bad packet quarantined twice lands on the same key.
    """
    digest = str(digest).lower()
    if not _SHA256_HEX.fullmatch(digest):
        raise ValueError(f"not a hex SHA-256 digest: {digest!r}")
    return f"quarantine/{digest}.bin"


def _check_key(key):
    """A key is a relative, ``/``-separated name with no empty, ``.`` or ``..`` parts."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"archive key must be a non-empty string, got {key!r}")
    parts = key.split("/")
    if "\\" in key or "\x00" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid archive key {key!r}")
    return key


class ArchiveBackend:
    """Base of every archive backend: stores opaque bytes under string keys.

    Subclasses implement ``save``, ``load``, ``exists``, ``delete`` and ``keys``;
    ``save_many`` has a sequential default that a backend may speed up.
    ``delete`` of an absent key is not an error (deleting is idempotent, like re-saving).
    """

    def save(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there."""
        raise NotImplementedError

    def load(self, key: str) -> bytes:
        """The bytes stored under ``key``; :class:`ArchiveMissing` when there are none."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is absent."""
        raise NotImplementedError

    def keys(self, prefix: str = ""):
        """Iterate over the stored keys starting with ``prefix``, in sorted order."""
        raise NotImplementedError

    def save_many(self, items) -> int:
        """Store every ``(key, data)`` pair of ``items``; return how many were stored."""
        n = 0
        for key, data in items:
            self.save(key, data)
            n += 1
        return n


class LocalArchive(ArchiveBackend):
    """Archive in a local folder.

    Key ``ztf/123.avro`` is stored as ``<root>/ztf/<h>/123.avro`` where ``h`` is the first three hex
    digits of the key's MD5: 4096 leaf folders per key folder, so ten million alerts stay a few
    thousand files per directory, and a night's ingest creates each folder once. Writes go to a hidden temporary file in the
    target folder and are renamed into place (``os.replace``): readers see the old object or the
    new one, never a partial file. ``fsync=True`` also flushes data to disk before the rename.
    """

    def __init__(self, root, fsync=False, max_workers=4):
        self.root = Path(root)
        self.fsync = fsync
        self.max_workers = max_workers
        self._folders = set()

    def __repr__(self):
        return f"LocalArchive({str(self.root)!r})"

    def path(self, key):
        """Where ``key`` lives on disk."""
        _check_key(key)
        head, _, name = key.rpartition("/")
        shard = hashlib.md5(key.encode("utf-8")).hexdigest()
        folder = self.root / head if head else self.root
        return folder / shard[:3] / name

    def save(self, key, data):
        data = bytes(data)
        target = self.path(key)
        if target.parent not in self._folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(target.parent)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def save_many(self, items):
        """Files are written by a few threads: the time goes to the file system, not Python."""
        from concurrent.futures import ThreadPoolExecutor

        items = list(items)
        if len(items) < 8 or self.max_workers <= 1:
            return super().save_many(items)
        with ThreadPoolExecutor(self.max_workers) as pool:
            list(pool.map(lambda item: self.save(*item), items))
        return len(items)

    def load(self, key):
        try:
            with open(self.path(key), "rb") as fh:
                return fh.read()
        except (FileNotFoundError, NotADirectoryError):
            raise ArchiveMissing(key) from None

    def exists(self, key):
        return self.path(key).is_file()

    def delete(self, key):
        try:
            self.path(key).unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass

    def keys(self, prefix=""):
        # Only the folder named by the prefix's directory part can hold matching keys.
        head = prefix.rpartition("/")[0]
        start = self.root / head if head else self.root
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).parts
            if len(rel) < 1:
                continue
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                key = "/".join(rel[:-1] + (name,))
                if key.startswith(prefix) and self.path(key) == Path(dirpath, name):
                    found.append(key)
        return iter(sorted(found))


class S3Archive(ArchiveBackend):
    """Archive in an S3 bucket, under ``prefix`` (keys become ``<prefix>/<key>``).

    ``client`` is a ready boto3 S3 client (tests, custom sessions); otherwise one is made from
    the standard AWS configuration plus ``endpoint_url`` (MinIO, a local S3 API) and ``region``.
    ``save_many`` uploads on ``max_workers`` threads (boto3 clients are thread-safe).
    """

    def __init__(self, bucket, prefix="", endpoint_url=None, region=None, client=None,
                 max_workers=8):
        if not bucket:
            raise ValueError("S3Archive needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.max_workers = max(1, int(max_workers))
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url or None,
                region_name=region or None,
                config=Config(max_pool_connections=max(10, self.max_workers),
                              retries={"max_attempts": 5, "mode": "standard"}),
            )
        self.client = client

    def __repr__(self):
        return f"S3Archive(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _object_key(self, key):
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @staticmethod
    def _is_missing(error):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in ("NoSuchKey", "404", "NotFound") or status == 404

    def save(self, key, data):
        self.client.put_object(Bucket=self.bucket, Key=self._object_key(key), Body=bytes(data))

    def load(self, key):
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as error:
            if self._is_missing(error):
                raise ArchiveMissing(key) from None
            raise
        with response["Body"] as body:
            return body.read()

    def exists(self, key):
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as error:
            if self._is_missing(error):
                return False
            raise
        return True

    def delete(self, key):
        self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))

    def keys(self, prefix=""):
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
            for entry in page.get("Contents", ()):
                yield entry["Key"][len(base):]

    def save_many(self, items):
        items = [(self._object_key(key), bytes(data)) for key, data in items]
        if len(items) <= 1 or self.max_workers == 1:
            for object_key, body in items:
                self.client.put_object(Bucket=self.bucket, Key=object_key, Body=body)
            return len(items)

        def put(item):
            self.client.put_object(Bucket=self.bucket, Key=item[0], Body=item[1])

        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(items))) as pool:
            # list() re-raises the first failed upload here.
            list(pool.map(put, items))
        return len(items)


def get_archive(url, **options) -> ArchiveBackend:
    """The archive backend named by ``url`` (the ``ALERT_ARCHIVE_URL`` setting).

    - ``s3://bucket/prefix`` -> :class:`S3Archive`; its endpoint is ``options['endpoint_url']``,
      else the environment's ``ALERT_ARCHIVE_S3_ENDPOINT``, else ``AWS_ENDPOINT_URL``, else AWS.
    - ``file:///path`` or a plain folder path -> :class:`LocalArchive`.

    Extra ``options`` go to the backend's constructor.
    """
    url = os.fspath(url)
    if not url:
        raise ValueError("empty archive URL")
    match = _URL_SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme == "s3":
        parts = urlsplit(url)
        if "endpoint_url" not in options and "client" not in options:
            options["endpoint_url"] = (os.environ.get("ALERT_ARCHIVE_S3_ENDPOINT")
                                       or os.environ.get("AWS_ENDPOINT_URL") or None)
        return S3Archive(parts.netloc, unquote(parts.path).strip("/"), **options)
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL with a remote host is not supported: {url!r}")
        return LocalArchive(unquote(parts.path), **options)
    if scheme:
        raise ValueError(f"unsupported archive URL scheme {scheme!r} in {url!r}")
    return LocalArchive(os.path.expanduser(url), **options)


#: Of rejected input, the quarantine keeps at most this many leading bytes, with the size and
#: SHA-256 of the whole: a bad 2 GB file costs 1 MiB of archive, not 2 GB.
QUARANTINE_PREFIX_BYTES = 2**20


def digest_stream(fileobj, keep=QUARANTINE_PREFIX_BYTES, chunk=2**20):
    """(first ``keep`` bytes, total size, hex SHA-256) of a stream read to its end in chunks."""
    digest = hashlib.sha256()
    prefix = bytearray()
    size = 0
    while True:
        block = fileobj.read(chunk)
        if not block:
            break
        digest.update(block)
        size += len(block)
        if len(prefix) < keep:
            prefix += block[: keep - len(prefix)]
    return bytes(prefix), size, digest.hexdigest()
