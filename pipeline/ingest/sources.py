"""Where raw packets come from: .avro files, folders of them, and nightly .tar.gz archives.

The public ZTF alert archive publishes one ``ztf_public_YYYYMMDD.tar.gz`` per night holding one
``<candid>.avro`` per alert. Everything here yields ``Packet`` (source name + raw bytes) lazily, so a
night of hundreds of thousands of alerts streams through without being held in memory: archives are
read as a stream, member by member, and no file or member larger than ``Limits.max_packet_bytes``
is read into memory (only a bounded prefix and its digest, for the quarantine).

What cannot be read is yielded too, never dropped unseen: ``SourceProblem`` (quarantined: unreadable
files, named pipes, oversized members, broken archives), ``Skipped`` (reported: symbolic links that
are not followed) and ``Missing`` (a path that does not exist: the run reports it and fails).
"""
import logging
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.ingest.storage import QUARANTINE_PREFIX_BYTES, digest_stream

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
ALERT_SUFFIXES = (".avro",) + ARCHIVE_SUFFIXES


@dataclass(frozen=True)
class Limits:
    """Bounds on what one input may cost. A real ZTF packet is under a few hundred KB and a public
    night archive under ~100 GB expanded; these sit well above both."""

    max_packet_bytes: int = 8 * 2**20  # one file or archive member
    max_night_bytes: int = 512 * 2**30  # all members of one archive, expanded
    max_batch_bytes: int = 64 * 2**20  # what one batch holds in memory


@dataclass(frozen=True)
class Packet:
    source: str
    data: bytes


@dataclass(frozen=True)
class SourceProblem:
    """A path that yielded no packet, or an archive that broke off: quarantined, never silent.

    ``data`` is what was read (at most a bounded prefix when ``size``/``sha256`` describe the whole).
    """

    source: str
    reason: str
    data: bytes = b""
    size: "int | None" = None
    sha256: "str | None" = None


@dataclass(frozen=True)
class Skipped:
    """Something deliberately not read (a symbolic link in a folder): reported in the summary."""

    source: str
    reason: str


@dataclass(frozen=True)
class Missing:
    """A path given to ingest that does not exist: reported, and the run fails."""

    source: str
    reason: str = "no such file or folder"


def is_archive(path) -> bool:
    return str(path).endswith(ARCHIVE_SUFFIXES)


def _looks_like_input(name) -> bool:
    return name.endswith(ALERT_SUFFIXES)


_KINDS = (
    (stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder"),
)


def _kind(mode):
    return next((name for test, name in _KINDS if test(mode)), "special file")


def _oversized(source, fh, what, limits):
    prefix, size, digest = digest_stream(fh, keep=QUARANTINE_PREFIX_BYTES)
    return SourceProblem(
        source, f"{what} of {size} bytes exceeds the {limits.max_packet_bytes}-byte limit for one packet",
        prefix, size, digest,
    )


def _archive_packets(source, fh, limits):
    total = found = 0
    try:
        with tarfile.open(fileobj=fh, mode="r|*") as tar:
            for member in tar:
                name = f"{source}:{member.name}"
                if member.isdir():
                    continue
                if not member.isfile():
                    kind = "link" if member.issym() or member.islnk() else "special file"
                    yield Skipped(name, f"archive member is a {kind}: not followed")
                    continue
                if total + member.size > limits.max_night_bytes:
                    yield SourceProblem(
                        source,
                        f"archive expands to more than {limits.max_night_bytes} bytes: stopped before member "
                        f"{member.name!r} after {found} alerts; the rest is not read",
                    )
                    return
                total += member.size
                handle = tar.extractfile(member)
                if member.size > limits.max_packet_bytes:
                    yield _oversized(name, handle, "archive member", limits)
                    continue
                data = handle.read()
                if not member.name.endswith(".avro"):
                    yield SourceProblem(name, "archive member is not an .avro file", data)
                    continue
                found += 1
                yield Packet(name, data)
            if not found:
                yield SourceProblem(source, "archive holds no .avro alert")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        yield SourceProblem(source, f"archive is truncated or corrupt: {exc}")


def _read_path(path, limits):
    """Packet/SourceProblem items of one file or archive; never blocks on a pipe, never reads past the limits."""
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        yield SourceProblem(source, f"cannot read the file: {exc.strerror or exc}")
        return
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd)
        if not stat.S_ISREG(mode.st_mode):
            yield SourceProblem(source, f"not a regular file ({_kind(mode.st_mode)}): not read")
            return
        try:
            if is_archive(path):
                yield from _archive_packets(source, fh, limits)
                return
            if mode.st_size > limits.max_packet_bytes:
                yield _oversized(source, fh, "file", limits)
                return
            data = fh.read(limits.max_packet_bytes + 1)
            if len(data) > limits.max_packet_bytes:  # it grew since fstat
                fh.seek(0)
                yield _oversized(source, fh, "file", limits)
                return
        except OSError as exc:
            yield SourceProblem(source, f"cannot read the file: {exc.strerror or exc}")
            return
    yield Packet(source, data)


def _folder_entries(root):
    """(sorted paths to read, items to report) of a folder; symbolic links to folders are not followed."""
    paths, report = [], []

    def unreadable(exc):
        report.append(SourceProblem(str(exc.filename or root), f"cannot read the folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        for name in list(dirnames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                report.append(Skipped(full, "symbolic link to a folder: not followed"))
        for name in filenames:
            full = os.path.join(dirpath, name)
            try:
                mode = os.lstat(full).st_mode
            except OSError as exc:
                report.append(SourceProblem(full, f"cannot read the file: {exc.strerror or exc}"))
                continue
            if stat.S_ISLNK(mode):
                try:
                    target = os.stat(full).st_mode
                except OSError:
                    report.append(Skipped(full, "dangling symbolic link"))
                    continue
                if not stat.S_ISREG(target):
                    report.append(Skipped(full, f"symbolic link to a {_kind(target)}: not followed"))
                    continue
            if _looks_like_input(name):
                paths.append(full)
            elif not stat.S_ISREG(mode) and not stat.S_ISLNK(mode):
                report.append(Skipped(full, f"{_kind(mode)}: not read"))
    return sorted(paths), report


def iter_packets(paths, limits=Limits()):
    """Yield Packet, SourceProblem, Skipped or Missing for every input under ``paths`` (files, folders, archives)."""
    for raw in paths:
        path = Path(raw)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            yield Missing(str(path), "dangling symbolic link" if os.path.islink(path) else "no such file or folder")
            continue
        except OSError as exc:
            yield SourceProblem(str(path), f"cannot read: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(mode):
            files, report = _folder_entries(path)
            yield from report
            if not files:
                yield SourceProblem(str(path), "folder holds no .avro file or alert archive")
            for file in files:
                yield from _read_path(file, limits)
        else:
            yield from _read_path(path, limits)


def _size(item):
    return len(getattr(item, "data", b""))


def batched(items, size, max_bytes=Limits.max_batch_bytes):
    """Lists of at most ``size`` items holding at most about ``max_bytes`` of packet bytes."""
    batch, held = [], 0
    for item in items:
        batch.append(item)
        held += _size(item)
        if len(batch) >= size or held >= max_bytes:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch
