"""Where the CLI keeps the endpoint and token, and which one wins.

The file is `$WEIGHTGATE_CONFIG`, else `$XDG_CONFIG_HOME/weightgate/config.json`, else
`~/.config/weightgate/config.json`; it holds a secret, so it is created 0600 (never world-readable,
not even for an instant) and its mode is corrected if someone loosened it. Precedence: a flag,
then `WEIGHTGATE_TOKEN` / `WEIGHTGATE_ENDPOINT`, then the file.
"""

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightgate_cli.errors import CliError, UsageError

TOKEN_PREFIX = "wg_"  # noqa: S105 (a prefix, not a secret)


def config_path() -> Path:
    override = os.environ.get("WEIGHTGATE_CONFIG")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "weightgate" / "config.json"


def config_load(path: Path | None = None) -> dict[str, Any]:
    """The saved settings ({} when there are none). Tightens a file readable by others."""
    path = path or config_path()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        path.chmod(0o600)
        print(
            f"weightgate: {path} was readable by others (mode {stat.S_IMODE(mode):o}); "
            "set it to 600. If others could read it, revoke that token and create a new one.",
            file=sys.stderr,
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CliError(f"cannot read {path}: {error}") from error
    if not isinstance(data, dict):
        raise CliError(f"{path} is not a JSON object; remove it and run `weightgate login`")
    return data


def config_save(data: dict[str, Any], path: Path | None = None) -> Path:
    """Write atomically: a 0600 temporary file beside it, then rename over."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # O_EXCL: never write the secret through a file (or symlink) someone else put there.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if hasattr(os, "fchmod"):  # POSIX; on Windows the mode bits mean little
            os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class Credentials:
    endpoint: str
    token: str | None


def endpoint_normalise(endpoint: str) -> str:
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise UsageError(f"the endpoint must be an http(s) URL, not {endpoint!r}")
    return endpoint


def credentials(*, endpoint: str | None = None, token: str | None = None) -> Credentials:
    """The endpoint and token to use: flags, then environment, then the config file."""
    saved = config_load()
    chosen = endpoint or os.environ.get("WEIGHTGATE_ENDPOINT") or saved.get("endpoint")
    if not chosen:
        raise UsageError(
            "no Weightgate endpoint: run `weightgate login`, set WEIGHTGATE_ENDPOINT, "
            "or pass --endpoint"
        )
    chosen = endpoint_normalise(chosen)
    token = token or os.environ.get("WEIGHTGATE_TOKEN") or None
    if token is None and saved.get("token") and saved.get("endpoint") == chosen:
        # The saved token only goes to the server it was saved for, never to another endpoint.
        token = saved["token"]
    if token is not None and not token.startswith(TOKEN_PREFIX):
        raise UsageError(f"a Weightgate token starts with {TOKEN_PREFIX}; check WEIGHTGATE_TOKEN")
    return Credentials(endpoint=chosen, token=token)
