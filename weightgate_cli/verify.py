"""Signatures and the download manifest: fetch a version's OpenSSF Model Signing bundle(s) and
the key that signed them, check digests against them, record everything in
`DIR/.weightgate/manifest.json`, and (`weightgate verify DIR`) re-check a folder later, offline.
"""

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from weightgate_cli.catalog import MANIFEST_DIR, version_and_files
from weightgate_cli.client import Api
from weightgate_cli.console import Console
from weightgate_cli.errors import UsageError, VerificationError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "weightgate.download/v1"
WHOLE_VERSION = "*"


@dataclass(frozen=True)
class SavedSignature:
    artifact: str  # "*" for the whole version's signature
    kid: str
    public_pem: str
    bundle: dict[str, Any]


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _key_pem(api: Api, kid: str) -> str:
    for key in api.pages("/api/v1/signing-keys/", what="list signing keys"):
        if isinstance(key, dict) and key.get("kid") == kid:
            pem = key.get("public_pem")
            if isinstance(pem, str) and pem:
                return pem
    raise VerificationError(
        f"the signing key {kid!r} is not published at {api.endpoint}/api/v1/signing-keys/"
    )


def signatures_fetch(
    api: Api,
    repo_id: str,
    commit: str,
    *,
    artifacts: Iterable[str],
    public_key: str | None = None,
) -> list[SavedSignature]:
    """The whole version's signature, or, when the caller may not see every artifact (404),
    one per artifact. With `public_key`, that pinned key is used instead of the published one."""
    path = api.version_path(repo_id, commit) + "signature"
    what = f"signature of {repo_id}@{commit[:12]}"
    response = api.request(path, what=what, allow=(404,))
    answers: list[tuple[str, Any]] = []
    if response.status_code != 404:
        answers.append((WHOLE_VERSION, response))
    else:
        for artifact in sorted(set(artifacts)):
            answers.append(
                (
                    artifact,
                    api.request(path, what=f"{what} ({artifact})", params={"artifact": artifact}),
                )
            )
    pems: dict[str, str] = {}
    signatures = []
    for artifact, answer in answers:
        kid = answer.headers.get("X-Signing-Key-Id", "")
        if not kid and public_key is None:
            raise VerificationError(f"{what}: the server did not say which key signed it")
        try:
            bundle = answer.json()
        except ValueError as error:
            raise VerificationError(f"{what}: the signature is not JSON") from error
        if public_key is not None:
            pem = public_key
        else:
            pem = pems.get(kid) or _key_pem(api, kid)
            pems[kid] = pem
        signatures.append(SavedSignature(artifact, kid or "pinned", pem, bundle))
    return signatures


def signed_digests(signatures: list[SavedSignature]) -> dict[str, str]:
    """Every (path → sha256) the bundles sign, after checking each bundle against its key."""
    # Imported here: `cryptography` is ~15 ms of start-up, and `weightgate download` verifies on
    # a side thread while the bytes flow.
    from release.signature_format import SignatureError, signature_verify

    signed: dict[str, str] = {}
    for saved in signatures:
        try:
            pairs = signature_verify(saved.bundle, saved.public_pem)
        except SignatureError as error:
            label = "the version" if saved.artifact == WHOLE_VERSION else saved.artifact
            raise VerificationError(
                f"the signature of {label} does not verify: {error.message}"
            ) from error
        for path, digest in pairs:
            if signed.setdefault(path, digest) != digest:
                raise VerificationError(f"two signatures disagree about {path}")
    return signed


def digest_problems(signed: dict[str, str], digests: dict[str, str]) -> list[str]:
    """What does not match the signed digests: files they do not list, or list otherwise."""
    problems = []
    for path, digest in sorted(digests.items()):
        if path not in signed:
            problems.append(f"{path}: not covered by the signature")
        elif signed[path] != digest:
            problems.append(f"{path}: sha256 {digest} is not the signed {signed[path]}")
    return problems


def signatures_check(signed: dict[str, str], digests: dict[str, str]) -> None:
    problems = digest_problems(signed, digests)
    if problems:
        raise VerificationError(
            "signature verification failed; the files were kept as .part and not published:\n  "
            + "\n  ".join(problems)
        )


# --- the manifest ------------------------------------------------------------------------------


def manifest_path(directory: Path) -> Path:
    return directory / MANIFEST_DIR / MANIFEST_NAME


def manifest_load(directory: Path) -> dict[str, Any] | None:
    path = manifest_path(directory)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise VerificationError(f"cannot read {path}: {error}") from error
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise VerificationError(f"{path} is not a weightgate download manifest")
    return data


