"""`weightgate download`: fetch a version's files in parallel, resumably, and keep them only once
every byte is checked against the sealed listing and the version's signature.

How a file travels:
1. `GET …/files/{path}` with `Prefer: no-redirect` gives a presigned URL on the object store.
2. The bytes go into `<file>.part` (sized up front), in byte ranges fetched concurrently with
   `Range` (files above the threshold are split only as far as it keeps every connection busy;
   smaller ones are one range), each written at its offset (the whole pages of bytes hashed as
   they arrive straight to the disk: `weightgate_cli.disk`). `<file>.part.json` records how far
   every range got, so a run that stops for any reason (Ctrl-C, a crash, a lost network)
   resumes with only the missing bytes.
3. The sha256 is computed as the bytes are written (`InOrderDigest`: no second read, except for
   bytes that arrived ahead of the hashed point and the bytes of an earlier run); a digest other
   than the listing's discards the `.part` (nothing kept).
4. When every selected file is in, the version's signature is checked against the digests, and
   only then are the `.part` files renamed to their names and the manifest written
   (`DIR/.weightgate/manifest.json`, which `weightgate verify` reads later).
"""

import hashlib
import http.client
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from weightgate_cli.catalog import RemoteFile, files_select, version_and_files
from weightgate_cli.client import USER_AGENT, Api, Tuning, quote_path, status_error
from weightgate_cli.console import Console, size_text
from weightgate_cli.disk import ALIGN, PartWriter, no_read_ahead, page_buffer
from weightgate_cli.errors import (
    AccessError,
    CliError,
    NotFoundError,
    UsageError,
    VerificationError,
)
from weightgate_cli.transport import (
    BUFFER_SIZE,
    TransferError,
    Transport,
    readinto,
    readinto_some,
    store_message,
)
from weightgate_cli.verify import (
    SavedSignature,
    manifest_write,
    sha256_file,
    signatures_check,
    signatures_fetch,
    signed_digests,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

MiB = 1024 * 1024
MIN_RANGE = 32 * MiB  # the smallest range a file is split into when none is set
DEFAULT_THRESHOLD = 64 * MiB
READ_SIZE = 1 * MiB  # reading back from the disk
PROGRESS_STEP = 1 * MiB  # bytes a range gathers before telling the progress bars
STATE_SAVE_INTERVAL = 1.0  # seconds between `.part.json` updates while bytes flow
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)


