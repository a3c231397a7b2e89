"""`weightgate_cli.disk`: spans of a receive buffer land at their offsets, whole pages bypass the
page cache where the system allows it, and a refusal of O_DIRECT falls back to the page cache."""

import errno
import itertools
import os
import shutil
import subprocess

import pytest

from weightgate_cli.disk import ALIGN, PartWriter, page_buffer


def _cached_bytes(path):
    """Bytes of `path` in the page cache, by util-linux's fincore."""
    if shutil.which("fincore") is None:
        pytest.skip("fincore (util-linux) is not installed")
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


def _part(path, size):
    """A `.part` sized up front, as `PartFile.open` makes it."""
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def _received_whole(tmp_path, size):
    """A `.part` of `size` bytes, and a buffer that received all of them; and the bytes."""
    data = os.urandom(size)
    buffer = page_buffer(size)
    buffer[:] = data
    return _part(tmp_path / "file.part", size), buffer, data


def _received(data, cuts):
    """`data` the way ranges [cuts[i], cuts[i+1]) are received: buffer fills whose index i holds
    the byte at file offset base + i (the downloader's rule), as (buffer, base, start, stop)."""
    buffer = page_buffer(4 * ALIGN)
    for start, end in itertools.pairwise(cuts):
        position = start
        while position < end:
            first = position % ALIGN
            base = position - first
            stop = min(len(buffer), first + end - position)
            buffer[first:stop] = data[position : base + stop]
            yield buffer, base, first, stop
            position = base + stop


def _whole_pages(start, stop):
    return max(0, stop // ALIGN - -(-start // ALIGN)) * ALIGN


@pytest.mark.parametrize("direct", [True, False])
def test_spans_land_at_their_offsets_whatever_their_alignment(tmp_path, direct, direct_works):
    # ranges that start and end mid-page, share pages with their neighbours, are shorter than a
    # page, and span several buffers
    size = 11 * ALIGN + 123
    data = os.urandom(size)
    path = _part(tmp_path / "file.part", size)
    cuts = [0, 100, ALIGN - 1, ALIGN + 7, 2 * ALIGN, 9 * ALIGN + 5, size]
    went = expected = 0

    with PartWriter(path, direct=True) as writer:
        for buffer, base, start, stop in _received(data, cuts):
            went += writer.write(buffer, base, start, stop, direct=direct)
            expected += _whole_pages(start, stop)

    assert path.read_bytes() == data
    assert went == (expected if direct and direct_works else 0)
    assert expected > 0


def test_whole_pages_bypass_the_page_cache_and_only_the_ragged_edges_stay(tmp_path, direct_works):
    if not direct_works:
        pytest.skip("no O_DIRECT here")
    size = 256 * ALIGN
    data = os.urandom(size)
    direct_path = _part(tmp_path / "direct.part", size)
    cached_path = _part(tmp_path / "cached.part", size)
    switched_off = _part(tmp_path / "switched-off.part", size)
    buffer = page_buffer(size)
    buffer[:] = data

    with PartWriter(direct_path, direct=True) as writer:
        assert writer.write(buffer, 0, 10, size - 10, direct=True) == size - 2 * ALIGN
    with PartWriter(cached_path, direct=True) as writer:
        assert writer.write(buffer, 0, 10, size - 10, direct=False) == 0
    with PartWriter(switched_off, direct=False) as writer:  # WEIGHTGATE_DIRECT_IO=0
        assert writer.write(buffer, 0, 10, size - 10, direct=True) == 0

    assert _cached_bytes(direct_path) == 2 * ALIGN  # the two ragged pages
    assert _cached_bytes(cached_path) == size
    assert _cached_bytes(switched_off) == size
    assert direct_path.read_bytes()[10:-10] == data[10:-10]


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EOPNOTSUPP])
def test_a_device_that_refuses_direct_writes_gets_its_bytes_through_the_page_cache(
    tmp_path, monkeypatch, direct_works, code
):
    if not direct_works:
        pytest.skip("no O_DIRECT here")
    import fcntl  # not on Windows

    size = 8 * ALIGN
    path, buffer, data = _received_whole(tmp_path, size)
    real_pwrite = os.pwrite
    refused = []

    def pwrite(fd, chunk, offset):
        # what a device with a coarser alignment than ALIGN answers to an O_DIRECT write
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(code, os.strerror(code))
        return real_pwrite(fd, chunk, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)

    with PartWriter(path, direct=True) as writer:
        assert writer.write(buffer, 0, 0, 4 * ALIGN, direct=True) == 0
        assert writer.write(buffer, 0, 4 * ALIGN, size, direct=True) == 0  # not asked again

    assert refused == [0]
    assert path.read_bytes() == data


def test_a_filesystem_that_refuses_o_direct_gets_every_byte_through_the_page_cache(
    tmp_path, monkeypatch
):
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this platform")
    size = 8 * ALIGN
    path, buffer, data = _received_whole(tmp_path, size)
    real_open = os.open

    def refusing_open(file, flags, *args, **kwargs):
        if flags & os.O_DIRECT:  # tmpfs before Linux 6.6, some FUSE filesystems
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)

    with PartWriter(path, direct=True) as writer:
        assert writer.write(buffer, 0, 0, size, direct=True) == 0

    assert path.read_bytes() == data
