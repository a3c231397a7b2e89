"""What a file path inside a version may be. Pure Python (no Django), so that the `weightgate`
CLI applies the very same rule to the paths a server lists before it writes anything to disk."""

from pathlib import PurePosixPath

MAX_PATH_LENGTH = 1024


def file_path_problem(path: str) -> str | None:
    """Why `path` could escape the version's folder or mean different things to different
    clients, or None when it is a plain relative POSIX path."""
    if not path or len(path) > MAX_PATH_LENGTH:
        return f"must be 1 to {MAX_PATH_LENGTH} characters"
    if path.startswith("/") or "\\" in path:
        return "must be a relative POSIX path"
    if any(ord(char) < 32 or ord(char) == 127 for char in path):
        return "must not contain control characters"
    if any(part in {"", ".", ".."} for part in path.split("/")):
        return "must not contain empty, '.' or '..' segments"
    if PurePosixPath(path).parts[0].startswith(".git"):
        return "must not be inside .git"
    return None
