"""What the API says a version holds: the version a revision names, its files (each checked to
be safe to write under the download folder), and the subset that --include/--exclude select."""

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import PurePosixPath
from typing import Any

from release.file_paths import file_path_problem
from weightgate_cli.client import Api
from weightgate_cli.errors import CliError, NotFoundError, UsageError

MANIFEST_DIR = ".weightgate"  # the CLI's own folder inside a download
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def repo_id_check(repo_id: str) -> str:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise UsageError(f"a model is named org/name, not {repo_id!r}")
    return repo_id


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str
    artifact: str

    @classmethod
    def parse(cls, item: Any) -> "RemoteFile":
        """A listing entry, refused unless it is safe to write under the download folder."""
        if not isinstance(item, dict):
            raise CliError(f"the file listing holds a non-object entry: {item!r}")
        path, size, digest = item.get("path"), item.get("size"), item.get("sha256")
        if not isinstance(path, str):
            raise CliError(f"the server listed a file without a path: {item!r}")
        problem = file_path_problem(path)
        if problem:
            raise CliError(f"the server listed an unsafe file path {path!r} ({problem}); refused")
        if PurePosixPath(path).parts[0] == MANIFEST_DIR:
            raise CliError(f"the server listed {path!r}, inside the CLI's own folder; refused")
        if not isinstance(size, int) or size < 0:
            raise CliError(f"the server listed {path!r} with a bad size {size!r}")
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise CliError(f"the server listed {path!r} without a sha256 digest")
        return cls(path, size, digest, str(item.get("artifact", "")))


def version_and_files(
    api: Api, repo_id: str, revision: str | None
) -> tuple[dict[str, Any], list[RemoteFile]]:
    """The version a revision names (the newest visible without one) and its files. Both are
    asked for at once: a sealed version's name and commit name the same files, and whatever is
    fetched later by commit is checked against this listing and the commit's signature."""
    if revision is None:
        model = api.get_json(api.model_path(repo_id), what=f"model {repo_id}")
        versions = model.get("versions") if isinstance(model, dict) else None
        if not versions:
            raise NotFoundError(f"{repo_id} has no version you can see")
        revision = str(versions[0]["name"])
    # The listing on a daemon thread: Ctrl-C (or a refusal here) does not wait for its retries.
    listing: dict[str, Any] = {}
    side = threading.Thread(
        target=_into, args=(listing, files_list, api, repo_id, revision), daemon=True
    )
    side.start()
    # Its errors first (no such version); the listing's (same cause) go unheard.
    version = api.get_json(api.version_path(repo_id, revision), what=f"{repo_id}@{revision}")
    if not isinstance(version, dict) or not isinstance(version.get("commit"), str):
        raise CliError(f"{repo_id}@{revision}: the server sent no commit id")
    side.join()
    if "error" in listing:
        raise listing["error"]
    return version, listing["result"]


def _into(into: dict[str, Any], function: Callable[..., Any], *args: Any) -> None:
    try:
        into["result"] = function(*args)
    except BaseException as error:  # handed to the thread that waits for it
        into["error"] = error


def files_list(api: Api, repo_id: str, revision: str) -> list[RemoteFile]:
    files = [
        RemoteFile.parse(item)
        for item in api.pages(
            api.version_path(repo_id, revision) + "files/",
            what=f"list files of {repo_id}@{_short(revision)}",
            params={"limit": "500"},
        )
    ]
    if len({f.path for f in files}) != len(files):
        raise CliError("the server listed a file twice")
    return files


def _short(revision: str) -> str:
    """A commit's first 12 hex digits, a version name whole."""
    return revision[:12] if _COMMIT.fullmatch(revision) else revision


def _pattern(glob: str) -> str:
    # Like huggingface_hub: "dir/" means everything under dir.
    return glob + "*" if glob.endswith("/") else glob


def files_select(
    files: list[RemoteFile], *, include: list[str], exclude: list[str]
) -> list[RemoteFile]:
    """Globs match the whole path (`*` crosses `/`): --include keeps, then --exclude drops."""
    chosen = [
        f
        for f in files
        if (not include or any(fnmatchcase(f.path, _pattern(g)) for g in include))
        and not any(fnmatchcase(f.path, _pattern(g)) for g in exclude)
    ]
    return sorted(chosen, key=lambda f: f.path)
