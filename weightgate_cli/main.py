"""The `weightgate` command line: argument parsing, then one function per command. Exit status:
0 ok, 1 other failure, 2 usage, 3 authentication or access refused, 4 not found, 5 verification
failed, 130 interrupted."""

import argparse
import getpass
import os
from collections.abc import Sequence
from pathlib import Path

from weightgate_cli.catalog import repo_id_check
from weightgate_cli.client import Api
from weightgate_cli.config import (
    TOKEN_PREFIX,
    Credentials,
    config_load,
    config_save,
    credentials,
    endpoint_normalise,
)
from weightgate_cli.console import Console
from weightgate_cli.download import (
    DEFAULT_THRESHOLD,
    Options,
    download,
    size_parse,
)
from weightgate_cli.errors import (
    EXIT_INTERRUPTED,
    EXIT_OTHER,
    AccessError,
    CliError,
    UsageError,
)
from weightgate_cli.verify import verify_folder

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--endpoint", help="Weightgate URL (default: WEIGHTGATE_ENDPOINT, else the saved login)"
    )
    common.add_argument("-q", "--quiet", action="store_true", help="print only errors")

    parser = argparse.ArgumentParser(
        prog="weightgate",
        description="Download and verify model weights released with Weightgate.",
        epilog="Exit status: 0 ok, 1 error, 2 usage, 3 access refused, 4 not found, "
        "5 verification failed.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser(
        "login", parents=[common], help="save the endpoint and a download token"
    )
    login.add_argument("--token", help="a download token (wg_…); prompted for if not given")

    get = commands.add_parser(
        "download",
        parents=[common],
        help="download a model version, verified",
        description="Download the files of a model version in parallel, resumably, check each "
        "sha256 and the version's signature, then write DIR/.weightgate/manifest.json.",
    )
    get.add_argument("model", help="org/name")
    get.add_argument("--revision", help="version name or commit (default: the newest)")
    get.add_argument(
        "--include", action="append", default=[], metavar="GLOB", help="only matching paths"
    )
    get.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="skip matching paths"
    )
    get.add_argument("--dir", type=Path, help="target folder (default: ./NAME)")
    get.add_argument("--workers", type=int, default=8, help="parallel connections (default 8)")
    get.add_argument("--token", help="a download token (default: WEIGHTGATE_TOKEN or login)")
    get.add_argument(
        "--no-verify-signature",
        action="store_true",
        help="skip the signature check (sha256 of every file is still checked)",
    )
    get.add_argument(
        "--public-key", type=Path, help="verify with this PEM instead of the published key"
    )

    check = commands.add_parser(
        "verify",
        parents=[common],
        help="re-check a downloaded folder",
        description="Re-hash every file of a folder and compare it with the manifest and "
        "signature saved at download time. A folder without a manifest is checked against the "
        "server's listing and signature with --model.",
    )
    check.add_argument("dir", type=Path)
    check.add_argument("--model", help="org/name the folder should hold")
    check.add_argument("--revision", help="version name or commit it should hold")
    check.add_argument("--public-key", type=Path, help="verify with this PEM, not the saved one")
    check.add_argument(
        "--allow-extra", action="store_true", help="do not fail on files outside the release"
    )
    check.add_argument("--token", help="a download token, for --model without a manifest")

    grant = commands.add_parser("grant", help="license grants")
    grant_commands = grant.add_subparsers(dest="grant_command", required=True, metavar="COMMAND")
    grant_check = grant_commands.add_parser(
        "verify",
        parents=[common],
        help="is a grant valid?",
        description="Check a license grant's signature, expiry and revocation against the "
        "service's JWKS and revocation list, or saved copies of them (offline).",
    )
    grant_check.add_argument("grant", help="a file with the grant (.jwt), or - for stdin")
    grant_check.add_argument("--jwks", help="@file with a saved /.well-known/jwks.json")
    grant_check.add_argument(
        "--revocations", help="@file with a saved /.well-known/weightgate-revocations.jwt"
    )
    return parser


def _env_size(name: str) -> int | None:
    raw = os.environ.get(name)
    return size_parse(raw) if raw else None


