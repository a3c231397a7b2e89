"""The manifest of a version and the commit id derived from it.

The manifest lists every file with its artifact, size and sha256, sorted by path, as canonical
JSON; the commit id is the first 40 hex digits of its sha256, so it looks like a git commit to
Hub clients and changes whenever any byte of any file would.
"""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from config.errors import DomainError

MANIFEST_FORMAT = "weightgate.manifest/v1"
MAX_PATH_LENGTH = 1024


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    artifact: str
    size: int
    sha256: str


def file_path_validate(path: str) -> str:
    """Refuse a path that could escape the version's folder or means different things to
    different clients; return it unchanged when it is a plain relative POSIX path."""
    problem = None
    if not path or len(path) > MAX_PATH_LENGTH:
        problem = f"must be 1 to {MAX_PATH_LENGTH} characters"
    elif path.startswith("/") or "\\" in path:
        problem = "must be a relative POSIX path"
    elif any(ord(char) < 32 or ord(char) == 127 for char in path):
        problem = "must not contain control characters"
    elif any(part in {"", ".", ".."} for part in path.split("/")):
        problem = "must not contain empty, '.' or '..' segments"
    elif PurePosixPath(path).parts[0].startswith(".git"):
        problem = "must not be inside .git"
    if problem:
        raise DomainError(f"file path {path!r} {problem}", code="invalid_path")
    return path


def manifest_build(
    *, repo_id: str, version: str, entries: Iterable[ManifestEntry]
) -> dict[str, Any]:
    files = sorted(entries, key=lambda entry: entry.path)
    return {
        "format": MANIFEST_FORMAT,
        "model": repo_id,
        "version": version,
        "files": [
            {"path": e.path, "artifact": e.artifact, "size": e.size, "sha256": e.sha256}
            for e in files
        ],
    }


def manifest_commit_id(manifest: dict[str, Any]) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]
