"""Archive segments on disk: gzip JSONL of the stored rows, and the manifest beside them.

A segment holds the rows of one contiguous range of global positions exactly as
the live log stored them: one JSON array per line, the columns of
`storage.model.Event` in order (`pos, run_id, seq, type, step, message, pct,
data, attempt, at, hash`), so every value the hash chain covers is there and
the chain can be recomputed from the manifest's `prev_hash` without the
database. gzip (the standard library, readable with `zcat` anywhere) rather
than zstd: no dependency is needed to read an archive years on. Level 1: on
the benchmark's rows it compresses about three times as fast as level 6 for
segments about 12% larger (5.3 against 4.7 MB per 100,000 events), and
compression was the largest single cost of archiving.
The gzip header carries no time (`mtime=0`), so the same rows always give the
same bytes: rewriting a segment after a crash gives the file it replaces.

Files are written so that a crash at any moment leaves either no file or a
complete one: a temporary file created exclusively (never following a link),
fsync'd, renamed into place, then the directory fsync'd. The manifest is
written the same way, after the segment it describes.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import secrets
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.errors import SteplogError

if TYPE_CHECKING:
    from storage.archive.chunk import Chunk

FORMAT = "steplog.segment.v1"
SEGMENT_RE = re.compile(r"^segment-(\d{12})-(\d{12})\.jsonl\.gz$")
TEMP_PREFIX = ".tmp-"

COMPRESS_LEVEL = 1
"""gzip level (see the module's docstring for why 1)."""

WRITE_LINES = 5000
"""Lines joined per write into the compressor."""

Row = tuple[Any, ...]
"""One stored event row: (pos, run_id, seq, type, step, message, pct, data, attempt, at, hash)."""


class ArchiveError(SteplogError):
    """Archiving or reading an archive could not be done; nothing was removed."""


class ArchiveNotAllowed(ArchiveError):
    """The database role may not archive (PostgreSQL: no DELETE on events): a matter of
    configuration, not a passing failure, so retention says it once rather than hourly."""


def segment_name(first_pos: int, last_pos: int) -> str:
    """`segment-000000000001-000000050000.jsonl.gz`: sorts by position as text."""
    return f"segment-{first_pos:012d}-{last_pos:012d}.jsonl.gz"


def manifest_name(segment: str) -> str:
    return segment.removesuffix(".jsonl.gz") + ".manifest.json"


@dataclass(slots=True)
class Manifest:
    """What a segment holds and where it sits in the chain (written beside it as JSON).

    `prev_hash` is the hash of the row before `first_pos` (the genesis hash for pos 1)
    and `last_hash` the hash of the row at `last_pos`: the two anchors that let the
    segment verify on its own and the next segment (or the live log) continue from it.
    """

    segment: str
    first_pos: int
    last_pos: int
    prev_hash: str
    last_hash: str
    rows: int
    runs: list[str]
    sha256: str
    """SHA-256 of the compressed segment file, as written."""
    created_at: str
    first_at: str
    last_at: str
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def as_bytes(self) -> bytes:
        return (json.dumps(asdict(self), ensure_ascii=False, indent=1) + "\n").encode()

    def digest(self) -> str:
        """SHA-256 of the manifest's bytes: what the live log records and chains."""
        return hashlib.sha256(self.as_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Manifest:
        try:
            body = json.loads(raw)
            if body.get("format") != FORMAT:
                raise ValueError(f"format {body.get('format')!r} is not {FORMAT}")
            return cls(**body)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ArchiveError(f"{where} is not a segment manifest: {exc}") from None


def prepare_directory(directory: Path) -> Path:
    """The archive directory, created (owner only) if missing; refused when unusable.

    Segments hold everything the runs recorded, so the directory is made 0700 like the
    database file is made 0600. A path that exists but is not a directory, or that
    cannot be written, is refused before any row is read.
    """
    path = Path(directory).expanduser()
    if path.exists() and not path.is_dir():
        raise ArchiveError(f"archive directory {path} exists and is not a directory")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"cannot create the archive directory {path}: {exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ArchiveError(f"the archive directory {path} is not writable")
    return path.resolve()


def encode_row(row: Row) -> bytes:
    return (json.dumps(list(row), ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def write_segment(directory: Path, chunk: Chunk, created_at: str) -> Manifest:
    """Write a checked range as a segment plus its manifest; durable on return.

    Raises `ArchiveError` (and leaves no partial file behind) when the disk is full or
    the directory cannot be written.
    """
    if not chunk.lines:
        raise ArchiveError("nothing to archive")
    name = segment_name(chunk.first_pos, chunk.last_pos)
    with _atomic(directory, name) as handle:
        digest = _HashingWriter(handle)
        with gzip.GzipFile(
            filename="",
            mode="wb",
            fileobj=digest,
            mtime=0,
            compresslevel=COMPRESS_LEVEL,  # type: ignore[arg-type]
        ) as gz:
            for start in range(0, len(chunk.lines), WRITE_LINES):
                gz.write(b"".join(chunk.lines[start : start + WRITE_LINES]))
    manifest = Manifest(
        segment=name,
        first_pos=chunk.first_pos,
        last_pos=chunk.last_pos,
        prev_hash=chunk.prev_hash,
        last_hash=chunk.last_hash,
        rows=chunk.rows,
        runs=chunk.runs,
        sha256=digest.hexdigest(),
        created_at=created_at,
        first_at=chunk.first_at,
        last_at=chunk.last_at,
    )
    with _atomic(directory, manifest_name(name)) as handle:
        handle.write(manifest.as_bytes())
    return manifest


def same_content(path: Path, chunk: Chunk, sha256: str) -> bool:
    """Whether the file on disk is exactly what was written: its bytes hash to `sha256`
    and they decompress to the chunk's lines, byte for byte (the lines were checked
    against the chain, so this checks the disk, not the encoder). One pass over the file."""
    expected = memoryview(b"".join(chunk.lines))
    digest = hashlib.sha256()
    inflate = zlib.decompressobj(wbits=31)
    offset = 0
    try:
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
                out = inflate.decompress(block)
                if expected[offset : offset + len(out)] != out:
                    return False
                offset += len(out)
    except (OSError, zlib.error):
        return False
    return inflate.eof and offset == len(expected) and digest.hexdigest() == sha256


def read_manifest(directory: Path, segment: str) -> Manifest:
    path = directory / manifest_name(segment)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ArchiveError(f"cannot read the manifest {path}: {exc.strerror or exc}") from None
    return Manifest.from_bytes(raw, str(path))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_rows(path: Path) -> Iterator[Row]:
    """The rows of a segment file, in order; `ArchiveError` for a damaged file."""
    try:
        with gzip.open(path, "rb") as gz:
            for number, line in enumerate(gz, 1):
                try:
                    row = json.loads(line)
                except ValueError:
                    raise ArchiveError(f"{path.name} line {number} is not JSON") from None
                if not isinstance(row, list) or len(row) != 11:
                    raise ArchiveError(f"{path.name} line {number} is not a stored row")
                yield tuple(row)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"cannot read the segment {path}: {exc}") from None


def segments_in(directory: Path) -> list[tuple[int, int, str]]:
    """(first pos, last pos, name) of every segment file in `directory`, by position."""
    found = []
    for entry in directory.iterdir():
        match = SEGMENT_RE.match(entry.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), entry.name))
    return sorted(found)


def remove_uncommitted(directory: Path, archived_upto: int) -> list[str]:
    """Delete what a crashed archiver left: temporary files, and segments past the prefix
    the live log records (their rows were never removed from the live log, so they are
    copies). Returns the names removed."""
    removed = []
    for entry in directory.iterdir():
        match = SEGMENT_RE.match(entry.name)
        stale = entry.name.startswith(TEMP_PREFIX) or (
            match is not None and int(match.group(1)) > archived_upto
        )
        if stale and entry.is_file() and not entry.is_symlink():
            entry.unlink()
            if match is not None:
                with contextlib.suppress(FileNotFoundError):
                    (directory / manifest_name(entry.name)).unlink()
            removed.append(entry.name)
    return removed


class _HashingWriter:
    """A file-like object that hashes what passes through it to the real file."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        written: int = self.handle.write(data)
        return written

    def flush(self) -> None:
        self.handle.flush()

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


@contextlib.contextmanager
def _atomic(directory: Path, name: str) -> Iterator[Any]:
    """A new file that appears as `directory/name` only once complete and on disk."""
    temp = directory / f"{TEMP_PREFIX}{secrets.token_hex(6)}-{name}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise ArchiveError(f"cannot write in {directory}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, directory / name)
        _fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise ArchiveError(
            f"writing {name} in {directory} failed ({exc.strerror or exc}); nothing was"
            " removed from the live log"
        ) from None
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
