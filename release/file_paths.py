"""What a file path inside a version may be. Pure Python (no Django), so that the `weightgate`
CLI applies the very same rule to the paths a server lists before it writes anything to disk."""

import unicodedata
from pathlib import PurePosixPath
from urllib.parse import unquote

MAX_PATH_LENGTH = 1024


def file_path_problem(path: str) -> str | None:
    """Why `path` could escape the version's folder or mean different things to different
    clients, or None when it is a plain relative POSIX path."""
    if not path or len(path) > MAX_PATH_LENGTH:
        return f"must be 1 to {MAX_PATH_LENGTH} characters"
    if path.startswith("/") or "\\" in path:
        return "must be a relative POSIX path"
    if any(unicodedata.category(char) == "Cc" for char in path):
        return "must not contain control characters"
    if any(unicodedata.category(char) in {"Cf", "Cs"} for char in path):
        # A right-to-left override shows "model\u202esrosnetefas.bin" (a pickle) as
        # "modelnib.safetensors": a name must read as what it is.
        return "must not contain invisible formatting characters (bidi overrides, zero-width)"
    if any(part in {"", ".", ".."} for part in path.split("/")):
        return "must not contain empty, '.' or '..' segments"
    decoded = unquote(path)
    if decoded != path and (
        "\\" in decoded
        or decoded.count("/") != path.count("/")
        or any(part in {".", ".."} for part in decoded.split("/"))
    ):
        # A client or proxy that decodes once more would see another path ("%2e%2e/x": "../x").
        return "must not contain percent-encoded '.', '..', '/' or '\\'"
    if PurePosixPath(path).parts[0].startswith(".git"):
        return "must not be inside .git"
    return None
