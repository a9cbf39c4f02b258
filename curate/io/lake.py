"""Data-lake I/O: the one filesystem layer for reading shards and writing outputs, on local disk or object storage.

URIs: plain paths and file:// (local disk); s3://bucket/key (pyarrow's S3FileSystem, built into the
pyarrow wheel); gs:// and hf:// through fsspec, only when gcsfs / huggingface_hub are installed.
DuckDB's httpfs extension is not used: DuckDB downloads it on first use, which offline machines cannot;
hand DuckDB Arrow data or datasets built on `resolve()` instead.

S3 settings come from the standard places. Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, AWS_PROFILE and the rest of the AWS SDK's chain (pyarrow reads them itself; with no
credentials anywhere that chain ends by asking the EC2 instance-metadata address). Region: AWS_REGION /
AWS_DEFAULT_REGION, default us-east-1. Endpoint: the `endpoint` argument, else AWS_ENDPOINT_URL_S3 /
AWS_ENDPOINT_URL. Credentials are never printed, logged or put into a message or a returned URI.

Transient errors (a 5xx or throttling answer, a reset or refused connection, a timeout) are retried here, with
exponential backoff, and counted: `retry_stats()` for the process, `counting()` for a block of work; each retry
is a `lake_retry` log event (debug). The AWS SDK inside pyarrow is told to make one attempt per request, since its own
retries are invisible to Python (see RETRY_ATTEMPTS). gs:// and hf:// keep their libraries' own retries.

Every failure reaches the caller as a one-line LakeError naming the (redacted) URI.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from curate.core.errors import CurateError
from curate.util import log

CHUNK = 1 << 20  # hashing
# One S3 ranged GET per buffer fill. Measured on loopback SeaweedFS, 64 MiB object: 138 MiB/s with 1 MiB
# reads, 216 MiB/s with 8 MiB; against a remote store each request also pays a round trip.
READ_BUFFER = 8 << 20
# Retries. The AWS SDK retries inside pyarrow (3 attempts by default) and no count of them reaches Python, so
# it makes one attempt per request (measured through a fault-injecting proxy: with max_attempts=1 a 503 or a
# reset is one request and raises; with 3 the SDK silently sends up to 3) and this module retries, counting.
# One retry is left below us: libcurl resends a request once, unseen, when a reused keep-alive connection is
# reset before any byte of the answer (measured: a GET reset then a GET that succeeds, with max_attempts=1).
S3_SDK_ATTEMPTS = 1
# Attempts per operation, and the wait before retry n: RETRY_BASE * 2**(n-1), capped at RETRY_CAP, each drawn
# between half and all of that (jitter, so that many clients do not come back at once). 6 attempts wait
# 3.9-7.8 s in all: a store that stays down fails an operation within about 8 s, and a SeaweedFS restart
# (about 2 s here, then ~0.5 s of 500 answers while its volumes re-register) is ridden out.
RETRY_ATTEMPTS = 6
RETRY_BASE = 0.25
RETRY_CAP = 8.0
# AWS error types worth another attempt (the SDK's own list of retryable ones), an HTTP 5xx the SDK could not
# name, and every network failure (curl: 7 refused, 28 timeout, 52 empty reply, 55/56 reset).
TRANSIENT_RE = re.compile(r"\b(NETWORK_CONNECTION|SLOW_DOWN|SERVICE_UNAVAILABLE|THROTTLING|INTERNAL_FAILURE|"
                          r"REQUEST_TIMEOUT)\b|HTTP status (5\d\d|429)|curlCode: \d+")
SHARD_RE = re.compile(r"\.(jsonl|ndjson|json|parquet|csv)(\.(gz|zst))?$", re.IGNORECASE)
TMP_RE = re.compile(r"^\..+\.tmp-[0-9a-f]{16}$")  # temporaries of open_output_atomic
FSSPEC_PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "hf": "huggingface_hub"}
GLOB_CHARS = "*?["
MISSING_RE = re.compile(r"RESOURCE_NOT_FOUND|NO_SUCH_KEY|NO_SUCH_BUCKET|NoSuchKey|NoSuchBucket")
DENIED_RE = re.compile(r"ACCESS_DENIED|INVALID_ACCESS_KEY_ID|SIGNATURE_DOES_NOT_MATCH|AccessDenied|InvalidAccessKeyId")

_filesystems: dict[tuple, pafs.FileSystem] = {}
T = TypeVar("T")


class LakeError(CurateError):
    """A store, object or URI problem, said in one line without credentials."""


class Missing(LakeError):
    """The object or file does not exist."""


class Unreachable(LakeError):
    """The store cannot be reached (down, wrong endpoint): nothing can be read from it."""


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int
    etag: str | None  # S3 only (from a HEAD request); local and fsspec stores: None
    version_id: str | None  # S3 with bucket versioning on; otherwise None
    mtime: datetime | None


# -- retries --------------------------------------------------------------------------------------
@dataclass
class RetryStats:
    """Retries of transient store errors: `retries` attempts made again, `gave_up` operations that failed even
    so, `errors` the retries by kind of error ("HTTP 503", "connection reset", "internal error", ...)."""

    retries: int = 0
    gave_up: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"retries": self.retries, "gave_up": self.gave_up, "errors": dict(sorted(self.errors.items()))}

    def describe(self) -> str:
        """For a command's summary: "3 transient store errors retried (HTTP 503: 2, connection reset: 1)"; "" for
        none."""
        if not self.retries:
            return ""
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.errors.items()))
        gave_up = f"; gave up on {self.gave_up} operation(s)" if self.gave_up else ""
        return f"{self.retries} transient store error{'s' * (self.retries != 1)} retried ({kinds}){gave_up}"

    def since(self, before: RetryStats) -> RetryStats:
        """What was counted after `before`, an earlier retry_stats(): `lake.retry_stats().since(before)`."""
        errors = {k: n - before.errors.get(k, 0) for k, n in sorted(self.errors.items())}
        return RetryStats(self.retries - before.retries, self.gave_up - before.gave_up,
                          {k: n for k, n in errors.items() if n})


_TOTAL = RetryStats()
_active: list[RetryStats] = []  # the counters of open `counting()` blocks
_stats_lock = threading.Lock()


def retry_stats() -> RetryStats:
    """The retries of this process so far (a copy)."""
    with _stats_lock:
        return RetryStats(_TOTAL.retries, _TOTAL.gave_up, dict(_TOTAL.errors))


@contextmanager
def counting() -> Iterator[RetryStats]:
    """A RetryStats counting the retries made while the block runs, in any thread (DuckDB reads a store
    from its own threads): `with lake.counting() as r: ...; r.retries`."""
    stats = RetryStats()
    with _stats_lock:
        _active.append(stats)
    try:
        yield stats
    finally:
        with _stats_lock:
            _active.remove(stats)


def _note(kind: str | None) -> None:
    """Count one retry of `kind`, or (kind None) one operation given up."""
    with _stats_lock:
        for stats in (_TOTAL, *_active):
            if kind is None:
                stats.gave_up += 1
            else:
                stats.retries += 1
                stats.errors[kind] = stats.errors.get(kind, 0) + 1


def transient(e: BaseException) -> str | None:
    """The kind of a transient error, worth another attempt; None for any other error."""
    message = str(e)
    if not isinstance(e, OSError) or isinstance(e, FileNotFoundError) or not TRANSIENT_RE.search(message):
        return None
    # A 503 is named by the SDK SLOW_DOWN (S3's code in the body), SERVICE_UNAVAILABLE, or UNKNOWN (HTTP status
    # 503), and not always the same way for the same answer (measured): all three are counted as "HTTP 503".
    for pattern, kind in (("SLOW_DOWN", "HTTP 503"), ("THROTTLING", "throttled"), ("SERVICE_UNAVAILABLE", "HTTP 503"),
                          ("reset by peer", "connection reset"), ("curlCode: 7,", "connection refused"),
                          ("curlCode: 28,", "timeout"), ("REQUEST_TIMEOUT", "timeout"),
                          ("curlCode: 52,", "empty reply"), ("INTERNAL_FAILURE", "internal error")):
        if pattern in message:
            return kind
    if m := re.search(r"HTTP status (\d+)", message):
        return f"HTTP {m.group(1)}"
    if m := re.search(r"curlCode: (\d+)", message):
        return f"network (curl {m.group(1)})"
    return "server error"


def _backoff(attempt: int) -> float:
    """Seconds to wait before attempt `attempt + 1`."""
    ceiling = min(RETRY_CAP, RETRY_BASE * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def _retry(operation: str, path: str, call: Callable[[], T]) -> T:
    """call(), an S3 request about `path` (bucket/key), again after a transient error, up to RETRY_ATTEMPTS
    attempts with backoff; each retry counted and logged. The last error is raised with `attempts` and `seconds`
    set on it (the message then says so)."""
    attempt, started = 1, time.monotonic()
    while True:
        try:
            return call()
        except OSError as e:
            kind = transient(e)
            if kind is None:
                raise
            if attempt >= RETRY_ATTEMPTS:
                _note(None)
                e.attempts, e.seconds = attempt, time.monotonic() - started  # type: ignore[attr-defined]
                raise
            wait = _backoff(attempt)
            _note(kind)
            # debug (-vv): the totals are in each command's own events; a store that is down says so in one line
            log.event("lake_retry", "debug", uri=f"s3://{path}", operation=operation, attempt=attempt + 1,
                      error=kind, wait=round(wait, 3))
            time.sleep(wait)
            attempt += 1


class _RetryingInput:
    """A store object opened for reading, every read a ranged GET retried on its own (`read_at`: a failed request
    leaves no position to repair). The HEAD that opened it gave the size and metadata (ETag)."""

    def __init__(self, native: pa.NativeFile, path: str):
        self._native, self._path = native, path
        self._size, self._pos, self.closed = native.size(), 0, False

    def metadata(self) -> dict[str, bytes]:
        return self._native.metadata()

    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = max(0, offset + (0, self._pos, self._size)[whence])
        return self._pos

    def read(self, n: int = -1) -> bytes:
        n = self._size - self._pos if n is None or n < 0 else min(n, self._size - self._pos)
        if n <= 0:
            return b""
        pos = self._pos
        data = _retry("read", self._path, lambda: self._native.read_at(n, pos))
        self._pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._native.close()


class _SpooledOutput:
    """A store object opened for writing. pyarrow streams it as a multipart upload whose failed part cannot be
    sent again from Python, so the bytes are spooled (memory up to READ_BUFFER, then a temporary file) and
    uploaded on close, the whole upload retried. Measured: a failed upload is never completed, by a second
    close or by garbage collection, so a retry to the same key cannot be overtaken by the failed one. `abort()`
    drops the bytes without uploading."""

    def __init__(self, fs: pafs.S3FileSystem, path: str, metadata: Any = None):
        self._fs, self._path, self._metadata = fs, path, metadata
        self._spool = tempfile.SpooledTemporaryFile(max_size=READ_BUFFER, prefix="curate-upload-")
        self.closed = self.sent = False  # sent: an upload began (a temporary may exist in the store)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self._spool.write(data)

    def tell(self) -> int:
        return self._spool.tell()

    def flush(self) -> None:
        pass

    def _upload(self) -> None:
        self.sent = True
        self._spool.seek(0)
        with self._fs.open_output_stream(self._path, compression=None, metadata=self._metadata) as out:
            shutil.copyfileobj(self._spool, out, READ_BUFFER)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            _retry("write", self._path, self._upload)
        finally:
            self._spool.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self._spool.close()


class _RetryingS3(pafs.FileSystemHandler):
    """pyarrow's S3FileSystem (one attempt per request) with every operation retried by `_retry`, for every user
    of `resolve()`: this module, DuckDB's reads (duckdb_path), the stages' parts (curate.core.parts)."""

    def __init__(self, fs: pafs.S3FileSystem):
        self.fs = fs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _RetryingS3) and other.fs.equals(self.fs)

    def __hash__(self) -> int:
        return id(self.fs)

    def get_type_name(self) -> str:
        return "s3"

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return _retry("stat", paths[0] if paths else "", lambda: self.fs.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return _retry("list", selector.base_dir, lambda: self.fs.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        _retry("mkdir", path, lambda: self.fs.create_dir(path, recursive=recursive))

    def delete_dir(self, path: str) -> None:
        _retry("delete", path, lambda: self.fs.delete_dir(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        _retry("delete", path, lambda: self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok))

    def delete_root_dir_contents(self) -> None:
        _retry("delete", "", self.fs.delete_root_dir_contents)

    def delete_file(self, path: str) -> None:
        self._delete(path, missing_ok=False)

    def _delete(self, path: str, missing_ok: bool) -> None:
        """pyarrow asks (HEAD) before it deletes: a retry after a delete whose answer was lost finds nothing."""
        tried = []

        def delete() -> None:
            try:
                self.fs.delete_file(path)
            except FileNotFoundError:
                if not (tried or missing_ok):
                    raise
            finally:
                tried.append(True)

        _retry("delete", path, delete)

    def move(self, src: str, dest: str) -> None:
        """A copy, then a delete (pyarrow's move of an object is the same two requests), each retried: a
        retried move could otherwise find its source gone by its own earlier, half-answered attempt."""
        self.copy_file(src, dest)
        self._delete(src, missing_ok=True)

    def copy_file(self, src: str, dest: str) -> None:
        _retry("copy", src, lambda: self.fs.copy_file(src, dest))

    def open_input(self, path: str) -> _RetryingInput:
        return _RetryingInput(_retry("open", path, lambda: self.fs.open_input_file(path)), path)

    def head(self, path: str) -> dict[str, bytes]:
        """The object's HeadObject response (opening a file issues it and reads no body)."""
        f = self.open_input(path)
        try:
            return f.metadata()
        finally:
            f.close()

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return pa.PythonFile(self.open_input(path), mode="r")

    def open_input_file(self, path: str) -> pa.NativeFile:
        return pa.PythonFile(self.open_input(path), mode="r")

    def open_output(self, path: str, metadata: Any = None) -> _SpooledOutput:
        return _SpooledOutput(self.fs, path, metadata)

    def open_output_stream(self, path: str, metadata: Any = None) -> pa.NativeFile:
        return pa.PythonFile(self.open_output(path, metadata), mode="w")

    def open_append_stream(self, path: str, metadata: Any = None) -> pa.NativeFile:
        return self.fs.open_append_stream(path, metadata=metadata)  # S3 has none: pyarrow says so


def _retrying(fs: pafs.FileSystem) -> _RetryingS3 | None:
    """The retrying handler behind an S3 filesystem from `resolve()`, else None."""
    handler = getattr(fs, "handler", None) if isinstance(fs, pafs.PyFileSystem) else None
    return handler if isinstance(handler, _RetryingS3) else None


def redact_uri(uri: str) -> str:
    """`uri` without userinfo, query string or fragment (signed URLs carry their secrets there)."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _scheme(uri: str) -> str:
    m = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*)://", uri)
    return m.group(1).lower() if m else ""


def resolve(uri: str, endpoint: str | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding `uri` and the path to give it (cached per scheme, endpoint and credentials)."""
    scheme = _scheme(uri)
    if scheme in ("", "file"):
        return _cached(("local",), pafs.LocalFileSystem), _local_path(uri)
    rest = uri[len(scheme) + 3 :]
    bucket = rest.split("/", 1)[0]
    if "@" in bucket:
        raise LakeError(f"{redact_uri(uri)}: credentials in a URI are refused; use AWS_ACCESS_KEY_ID and friends")
    if not bucket or any(c in bucket for c in GLOB_CHARS):
        raise LakeError(f"{redact_uri(uri)}: name a bucket (globs in the bucket name are not supported)")
    path = rest.rstrip("/")
    if scheme == "s3":
        return _s3(endpoint), path
    if scheme in FSSPEC_PACKAGES:
        return _fsspec(scheme), path
    raise LakeError(f"{redact_uri(uri)}: unsupported scheme {scheme}:// (use a path, file://, s3://, gs:// or hf://)")


def _cached(key: tuple, make) -> pafs.FileSystem:
    if key not in _filesystems:
        _filesystems[key] = make()
    return _filesystems[key]


def _local_path(uri: str) -> str:
    if uri.lower().startswith("file://"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise LakeError(f"{redact_uri(uri)}: file:// URIs must name this machine (file:///path)")
        uri = unquote(parts.path)
    return os.path.abspath(uri)


def _s3_endpoint(endpoint: str | None) -> str | None:
    return endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _s3(endpoint: str | None) -> pafs.FileSystem:
    endpoint = _s3_endpoint(endpoint)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # The key id (not the secret) is in the cache key so that changed credentials get a new client.
    key = ("s3", endpoint, region, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_PROFILE"))

    def make() -> pafs.FileSystem:
        options: dict = {"region": region, "retry_strategy": pafs.AwsStandardS3RetryStrategy(S3_SDK_ATTEMPTS)}
        if endpoint:
            scheme, _, host = endpoint.rpartition("://")
            options.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
        return pafs.PyFileSystem(_RetryingS3(pafs.S3FileSystem(**options)))

    return _cached(key, make)


def _fsspec(scheme: str) -> pafs.FileSystem:
    package = FSSPEC_PACKAGES[scheme]
    try:
        import fsspec

        return _cached((scheme,), lambda: pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme))))
    except ImportError:
        raise LakeError(f"{scheme}:// needs fsspec and {package}: pip install fsspec {package}") from None


