"""`weightgate_cli.disk`: spans of a receive buffer land at their offsets, whole pages bypass the
page cache where the system allows it, and a refusal of O_DIRECT falls back to the page cache."""

import errno
import fcntl
import itertools
import os
import shutil
import subprocess

import pytest

from weightgate_cli.disk import ALIGN, PartWriter, page_buffer

DIRECT = hasattr(os, "O_DIRECT")


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


@pytest.mark.parametrize("direct", [True, False])
def test_spans_land_at_their_offsets_whatever_their_alignment(tmp_path, direct):
    # ranges that start and end mid-page, share pages with their neighbours, are shorter than a
    # page, and span several buffers
    size = 11 * ALIGN + 123
    data = os.urandom(size)
    path = _part(tmp_path / "file.part", size)
    cuts = [0, 100, ALIGN - 1, ALIGN + 7, 2 * ALIGN, 9 * ALIGN + 5, size]

    with PartWriter(path, direct=direct) as writer:
        assert writer.direct is (direct and DIRECT)
        for buffer, base, start, stop in _received(data, cuts):
            writer.write(buffer, base, start, stop)

    assert path.read_bytes() == data


@pytest.mark.skipif(not DIRECT, reason="no O_DIRECT on this platform")
def test_whole_pages_bypass_the_page_cache_and_only_the_ragged_edges_stay(tmp_path):
    size = 256 * ALIGN
    data = os.urandom(size)
    direct_path = _part(tmp_path / "direct.part", size)
    cached_path = _part(tmp_path / "cached.part", size)
    buffer = page_buffer(size)
    buffer[:] = data

    with PartWriter(direct_path, direct=True) as writer:
        writer.write(buffer, 0, 10, size - 10)  # 254 whole pages, two ragged ones
    with PartWriter(cached_path, direct=False) as writer:
        writer.write(buffer, 0, 10, size - 10)

    assert _cached_bytes(direct_path) == 2 * ALIGN
    assert _cached_bytes(cached_path) == size
    assert direct_path.read_bytes()[10:-10] == data[10:-10]


@pytest.mark.skipif(not DIRECT, reason="no O_DIRECT on this platform")
def test_a_device_that_refuses_the_alignment_gets_its_bytes_through_the_page_cache(
    tmp_path, monkeypatch
):
    size = 8 * ALIGN
    data = os.urandom(size)
    path = _part(tmp_path / "file.part", size)
    buffer = page_buffer(size)
    buffer[:] = data
    real_pwrite = os.pwrite
    refused = []

    def pwrite(fd, chunk, offset):
        # what a device with a coarser alignment than ALIGN answers to an O_DIRECT write
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, chunk, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)

    with PartWriter(path, direct=True) as writer:
        assert writer.direct
        writer.write(buffer, 0, 0, 4 * ALIGN)
        assert not writer.direct  # given up after the first refusal
        writer.write(buffer, 0, 4 * ALIGN, size)

    assert refused == [0]
    assert path.read_bytes() == data