def size_parse(text: str) -> int:
    """'64M', '16MiB', '1048576' → bytes (K/M/G/T are powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise UsageError(f"not a size: {text!r} (e.g. 64M, 16MiB, 1048576)")
    number, unit = int(match.group(1)), match.group(2).lower()
    value = number << (10 * "_kmgt".index(unit) if unit else 0)
    if value <= 0:
        raise UsageError(f"a size must be positive, not {text!r}")
    return value


def range_size(total: int, workers: int) -> int:
    """Bytes per range when none is set: the download's bytes shared evenly among the
    connections. Many shards then travel one file per connection, like parallel curl, and a single
    large file one range per connection. Splitting further gains nothing once every connection is
    busy and costs a read back from the disk: a file's sha256 is computed in file order, so only its
    first range is hashed as it arrives (8 x 64 MiB shards in 32 MiB ranges: 0.99 s; one range
    each: see bench/downloads.py (c))."""
    return max(MIN_RANGE, -(-total // workers))


class Aborted(Exception):
    """Another part of the download failed in a way that stops everything (or Ctrl-C)."""


class PartFile:
    """`<file>.part` being filled by byte ranges, and `<file>.part.json` saying which bytes are
    in. A range's `done` only ever counts bytes already handed to the kernel, so a run killed at
    any instant resumes from a state that is never ahead of the data."""

    def __init__(self, target: Path, remote: RemoteFile) -> None:
        self.target = target
        self.remote = remote
        self.part = target.with_name(target.name + ".part")
        self.state_path = target.with_name(target.name + ".part.json")
        self.lock = threading.Lock()
        self.ranges: list[list[int]] = []  # [start, end, done]
        self.complete = False  # the .part holds the whole file and its sha256 was checked
        self.discarded = False
        self._saved_at = 0.0

    def _load(self) -> bool:
        try:
            state = json.loads(self.state_path.read_text())
            ranges = [[int(a), int(b), int(c)] for a, b, c in state["ranges"]]
            same = state["sha256"] == self.remote.sha256 and state["size"] == self.remote.size
        except (OSError, ValueError, KeyError, TypeError):
            return False
        try:
            on_disk = self.part.stat().st_size
        except FileNotFoundError:
            return False
        position = 0
        for start, end, done in ranges:  # they must tile [0, size) exactly
            if start != position or end <= start or not 0 <= done <= end - start:
                return False
            position = end
        if not same or on_disk != self.remote.size or position != self.remote.size:
            return False
        self.ranges = ranges
        self.complete = bool(state.get("complete"))
        return True

    def open(self, *, chunk_size: int, threshold: int) -> int:
        """Resume a matching `.part`, else start one; the bytes already there."""
        self.target.parent.mkdir(parents=True, exist_ok=True)
        if self._load():
            return self.done_bytes()
        size = self.remote.size
        count = 1 if size <= threshold else -(-size // chunk_size)
        cuts = [size * i // count for i in range(count + 1)]  # equal ranges, no runt at the end
        self.ranges = [[start, end, 0] for start, end in pairwise(cuts) if end > start]
        with open(self.part, "wb") as handle:
            handle.truncate(size)  # sized up front (sparse): ranges are written in place
        self.complete = False
        self.save(force=True)
        return 0

    def done_bytes(self) -> int:
        with self.lock:
            return sum(done for _, _, done in self.ranges)

    def contiguous(self) -> int:
        """Where the bytes on record from the start of the file stop."""
        with self.lock:
            for start, end, done in self.ranges:
                if start + done < end:
                    return start + done
            return self.remote.size

    def missing(self) -> list[int]:
        with self.lock:
            return [i for i, (start, end, done) in enumerate(self.ranges) if start + done < end]

    def position(self, index: int) -> tuple[int, int]:
        with self.lock:
            start, end, done = self.ranges[index]
            return start + done, end

    def advance(self, index: int, count: int) -> None:
        with self.lock:
            start, end, done = self.ranges[index]
            self.ranges[index][2] = done = done + count
        self.save(force=start + done == end)  # every finished range is on record at once

    def save(self, *, force: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            if self.discarded or (not force and now - self._saved_at < STATE_SAVE_INTERVAL):
                return
            self._saved_at = now
            state = {
                "sha256": self.remote.sha256,
                "size": self.remote.size,
                "complete": self.complete,
                "ranges": self.ranges,
            }
            temporary = self.state_path.with_name(self.state_path.name + ".tmp")
            temporary.write_text(json.dumps(state))
            os.replace(temporary, self.state_path)

    def mark_complete(self) -> None:
        with self.lock:
            self.complete = True
        self.save(force=True)

    def discard(self) -> None:
        with self.lock:
            self.discarded = True
        self.part.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)

    def publish(self) -> None:
        os.replace(self.part, self.target)
        self.state_path.unlink(missing_ok=True)


class InOrderDigest:
    """The sha256 of a `.part` whose ranges are written concurrently. A sha256 cannot be pieced
    together from the digests of parts, so bytes are hashed in file order: a chunk written right
    at the hashed point is hashed on the spot, from memory; bytes that land ahead of it (a later
    range's, or an earlier run's) are read back from the disk when the point reaches them
    (`catch_up`). Only bytes on record (`PartFile.advance`) are hashed, and those are never
    written again, so the digest is of exactly the bytes the file ends up holding."""

    def __init__(self, part: PartFile) -> None:
        self.part = part
        self.position = 0  # bytes hashed so far
        self._sha256 = hashlib.sha256()
        self._lock = threading.Lock()

    def hashes_on_arrival(self, offset: int) -> bool:
        """Whether bytes written at `offset` now will be hashed from memory by `written` (or,
        rarely, read back by a `catch_up` that sees them on record first)."""
        return offset == self.position

    def written(self, offset: int, data: bytes | memoryview) -> None:
        """`data` has just been written at `offset` and put on record."""
        if offset != self.position:  # an unlocked peek: a chunk skipped here is caught up later
            return
        with self._lock:
            if offset == self.position:
                self._sha256.update(data)  # releases the GIL: ranges hash on every core
                self.position += len(data)

    def catch_up(self) -> None:
        """Read back and hash the bytes on record that went past unhashed. Until the hashed point
        meets the bytes on record: a chunk recorded meanwhile is either read here or, recorded
        after the last look, arrives in `written` right at the hashed point."""
        if self.position >= self.part.contiguous():
            return
        with self._lock, open(self.part.part, "rb", buffering=0) as handle:
            no_read_ahead(handle.fileno())
            handle.seek(self.position)
            buffer = memoryview(bytearray(READ_SIZE))
            while (end := self.part.contiguous()) > self.position:
                count = handle.readinto(buffer[: min(READ_SIZE, end - self.position)])
                if not count:
                    raise CliError(f"{self.part.part}: shorter than the bytes on record")
                self._sha256.update(buffer[:count])
                self.position += count

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


@dataclass
class FileJob:
    remote: RemoteFile
    part: PartFile
    digest: InOrderDigest
    url: str = ""
    url_generation: int = 0
    url_refreshed: bool = False
    url_lock: threading.Lock = field(default_factory=threading.Lock)
    failed: threading.Event = field(default_factory=threading.Event)


@dataclass
class Outcome:
    remote: RemoteFile
    part: PartFile | None  # None: the file was already in place


@dataclass(frozen=True)
class Options:
    repo_id: str
    revision: str | None
    directory: Path | None
    include: list[str]
    exclude: list[str]
    workers: int = 8
    verify_signature: bool = True
    public_key: str | None = None  # a pinned PEM instead of the server's published key
    chunk_size: int | None = None  # bytes per range; None: `range_size`
    threshold: int = DEFAULT_THRESHOLD
    direct_io: bool = True  # whole pages bypass the page cache (weightgate_cli.disk)
    quiet: bool = False


class Downloader:
    def __init__(self, api: Api, options: Options, console: Console) -> None:
        self.api = api
        self.options = options
        self.console = console
        self.tuning: Tuning = api.tuning
        self.abort = threading.Event()
        # Never the API token: URLs carry their own.
        self.storage = Transport(timeout=self.tuning.timeout, user_agent=USER_AGENT)
        self.progress: Progress | None = None
        self.overall: TaskID | None = None
        self.bytes_fetched = 0
        self._count_lock = threading.Lock()
        self._buffers = threading.local()  # one receive buffer per range thread, reused

    # --- progress -------------------------------------------------------------------------

    @contextmanager
    def _progress(self, total: int) -> Iterator[None]:
        if self.options.quiet or not self.console.is_terminal:
            yield
            return
        with self.console.progress() as bars:
            self.progress = bars
            self.overall = bars.add_task("[bold]total", total=total)
            try:
                yield
            finally:
                self.progress = None

    def _advance(self, task: "TaskID | None", count: int) -> None:
        if not count:
            return
        with self._count_lock:
            self.bytes_fetched += count
        if self.progress is not None:
            if task is not None:
                self.progress.advance(task, count)
            if self.overall is not None:
                self.progress.advance(self.overall, count)

    def _note(self, message: str) -> None:
        if not self.options.quiet:
            self.console.print(message)

    # --- one range --------------------------------------------------------------------------

    def _url(self, job: FileJob) -> None:
        """Ask the API for a fresh URL (and check it describes the file the listing did)."""
        remote = job.remote
        response = self.api.request(
            f"{self.api.version_path(self.options.repo_id, self.commit)}files/"
            f"{quote_path(remote.path)}",
            what=remote.path,
            headers={"Prefer": "no-redirect"},
        )
        try:
            answer = response.json()
            url = answer["url"]
        except (ValueError, KeyError, TypeError) as error:
            raise CliError(f"{remote.path}: the server did not answer a download URL") from error
        if not str(url).startswith(("https://", "http://")):
            raise CliError(f"{remote.path}: the server gave a download URL that is not HTTP(S)")
        if answer.get("sha256") != remote.sha256 or answer.get("size") != remote.size:
            raise VerificationError(
                f"{remote.path}: the server's download answer does not match its own listing"
            )
        job.url = str(url)
        job.url_generation += 1

    def _url_refresh(self, job: FileJob, seen: int) -> bool:
        """After a 403 from the object store (an expired presigned URL): one new URL per file."""
        with job.url_lock:
            if job.url_generation != seen:
                return True  # another range already refreshed it
            if job.url_refreshed:
                return False
            job.url_refreshed = True
            self._url(job)
            return True

    def _fetch_range(self, job: FileJob, index: int, task: "TaskID | None") -> None:
        remote = job.remote
        attempt = 0
        while True:
            if self.abort.is_set() or job.failed.is_set():
                raise Aborted
            position, end = job.part.position(index)
            if position >= end:
                return
            with job.url_lock:
                url, generation = job.url, job.url_generation
            try:
                ranged = {"Range": f"bytes={position}-{end - 1}"}
                with self.storage.get(url, ranged, follow_redirects=True) as response:
                    status = response.status
                    if status == 403:
                        message = store_message(response)
                        if self._url_refresh(job, generation):
                            continue
                        raise AccessError(
                            f"{remote.path}: the object store refused the download URL twice "
                            f"({message})"
                        )
                    if status in (500, 502, 503, 504):
                        raise TransferError(f"object store answered {status}")
                    if status == 200 and not (position == 0 and end == remote.size):
                        raise CliError(f"{remote.path}: the object store ignored the Range header")
                    if status not in (200, 206):
                        what = f"{remote.path} (object store)"
                        raise status_error(status, what, store_message(response))
                    if status == 206:
                        content_range = response.getheader("Content-Range", "")
                        if not content_range.startswith(f"bytes {position}-{end - 1}/"):
                            raise CliError(
                                f"{remote.path}: the object store sent the wrong range "
                                f"({content_range!r} for {position}-{end - 1})"
                            )
                    reached = self._receive(job, index, response, position, end, task)
                if reached < end:
                    raise TransferError("the connection closed before the range ended")
                job.digest.catch_up()  # a later range may be in: hash it while this thread is free
                return
            except TransferError as error:
                progressed = job.part.position(index)[0] > position
                attempt = 0 if progressed else attempt + 1
                if attempt > self.tuning.retries:
                    raise CliError(
                        f"{remote.path}: download failed after {attempt} attempts: {error}"
                    ) from error
                delay = self.tuning.delay(attempt)
                self._note(f"{remote.path}: {error}; resuming in {delay:.1f}s")
                time.sleep(delay)

    def _receive(
        self,
        job: FileJob,
        index: int,
        response: http.client.HTTPResponse,
        position: int,
        end: int,
        task: "TaskID | None",
    ) -> int:
        """Write a range's body at `position` and hash it on the way; where it stopped."""
        unreported = 0  # the progress bars hear of bytes a MiB at a time, not per read
        buffer = self._buffer()
        try:
            with PartWriter(job.part.part, direct=self.options.direct_io) as writer:
                while position < end:
                    # buffer[i] is the byte at file offset base + i, base aligned (for O_DIRECT).
                    start = position % ALIGN
                    base = position - start
                    limit = min(len(buffer), start + end - position)
                    stop, failure = _fill(response, buffer, start, limit)
                    if self.abort.is_set() or job.failed.is_set():
                        raise Aborted
                    # Direct only what is hashed from this buffer: bytes ahead of the hashed
                    # point are read back later, from the page cache if they are there.
                    hashed_here = job.digest.hashes_on_arrival(position)
                    writer.write(buffer, base, start, stop, direct=hashed_here)
                    job.part.advance(index, stop - start)  # on record before it is hashed
                    job.digest.written(position, buffer[start:stop])
                    position += stop - start
                    unreported += stop - start
                    if unreported >= PROGRESS_STEP:
                        self._advance(task, unreported)
                        unreported = 0
                    if failure is not None:
                        raise failure
                    if stop < limit:
                        return position  # the body ended early
                if readinto(response, buffer[:1]):
                    raise CliError(f"{job.remote.path}: the object store sent too much")
        finally:
            self._advance(task, unreported)
        return position

    def _buffer(self) -> memoryview:
        buffer: memoryview | None = getattr(self._buffers, "buffer", None)
        if buffer is None:
            buffer = self._buffers.buffer = page_buffer(BUFFER_SIZE)
        return buffer

    # --- one file ---------------------------------------------------------------------------

    def _file(self, remote: RemoteFile, ranges: ThreadPoolExecutor) -> Outcome:
        if self.abort.is_set():
            raise Aborted
        target = self._target(remote)
        if _in_place(target, remote):
            if sha256_file(target) == remote.sha256:
                PartFile(target, remote).discard()  # leftovers of an earlier attempt
                if self.progress is not None and self.overall is not None:
                    self.progress.advance(self.overall, remote.size)
                return Outcome(remote, None)
            self._note(f"{remote.path}: differs from the release; downloading it again")
        part = PartFile(target, remote)
        already = part.open(chunk_size=self.chunk_size, threshold=self.options.threshold)
        if already:
            here = f"{size_text(already)} of {size_text(remote.size)}"
            self._note(f"{remote.path}: resuming, {here} already here")
        job = FileJob(remote, part, InOrderDigest(part))
        task = None
        if self.progress is not None:
            task = self.progress.add_task(remote.path, total=remote.size, completed=already)
            if self.overall is not None:
                self.progress.advance(self.overall, already)
        try:
            job.digest.catch_up()  # an earlier run's bytes, read back once
            missing = part.missing()
            if missing:
                self._url(job)
                futures = [ranges.submit(self._fetch_range, job, i, task) for i in missing]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                if any(f.exception() for f in done):
                    job.failed.set()  # the file's other ranges stop at their next read
                    wait(futures)
                    _raise_first(futures)
            part.save(force=True)
            job.digest.catch_up()  # whatever went past unhashed (usually nothing)
            digest = job.digest.hexdigest()
            if digest != remote.sha256:
                part.discard()
                raise VerificationError(
                    f"{remote.path}: sha256 mismatch: the bytes served hash to {digest}, the "
                    f"release says {remote.sha256}. The file was refused and nothing was kept; "
                    "if it happens again, tell the model's publisher"
                )
            part.mark_complete()
        finally:
            part.save(force=True)
            if self.progress is not None and task is not None:
                self.progress.remove_task(task)
        if self.progress is None:
            self._note(f"{remote.path}: {size_text(remote.size)} ok")
        return Outcome(remote, part)

    def _target(self, remote: RemoteFile) -> Path:
        return self.directory / Path(*PurePosixPath(remote.path).parts)

    def _file_or_abort(self, remote: RemoteFile, ranges: ThreadPoolExecutor) -> Outcome:
        try:
            return self._file(remote, ranges)
        except AccessError:
            self.abort.set()  # the same refusal would repeat for every file
            raise

    # --- the whole download ---------------------------------------------------------------

    def run(self) -> int:
        options = self.options
        started = time.monotonic()
        version, everything = version_and_files(self.api, options.repo_id, options.revision)
        self.commit = str(version["commit"])
        name = str(version.get("name") or self.commit)
        self.directory = options.directory or Path(options.repo_id.split("/")[1])
        selected = files_select(everything, include=options.include, exclude=options.exclude)
        if not selected:
            raise NotFoundError(
                f"{options.repo_id}@{name}: no file matches"
                + (" the --include/--exclude patterns" if everything else " (the version is empty)")
            )
        total = sum(f.size for f in selected)
        # Shared among the connections: the bytes still to come (a file in place with its size
        # is most likely one a new version did not change).
        coming = sum(f.size for f in selected if not _in_place(self._target(f), f))
        self.chunk_size = options.chunk_size or range_size(coming, options.workers)
        self._note(
            f"{options.repo_id}@{name} ({self.commit[:12]}): {len(selected)} files, "
            f"{size_text(total)} → {self.directory}"
        )
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wg-signature") as fetcher:
            # The signatures depend on the listing only: fetched and verified while bytes flow.
            signing: Future[tuple[list[SavedSignature], dict[str, str]]] | None = None
            if options.verify_signature:
                signing = fetcher.submit(self._signatures, selected)
            outcomes = self._download_all(selected, total)
            signatures, signed = signing.result() if signing is not None else ([], {})
        if signing is not None:
            signatures_check(signed, {o.remote.path: o.remote.sha256 for o in outcomes})
        for outcome in outcomes:  # only now do the files appear under their names
            if outcome.part is not None:
                outcome.part.publish()
        manifest_write(
            self.directory,
            endpoint=self.api.endpoint,
            model=options.repo_id,
            revision=name,
            commit=self.commit,
            files=[
                {"path": f.path, "size": f.size, "sha256": f.sha256, "artifact": f.artifact}
                for f in selected
            ],
            signatures=signatures,
        )
        elapsed = max(time.monotonic() - started, 1e-6)
        present = sum(1 for o in outcomes if o.part is None)
        fetched = self.bytes_fetched
        self._note(
            f"Downloaded {size_text(fetched)} in {elapsed:.1f}s "
            f"({size_text(int(fetched / elapsed))}/s)"
            + (f"; {present} files were already in place" if present else "")
            + "; sha256 of every file matches the release"
            + (
                "; signature verified (key " + ", ".join(sorted({s.kid for s in signatures})) + ")"
                if signatures
                else "; signature NOT checked (--no-verify-signature)"
            )
        )
        print(self.directory)
        return 0

    def _signatures(
        self, selected: list[RemoteFile]
    ) -> tuple[list[SavedSignature], dict[str, str]]:
        """The signatures of the selected files' artifacts and the digests they sign (each
        bundle checked against its key)."""
        signatures = signatures_fetch(
            self.api,
            self.options.repo_id,
            self.commit,
            artifacts=sorted({f.artifact for f in selected}),
            public_key=self.options.public_key,
        )
        return signatures, signed_digests(signatures)

    def _download_all(self, selected: list[RemoteFile], total: int) -> list[Outcome]:
        workers = self.options.workers
        files = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wg-file")
        ranges = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wg-range")
        futures: dict[Future[Outcome], RemoteFile] = {}
        try:
            with self._progress(total):
                futures = {files.submit(self._file_or_abort, f, ranges): f for f in selected}
                pending = set(futures)
                while pending:
                    # A timeout, so that Ctrl-C reaches this thread promptly.
                    _, pending = wait(pending, timeout=0.5)
        except KeyboardInterrupt:
            self.abort.set()
            files.shutdown(wait=True, cancel_futures=True)
            ranges.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            files.shutdown(wait=True)
            ranges.shutdown(wait=True)
            self.storage.close()
        failures = [
            (futures[f], f.exception())
            for f in futures
            if not f.cancelled() and f.exception() is not None
        ]
        real = [(r, e) for r, e in failures if not isinstance(e, Aborted)]
        refused = [(r, e) for r, e in real if isinstance(e, AccessError)]
        if refused:  # one refusal stands for all: the others say the same for other files
            first_refusal = refused[0][1]
            if len(refused) > 1:
                raise _with_message(
                    first_refusal, f"{_message(first_refusal)} ({len(refused)} files refused)"
                )
            assert first_refusal is not None
            raise first_refusal
        if real:
            for _remote, error in real[1:]:
                self.console.print(f"✗ {_message(error)}")
            first = real[0][1]
            if len(real) > 1:
                raise _with_message(
                    first, f"{_message(first)} (and {len(real) - 1} more failures above)"
                )
            assert first is not None
            raise first
        return [f.result() for f in futures]


