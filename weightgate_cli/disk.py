"""Writing received bytes into a `.part`: whole pages straight to the disk (`O_DIRECT`) where the
system allows it, the ragged edges of a range through the page cache.

Why direct: a download writes each byte once and hashes it from the receive buffer, so the page
cache only costs here. (A range that arrives ahead of the hashed point is read back to be hashed:
the downloader writes it through the page cache, from where the read-back is cheap.) Copying into
it is most of the system CPU of a download, and far more where fresh pages are slow
to come by (on virtual machines whose freed memory most likely goes back to the host: dd of
512 MiB took 0.65-1.9 s of system CPU cold, against 0.03 s with O_DIRECT), and a model of
hundreds of GB would push everything else out of it. `WEIGHTGATE_DIRECT_IO=0` keeps writes in
the page cache (a model loaded right after its download then comes from memory, not the disk).

O_DIRECT wants the memory, the file offset and the length aligned to the device's block size:
buffers come from `page_buffer` (page-aligned), and a buffer's index i always holds the byte at
file offset `base + i` with `base` aligned, so every whole page of a buffer is a whole page of the
file. Only bytes of whole pages go direct; a page a range shares with its neighbour is written
through the page cache by both, so no page is written both ways at once. Where the filesystem
refuses O_DIRECT (tmpfs before Linux 6.6, some FUSE filesystems) or the platform has none (macOS,
Windows), every write goes through the page cache.
"""

import errno
import mmap
import os
from pathlib import Path
from types import TracebackType

ALIGN = max(4096, mmap.PAGESIZE)  # a multiple of every block size O_DIRECT asks for
# Writes into the page cache go to the kernel in slices: 4 MiB writes sometimes cost three times
# the system CPU of 64 KiB ones on these machines (8 connections x 64 MiB, receive + write +
# sha256, 10 runs each: median 0.60 s against 0.88 s). Any smaller and the system calls add up.
CACHED_WRITE_SIZE = 64 * 1024
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


def page_buffer(size: int) -> memoryview:
    """`size` bytes of page-aligned memory (a private anonymous mapping), as O_DIRECT needs."""
    if hasattr(mmap, "MAP_PRIVATE"):
        return memoryview(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
    return memoryview(mmap.mmap(-1, size))  # Windows: anonymous memory is private there


def no_read_ahead(fd: int) -> None:
    """Have reads of `fd` cache only the pages they ask for. Read-ahead would cache pages of a
    `.part` that a range has yet to write with O_DIRECT: the kernel drops those when the write
    comes, but one it failed to drop would be read back stale."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _open_direct(path: Path) -> int:
    """An O_DIRECT descriptor for `path`, or -1 where the platform or the filesystem has none."""
    if not _O_DIRECT:
        return -1
    try:
        return os.open(path, os.O_WRONLY | _O_DIRECT)
    except OSError:
        return -1


# What a write with O_DIRECT gets from a device or filesystem that will not take it after all.
_DIRECT_REFUSED = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


class PartWriter:
    """Positional writes into one `.part` (one per range being received)."""

    def __init__(self, path: Path, *, direct: bool) -> None:
        self.path = path
        self._cached = open(path, "r+b", buffering=0)  # noqa: SIM115 (closed by close())
        self._direct_allowed = direct and bool(_O_DIRECT)
        self._direct = -1  # opened at the first direct write

    def write(self, buffer: memoryview, base: int, start: int, stop: int, *, direct: bool) -> int:
        """Write `buffer[start:stop]` at file offset `base + start`, whole pages with O_DIRECT if
        `direct` and the system allows it; the bytes that went direct. `buffer` is a
        `page_buffer` and `base` a multiple of ALIGN."""
        assert base % ALIGN == 0
        first = -(-start // ALIGN) * ALIGN  # the whole pages: [first, last)
        last = stop // ALIGN * ALIGN
        if not (direct and first < last and self._direct_open()):
            self._write_cached(buffer, base, start, stop)
            return 0
        self._write_cached(buffer, base, start, first)
        try:
            _pwrite_all(self._direct, buffer[first:last], base + first)
            went_direct = last - first
        except OSError as error:
            if error.errno not in _DIRECT_REFUSED:
                raise
            # The device wants a coarser alignment than ALIGN, or no O_DIRECT at all after all.
            self._direct_allowed = False
            self._write_cached(buffer, base, first, last)
            went_direct = 0
        self._write_cached(buffer, base, last, stop)
        return went_direct

    def _direct_open(self) -> bool:
        if self._direct < 0 and self._direct_allowed:
            self._direct = _open_direct(self.path)
            self._direct_allowed = self._direct >= 0
        return self._direct_allowed

    def _write_cached(self, buffer: memoryview, base: int, start: int, stop: int) -> None:
        if stop <= start:
            return
        self._cached.seek(base + start)
        view = buffer[start:stop]
        while view:  # unbuffered writes may be short
            view = view[self._cached.write(view[:CACHED_WRITE_SIZE]) :]

    def close(self) -> None:
        self._cached.close()
        if self._direct >= 0:
            os.close(self._direct)
            self._direct = -1

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
