import os

import pytest


@pytest.fixture
def direct_works(tmp_path):
    """Whether this platform and tmp_path's filesystem take O_DIRECT (tmpfs before Linux 6.6 and
    some FUSE filesystems do not, macOS and Windows have none)."""
    try:
        fd = os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    except (AttributeError, OSError):
        return False
    os.close(fd)
    return True