def _env_flag(name: str, *, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{name} must be 1 or 0 (or true/false, yes/no, on/off), not {raw!r}")


def _read_pem(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as error:
        raise UsageError(f"cannot read the public key {path}: {error}") from error


def command_login(args: argparse.Namespace, console: Console) -> int:
    saved = config_load()
    endpoint = args.endpoint or os.environ.get("WEIGHTGATE_ENDPOINT")
    if not endpoint:
        default = saved.get("endpoint") or DEFAULT_ENDPOINT
        endpoint = input(f"Weightgate endpoint [{default}]: ").strip() or default
    endpoint = endpoint_normalise(endpoint)
    token = args.token or getpass.getpass("Download token (wg_…, input hidden): ").strip()
    if not token.startswith(TOKEN_PREFIX):
        raise UsageError(f"a Weightgate token starts with {TOKEN_PREFIX}; create one in the portal")
    with Api(Credentials(endpoint=endpoint, token=token)) as api:
        me = api.get_json("/api/whoami-v2", what="check the token")
    if not isinstance(me, dict) or not me.get("name"):
        raise AccessError("the server did not accept the token")
    path = config_save({**saved, "endpoint": endpoint, "token": token})
    display = (me.get("auth") or {}).get("accessToken", {}).get("displayName", "")
    console.print(
        f"Logged in to {endpoint} as {me['name']}"
        + (f" (token {display!r})" if display else "")
        + f"; saved in {path}"
    )
    return 0


def command_download(args: argparse.Namespace, console: Console) -> int:
    if args.workers < 1 or args.workers > 64:
        raise UsageError("--workers must be between 1 and 64")
    options = Options(
        repo_id=repo_id_check(args.model),
        revision=args.revision,
        directory=args.dir,
        include=args.include,
        exclude=args.exclude,
        workers=args.workers,
        verify_signature=not args.no_verify_signature,
        public_key=_read_pem(args.public_key),
        chunk_size=_env_size("WEIGHTGATE_CHUNK_SIZE"),
        threshold=_env_size("WEIGHTGATE_PARALLEL_THRESHOLD") or DEFAULT_THRESHOLD,
        direct_io=_env_flag("WEIGHTGATE_DIRECT_IO", default=True),
        quiet=args.quiet,
    )
    found = credentials(endpoint=args.endpoint, token=args.token)
    notice = None if args.quiet else console.print
    with Api(found, notice=notice) as api:
        return download(api, options, console)


def command_verify(args: argparse.Namespace, console: Console) -> int:
    api = None
    if args.model is not None:
        repo_id_check(args.model)
        manifest = args.dir / ".weightgate" / "manifest.json"
        if not manifest.exists():
            api = Api(credentials(endpoint=args.endpoint, token=args.token))
    try:
        return verify_folder(
            args.dir,
            console=Console(quiet=args.quiet),
            model=args.model,
            revision=args.revision,
            api=api,
            public_key=_read_pem(args.public_key),
            allow_extra=args.allow_extra,
        )
    finally:
        if api is not None:
            api.close()


def command_grant_verify(args: argparse.Namespace, console: Console) -> int:
    # Imported here: PyJWT and its X.509 imports would add ~25 ms to every other command's start.
    from weightgate_cli.grant import grant_verify

    return grant_verify(
        args.grant,
        console=Console(quiet=args.quiet),
        endpoint=args.endpoint,
        jwks=args.jwks,
        revocations=args.revocations,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
        return int(exit_.code or 0)
    console = Console(stderr=True, quiet=getattr(args, "quiet", False))
    errors = Console(stderr=True)
    handlers = {
        "login": command_login,
        "download": command_download,
        "verify": command_verify,
        "grant": command_grant_verify,
    }
    try:
        return handlers[args.command](args, console)
    except CliError as error:
        errors.print(f"weightgate: error: {error.message}")
        return error.exit_code
    except KeyboardInterrupt:
        errors.print("weightgate: interrupted; run the same command again to resume")
        return EXIT_INTERRUPTED
    except OSError as error:  # a full disk, a folder we may not write
        errors.print(f"weightgate: error: {error}")
        return EXIT_OTHER
