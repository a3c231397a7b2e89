"""The manifest of a version and the commit id derived from it.

The manifest lists every file with its artifact, size and sha256, sorted by path, as canonical
JSON; the commit id is the first 40 hex digits of its sha256, so it looks like a git commit to
Hub clients and changes whenever any byte of any file would.
"""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from config.errors import DomainError
from release.file_paths import MAX_PATH_LENGTH as MAX_PATH_LENGTH
from release.file_paths import file_path_problem

MANIFEST_FORMAT = "weightgate.manifest/v1"


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    artifact: str
    size: int
    sha256: str


def file_path_validate(path: str) -> str:
    """Refuse a path that could escape the version's folder or means different things to
    different clients; return it unchanged when it is a plain relative POSIX path."""
    problem = file_path_problem(path)
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