def manifest_write(
    directory: Path,
    *,
    endpoint: str,
    model: str,
    revision: str,
    commit: str,
    files: list[dict[str, Any]],
    signatures: list[SavedSignature],
) -> Path:
    """Record what was downloaded. Another download of the same commit into the same folder
    (other --include patterns) adds to it; a different version replaces it."""
    previous = manifest_load(directory) if manifest_path(directory).exists() else None
    by_path = {f["path"]: f for f in files}
    saved = {s.artifact: asdict(s) for s in signatures}
    if previous and previous.get("model") == model and previous.get("commit") == commit:
        by_path = {f["path"]: f for f in previous.get("files", [])} | by_path
        saved = {s["artifact"]: s for s in previous.get("signatures", [])} | saved
    manifest = {
        "format": MANIFEST_FORMAT,
        "endpoint": endpoint,
        "model": model,
        "revision": revision,
        "commit": commit,
        "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": [by_path[path] for path in sorted(by_path)],
        "signatures": [saved[artifact] for artifact in sorted(saved)],
    }
    path = manifest_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(temporary, path)
    return path


# --- weightgate verify DIR -----------------------------------------------------------------------


def _files_on_disk(directory: Path) -> set[str]:
    found = set()
    for root, dirs, names in os.walk(directory):
        relative = Path(root).relative_to(directory)
        if relative == Path("."):
            dirs[:] = [d for d in dirs if d != MANIFEST_DIR]
        for name in names:
            found.add((relative / name).as_posix())
    return found


def _remote_manifest(api: Api, repo_id: str, revision: str | None) -> dict[str, Any]:
    """What a folder fetched some other way (e.g. with huggingface_hub) should hold."""
    version, files = version_and_files(api, repo_id, revision)
    commit = str(version["commit"])
    signatures = signatures_fetch(
        api, repo_id, commit, artifacts={f.artifact for f in files if f.artifact}
    )
    return {
        "model": repo_id,
        "revision": version.get("name") or commit,
        "commit": commit,
        "files": [asdict(f) for f in files],
        "signatures": [asdict(s) for s in signatures],
    }


def verify_folder(
    directory: Path,
    *,
    console: Console,
    model: str | None = None,
    revision: str | None = None,
    api: Api | None = None,
    public_key: str | None = None,
    allow_extra: bool = False,
    workers: int = 4,
) -> int:
    """Re-hash every file of a downloaded folder and compare with the manifest and the saved
    signature. Returns 0, or raises VerificationError listing every problem."""
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a folder")
    manifest = manifest_load(directory)
    if manifest is None:
        if model is None or api is None:
            raise UsageError(
                f"{directory} has no {MANIFEST_DIR}/{MANIFEST_NAME} (it was not downloaded with "
                "`weightgate download`); pass --model org/name [--revision REV] to check it "
                "against the server"
            )
        manifest = _remote_manifest(api, model, revision)
    else:
        if model is not None and manifest.get("model") != model:
            raise VerificationError(f"{directory} holds {manifest.get('model')}, not {model}")
        if revision is not None and revision not in (
            manifest.get("revision"),
            manifest.get("commit"),
        ):
            raise VerificationError(
                f"{directory} holds {manifest.get('model')}@{manifest.get('revision')} "
                f"({manifest.get('commit')}), not revision {revision!r}"
            )
    try:
        expected = {str(f["path"]): str(f["sha256"]) for f in manifest["files"]}
        signatures = [SavedSignature(**s) for s in manifest.get("signatures", [])]
    except (KeyError, TypeError) as error:
        raise VerificationError(f"the manifest of {directory} is damaged: {error}") from error
    if public_key is not None:
        signatures = [
            SavedSignature(s.artifact, "pinned", public_key, s.bundle) for s in signatures
        ]
    for path in expected:
        if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
            raise VerificationError(f"the manifest lists an unsafe path {path!r}")

    on_disk = _files_on_disk(directory)
    missing = sorted(set(expected) - on_disk)
    extra = sorted(on_disk - set(expected))
    present = sorted(set(expected) & on_disk)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        actual = dict(
            zip(
                present,
                pool.map(lambda p: sha256_file(directory / Path(*PurePosixPath(p).parts)), present),
                strict=True,
            )
        )
    changed = [p for p in present if actual[p] != expected[p]]

    problems = [f"missing: {p}" for p in missing]
    problems += [f"changed: {p} (sha256 {actual[p]}, expected {expected[p]})" for p in changed]
    if not allow_extra:
        problems += [f"extra: {p} (not part of the release)" for p in extra]
    if signatures:
        # The signature is checked against what is on disk, not against the manifest's copy of
        # the digests: a manifest edited to match a changed file does not hide the change.
        signed = signed_digests(signatures)
        problems += [f"signature: {p}" for p in digest_problems(signed, actual)]
    label = (
        f"{manifest.get('model')}@{manifest.get('revision')} ({str(manifest.get('commit'))[:12]})"
    )
    if problems:
        raise VerificationError(f"{directory} does not match {label}:\n  " + "\n  ".join(problems))
    kids = ", ".join(sorted({s.kid for s in signatures}))
    console.print(
        f"{directory}: {len(present)} files match {label}"
        + (f"; signature verified (key {kids})" if signatures else "; no signature saved")
        + (f"; {len(extra)} extra files ignored" if extra else "")
    )
    if not signatures:
        console.print(
            "warning: downloaded with --no-verify-signature; only the digests were checked"
        )
    return 0
