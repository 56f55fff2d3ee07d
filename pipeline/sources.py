"""Where raw packets come from: .avro files, folders of them, and nightly .tar.gz archives.

The public ZTF alert archive publishes one ``ztf_public_YYYYMMDD.tar.gz`` per night holding one
``<candid>.avro`` per alert. Everything here yields ``Packet`` (source name + raw bytes) lazily, so a
night of hundreds of thousands of alerts streams through without being held in memory.
"""
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True)
class Packet:
    source: str
    data: bytes


@dataclass(frozen=True)
class SourceProblem:
    """A path that yielded no packet, or an archive that broke off: reported, never silent."""

    source: str
    reason: str
    data: bytes = b""


def is_archive(path: Path) -> bool:
    return path.name.endswith(ARCHIVE_SUFFIXES)


def _archive_packets(path: Path):
    try:
        with tarfile.open(path, mode="r:*") as tar:
            found = 0
            for member in tar:
                if not member.isfile():
                    continue
                source = f"{path}:{member.name}"
                if not member.name.endswith(".avro"):
                    handle = tar.extractfile(member)
                    yield SourceProblem(source, "archive member is not an .avro file", handle.read() if handle else b"")
                    continue
                handle = tar.extractfile(member)
                found += 1
                yield Packet(source, handle.read())
            if not found:
                yield SourceProblem(str(path), "archive holds no .avro alert")
    except (tarfile.TarError, EOFError, OSError) as exc:
        yield SourceProblem(str(path), f"archive is truncated or corrupt: {exc}")


def iter_packets(paths):
    """Yield Packet or SourceProblem for every alert under ``paths`` (files, folders, archives)."""
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            yield SourceProblem(str(path), "no such file or folder")
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and (p.suffix == ".avro" or is_archive(p)))
            if not files:
                yield SourceProblem(str(path), "folder holds no .avro file or alert archive")
            for file in files:
                yield from iter_packets([file])
        elif is_archive(path):
            yield from _archive_packets(path)
        else:
            yield Packet(str(path), path.read_bytes())


def batched(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