def _lake_error(uri: str, endpoint: str | None, e: BaseException) -> LakeError:
    name = redact_uri(uri)
    message = str(e)
    if isinstance(e, FileNotFoundError) or MISSING_RE.search(message):
        return Missing(f"{name}: not found")
    attempts = getattr(e, "attempts", None)
    tried = f" ({attempts} attempts over {e.seconds:.1f} s)" if attempts else ""  # type: ignore[attr-defined]
    where = redact_uri(_s3_endpoint(endpoint) or "(AWS default)")
    if "NETWORK_CONNECTION" in message or "curlCode" in message:
        m = re.search(r"curlCode: \d+, ([^;]+)", message)
        return Unreachable(f"s3 endpoint {where} unreachable: {m.group(1) if m else message}{tried}")
    if attempts and (kind := transient(e)):  # still a 5xx or throttled after every retry: the store is not serving
        return Unreachable(f"s3 endpoint {where} unavailable: {kind} on every attempt at {name}{tried}")
    if DENIED_RE.search(message):
        return LakeError(f"{name}: access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
    first = message.strip().splitlines()[0] if message.strip() else type(e).__name__
    return LakeError(f"{name}: {first}")


@contextmanager
def _errors(uri: str, endpoint: str | None) -> Iterator[None]:
    """Turn the stores' OSErrors into one-line LakeErrors."""
    try:
        yield
    except LakeError:
        raise
    except OSError as e:
        raise _lake_error(uri, endpoint, e) from e


def has_glob(s: str) -> bool:
    return any(c in s for c in GLOB_CHARS)


def _glob_regex(glob: str) -> re.Pattern[str]:
    """`**` spans directories (`a/**/b` also matches `a/b`), `*` and `?` stay within one, `[...]` as fnmatch."""
    out, i, n = [], 0, len(glob)
    while i < n:
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[":
            j = i + 1 + (glob[i + 1 : i + 2] == "!")
            j += glob[j : j + 1] == "]"  # a leading ']' is a member
            j = glob.find("]", j)
            if j < 0:
                out.append(re.escape("["))
                i += 1
                continue
            body = glob[i + 1 : j].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = j + 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def expand(patterns: Iterable[str], endpoint: str | None = None) -> list[str]:
    """Each argument as a file (returned as given), a directory or prefix (its shard files), or a glob (listed)."""
    out: set[str] = set()
    for pattern in patterns:
        fs, path = resolve(pattern, endpoint)
        with _errors(pattern, endpoint):
            info = fs.get_file_info(path)
            if info.is_file or (info.type == pafs.FileType.NotFound and not has_glob(path)):
                out.add(pattern)  # an existing file beats a glob reading of its name; a missing one is reported later
                continue
            if info.type == pafs.FileType.Directory:
                prefix, rest = pattern, ""
            else:
                parts = pattern.split("/")
                first = next(i for i, part in enumerate(parts) if has_glob(part))
                prefix = "/".join(parts[:first]) or ("/" if pattern.startswith("/") else "")
                rest = "/".join(parts[first:])
            base = resolve(prefix or ".", endpoint)[1]
            regex = _glob_regex(rest) if rest else None
            show_hidden = re.search(r"(^|/)\.", rest) is not None
            selector = pafs.FileSelector(base, recursive=not rest or "/" in rest or "**" in rest, allow_not_found=True)
            for found in _listing(fs, selector):
                rel = found.path[len(base) :].lstrip("/")
                if not found.is_file or TMP_RE.match(rel.rsplit("/", 1)[-1]):
                    continue
                if not show_hidden and any(p.startswith(".") for p in rel.split("/")):
                    continue  # like glob.glob: hidden names only when the pattern names them
                if (regex.fullmatch(rel) if regex else SHARD_RE.search(rel)) is not None:
                    out.add(f"{prefix.rstrip('/')}/{rel}" if prefix else rel)
    return sorted(out)


def _listing(fs: pafs.FileSystem, selector: pafs.FileSelector) -> Iterable[pafs.FileInfo]:
    """The files under a selector. On local disk a directory reached twice (a symlink loop, or two links to one
    directory) is listed once, where pyarrow's own recursive listing follows a loop until the path is too long
    (with two loops, for ever)."""
    if not isinstance(fs, pafs.LocalFileSystem):
        yield from fs.get_file_info(selector)
        return
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(selector.base_dir, followlinks=True):
        try:
            st = os.stat(top)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        if not selector.recursive:
            dirs[:] = []
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            if os.path.isfile(path):  # a dangling symlink is no file
                yield pafs.FileInfo(path, pafs.FileType.File)


def stat(uri: str, endpoint: str | None = None) -> ObjectInfo:
    """Size, etag, version and modification time of one object or file."""
    fs, path = resolve(uri, endpoint)
    with _errors(uri, endpoint):
        if store := _retrying(fs):
            md = {k: v.decode() for k, v in store.head(path).items()}  # FileInfo carries no etag
            modified = md.get("Last-Modified")
            return ObjectInfo(
                uri=uri,
                size=int(md["Content-Length"]),
                etag=md["ETag"].strip('"') if md.get("ETag") else None,
                version_id=md.get("VersionId") or None,
                mtime=datetime.fromisoformat(modified) if modified else None,
            )
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(path)
        if not info.is_file:
            raise LakeError(f"{redact_uri(uri)}: is a directory, not a file")
        return ObjectInfo(uri=uri, size=info.size, etag=None, version_id=None, mtime=info.mtime)


class _Reader(io.RawIOBase):
    """A store's input stream whose errors become LakeErrors, and which refuses to end on mixed versions.

    S3 streams are a HEAD then ranged GETs, and pyarrow cannot pin them to one version (no If-Match): an
    object replaced meanwhile can give bytes of both, or a prefix of the new one (measured: 1 read in ~150
    while a 6 MiB replacement was published). So at end of stream the etag is asked again (one HEAD) and
    a change raises instead of ending the read.
    """

    def __init__(self, native, fs: pafs.FileSystem, path: str, uri: str, endpoint: str | None):
        self._native, self._fs, self._path, self._uri, self._endpoint = native, fs, path, uri, endpoint
        self._etag = native.metadata().get("ETag")  # from the HEAD that opened the stream; local files: none

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        with _errors(self._uri, self._endpoint):
            n = self._native.readinto(b)
            if n == 0 and self._etag is not None and _retrying(self._fs).head(self._path).get("ETag") != self._etag:
                raise LakeError(f"{redact_uri(self._uri)}: replaced while being read; read it again")
            return n

    def close(self) -> None:
        if not self.closed:
            self._native.close()
        super().close()


def open_input(uri: str, endpoint: str | None = None) -> BinaryIO:
    """A binary stream of the raw bytes (no decompression). Streams: on S3 each 8 MiB buffer fill is one
    ranged GET, retried on its own; nothing is downloaded whole. Seekable random access (Parquet) goes
    through `resolve()`: `pq.ParquetFile(fs.open_input_file(path))` or a pyarrow dataset."""
    fs, path = resolve(uri, endpoint)
    with _errors(uri, endpoint):
        store = _retrying(fs)
        native = store.open_input(path) if store else fs.open_input_stream(path, compression=None, buffer_size=None)
        return io.BufferedReader(_Reader(native, fs, path, uri, endpoint), READ_BUFFER)


def sha256_and_size(uri: str, endpoint: str | None = None) -> tuple[str, int]:
    """SHA-256 (hex) and size of the raw bytes, streamed in 1 MiB chunks."""
    h, size = hashlib.sha256(), 0
    with open_input(uri, endpoint) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


@contextmanager
def open_output_atomic(uri: str, endpoint: str | None = None) -> Iterator[BinaryIO]:
    """A binary stream that becomes `uri` whole, or not at all.

    It writes `.<name>.tmp-<random>` beside the target, then moves it into place: locally with fsync and
    os.replace (a rename); on S3 with a server-side CopyObject and a DeleteObject. S3 makes an object visible
    only when its PUT, multipart completion or copy finishes, so a reader of `uri` sees the old object or the
    new one, never a part. On S3 the bytes are spooled and uploaded when the block ends (see _SpooledOutput),
    the upload retried whole on a transient error; on an exception nothing is uploaded. A temporary the
    store kept (the move failed for good) is deleted if the store lets us; otherwise its name marks it and
    `expand` never returns it. S3 copies in one request are limited to 5 GB per object.
    """
    fs, path = resolve(uri, endpoint)
    parent, _, name = path.rpartition("/")
    tmp = f"{parent}/.{name}.tmp-{secrets.token_hex(8)}"
    local = isinstance(fs, pafs.LocalFileSystem)
    with _errors(uri, endpoint):
        if local:
            os.makedirs(parent or "/", exist_ok=True)
            out = open(tmp, "xb")  # closed below on every path
        else:
            store = _retrying(fs)
            out = store.open_output(tmp) if store else fs.open_output_stream(tmp, compression=None)
    try:
        yield out
        with _errors(uri, endpoint):
            if local:
                out.flush()
                os.fsync(out.fileno())
                out.close()
                os.replace(tmp, path)
            else:
                out.close()
                fs.move(tmp, path)
    except BaseException:
        _discard(fs, out, tmp)
        raise


def _discard(fs: pafs.FileSystem, out, tmp: str) -> None:
    if isinstance(out, _SpooledOutput):  # S3
        out.abort()  # nothing more is uploaded
        if not out.sent:
            return  # no temporary in the store
        fs = _retrying(fs).fs  # one attempt: after a failure that outlived every retry, no second wait
    else:
        try:
            out.close()  # elsewhere this completes the temporary; it is deleted next
        except OSError:
            pass
    try:
        fs.delete_file(tmp)
    except OSError:
        pass


def write_atomic(uri: str, data: bytes, endpoint: str | None = None) -> None:
    with open_output_atomic(uri, endpoint) as f:
        f.write(data)


def remove(uri: str, endpoint: str | None = None) -> bool:
    """Delete one object or file; False when there was none."""
    fs, path = resolve(uri, endpoint)
    with _errors(uri, endpoint):
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return False
        fs.delete_file(path)
        return True


def join(base: str, name: str) -> str:
    """`name` inside the directory or prefix `base`."""
    return f"{base.rstrip('/')}/{name}" if "://" in base else os.path.join(base, name)


# -- DuckDB ------------------------------------------------------------------------------------------
def is_local(uri: str) -> bool:
    return _scheme(uri) in ("", "file")


def duckdb_path(con, uri: str, endpoint: str | None = None) -> str:
    """A path DuckDB's readers (read_json, read_csv, read_parquet) can open for `uri`: the local path, or the
    URI itself once this store is registered with the connection as an fsspec filesystem over pyarrow's (no
    httpfs extension). DuckDB then reads it in ranged requests, never whole. DuckDB does not decompress
    through such a filesystem (measured: .gz and .zst come back raw), so compressed remote files must be read
    with `open_input` and decompressed here instead."""
    if is_local(uri):
        return _local_path(uri)
    from fsspec.implementations.arrow import ArrowFSWrapper

    scheme = _scheme(uri)
    fs, _ = resolve(uri, endpoint)
    if scheme in con.list_filesystems():  # one store per scheme and connection (ingest opens one per command)
        con.unregister_filesystem(scheme)
    con.register_filesystem(type(f"{scheme.upper()}Lake", (ArrowFSWrapper,), {"protocol": scheme})(fs))
    return uri