def _fill(
    response: http.client.HTTPResponse, buffer: memoryview, stop: int, limit: int
) -> tuple[int, TransferError | None]:
    """Read the body into `buffer[stop:limit]` until it is full or the body ends; where it
    stopped, and the failure that stopped it, if one did (what arrived before it is kept: a retry
    resumes after it)."""
    try:
        while stop < limit:
            count = readinto_some(response, buffer[stop:limit])
            if not count:
                break
            stop += count
    except TransferError as error:
        return stop, error
    return stop, None


def _in_place(target: Path, remote: RemoteFile) -> bool:
    """A file of the listed size is there (its sha256 decides whether it stays)."""
    return target.is_file() and target.stat().st_size == remote.size


def _message(error: BaseException | None) -> str:
    return error.message if isinstance(error, CliError) else f"{error!r}"


def _with_message(error: BaseException | None, message: str) -> CliError:
    if isinstance(error, CliError):
        error.message = message
        error.args = (message,)
        return error
    return CliError(message)


def _raise_first(futures: list[Future[None]]) -> None:
    errors = [f.exception() for f in futures if f.exception() is not None]
    real = [e for e in errors if not isinstance(e, Aborted)]
    first = (real or errors)[0]
    assert first is not None
    raise first


def download(api: Api, options: Options, console: Console) -> int:
    return Downloader(api, options, console).run()
