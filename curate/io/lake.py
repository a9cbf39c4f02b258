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

Every failure reaches the caller as a one-line LakeError naming the (redacted) URI.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit

import pyarrow.fs as pafs

from curate.core.errors import CurateError

CHUNK = 1 << 20  # hashing
# One S3 ranged GET per buffer fill. Measured on loopback SeaweedFS, 64 MiB object: 138 MiB/s with 1 MiB
# reads, 216 MiB/s with 8 MiB; against a remote store each request also pays a round trip.
READ_BUFFER = 8 << 20
# Retries happen inside the AWS SDK (standard strategy: exponential backoff with jitter). Measured against
# a stopped endpoint: 3 attempts give up after 0.5-2.6 s. The SDK exposes no retry counter through pyarrow.
S3_MAX_ATTEMPTS = 3
SHARD_RE = re.compile(r"\.(jsonl|ndjson|json|parquet|csv)(\.(gz|zst))?$", re.IGNORECASE)
TMP_RE = re.compile(r"^\..+\.tmp-[0-9a-f]{16}$")  # temporaries of open_output_atomic
FSSPEC_PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "hf": "huggingface_hub"}
GLOB_CHARS = "*?["
MISSING_RE = re.compile(r"RESOURCE_NOT_FOUND|NO_SUCH_KEY|NO_SUCH_BUCKET|NoSuchKey|NoSuchBucket")
DENIED_RE = re.compile(r"ACCESS_DENIED|INVALID_ACCESS_KEY_ID|SIGNATURE_DOES_NOT_MATCH|AccessDenied|InvalidAccessKeyId")

_filesystems: dict[tuple, pafs.FileSystem] = {}


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
        options: dict = {"region": region, "retry_strategy": pafs.AwsStandardS3RetryStrategy(S3_MAX_ATTEMPTS)}
        if endpoint:
            scheme, _, host = endpoint.rpartition("://")
            options.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
        return pafs.S3FileSystem(**options)

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
    if "NETWORK_CONNECTION" in message or "curlCode" in message:
        m = re.search(r"curlCode: \d+, ([^;]+)", message)
        where = _s3_endpoint(endpoint) or "(AWS default)"
        return Unreachable(f"s3 endpoint {redact_uri(where)} unreachable: {m.group(1) if m else message}")
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
        if isinstance(fs, pafs.S3FileSystem):
            md = {k: v.decode() for k, v in _head(fs, path).items()}  # FileInfo carries no etag
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
            if n == 0 and self._etag is not None and _head(self._fs, self._path).get("ETag") != self._etag:
                raise LakeError(f"{redact_uri(self._uri)}: replaced while being read; read it again")
            return n

    def close(self) -> None:
        if not self.closed:
            self._native.close()
        super().close()


def _head(fs: pafs.FileSystem, path: str) -> dict[str, bytes]:
    """An S3 object's HeadObject response: opening a file issues it and reads no body."""
    with fs.open_input_file(path) as f:
        return f.metadata()


def open_input(uri: str, endpoint: str | None = None) -> BinaryIO:
    """A binary stream of the raw bytes (no decompression). Streams: on S3 each 8 MiB buffer fill is one
    ranged GET, retried by the SDK; nothing is downloaded whole. Seekable random access (Parquet) goes
    through `resolve()`: `pq.ParquetFile(fs.open_input_file(path))` or a pyarrow dataset."""
    fs, path = resolve(uri, endpoint)
    with _errors(uri, endpoint):
        native = fs.open_input_stream(path, compression=None, buffer_size=None)
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
    os.replace (a rename); on S3 with pyarrow's move, a server-side CopyObject and a DeleteObject. S3 makes
    an object visible only when its PUT, multipart completion or copy finishes, so a reader of `uri` sees the
    old object or the new one, never a part. Writing straight to the final key would be atomic too, but
    pyarrow cannot abort an upload from Python: closing the stream after an exception would publish the
    partial data. On an exception the temporary is deleted (if the store is down it may stay: its name marks
    it, and `expand` never returns it). S3 copies in one request are limited to 5 GB per object.
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
            out = fs.open_output_stream(tmp, compression=None)
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
    try:
        out.close()  # on S3 this completes the temporary's upload; it is deleted next
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
