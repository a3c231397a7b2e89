"""Version signatures in the OpenSSF Model Signing format, as `model_signing verify key` reads it.

Matched against the sources of PyPI `model-signing` 1.1.1:

- `_signing/signing.py` (`Payload`, `dsse_payload_to_manifest`): an in-toto Statement v1 whose
  predicate lists every file as `{"name", "algorithm": "sha256", "digest"}`, in the order of
  `manifest.Manifest.resource_descriptors()` (sorted by `PurePosixPath`, i.e. by path parts), and
  whose one subject digest is the sha256 of the raw file digests concatenated in that order;
- `manifest._FileSerialization` and `_serialization/file.py`: the `serialization` record, with the
  `ignore_paths` that `model_signing sign` writes by default when the signature is kept outside
  the model folder (the git paths from `hashing.Config.hash`). A verifier skips these paths;
- `_signing/sign_ec_key.py` and `sign_sigstore_pb.py`: a Sigstore bundle v0.3 whose DSSE envelope
  carries a DER ECDSA signature over the DSSE pre-authentication encoding (SHA-256 for P-256,
  SHA-384 for P-384), `publicKey.hint` = sha256 hex of the public key PEM, no tlog entries.

The bundle is built from digests already known (computed at ingest): no file is read here.
"""

import base64
import binascii
import hashlib
import json
import re
from pathlib import PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from config.errors import DomainError, NotAllowed
from licensing.keys import signing_key_private
from licensing.models import SigningKey
from release.manifests import file_path_validate

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# What `model_signing sign` records by default (it writes them in set order; sorted here so the
# same files always give the same payload). Our file paths never start with .git.
IGNORE_PATHS = [".git", ".gitattributes", ".github", ".gitignore"]
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class SignatureInvalid(DomainError):
    """A signature bundle that does not verify or does not say what a model signature says."""

    code = "signature_invalid"


def _pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed."""
    payload_type = PAYLOAD_TYPE.encode()
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(payload), payload)


def _hash_for(public_key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    # The hash follows the curve size, as `sign_ec_key.get_ec_key_hash` expects.
    if isinstance(public_key.curve, ec.SECP256R1):
        return hashes.SHA256()
    if isinstance(public_key.curve, ec.SECP384R1):
        return hashes.SHA384()
    raise SignatureInvalid(f"unsupported curve {public_key.curve.name}; use P-256 or P-384")


def _pem_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def _resources(entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Validated (path, digest) pairs in the verifier's canonical order."""
    seen: set[str] = set()
    for path, digest in entries:
        file_path_validate(path)
        if not _SHA256_HEX.fullmatch(digest):
            raise DomainError(
                f"file {path!r}: sha256 must be 64 lowercase hex digits", code="invalid_digest"
            )
        if path in seen:
            raise DomainError(f"file {path!r} is listed twice", code="duplicate_path")
        seen.add(path)
    # By path components, not by string: "a/b" sorts before "a-b" and "a.b".
    return sorted(entries, key=lambda entry: PurePosixPath(entry[0]).parts)


def _statement(*, model_name: str, resources: list[tuple[str, str]]) -> dict[str, Any]:
    root = hashlib.sha256(b"".join(bytes.fromhex(digest) for _, digest in resources))
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": root.hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": IGNORE_PATHS,
            },
            "resources": [
                {"name": path, "algorithm": "sha256", "digest": digest}
                for path, digest in resources
            ],
        },
    }


def signature_bundle(
    *, model_name: str, entries: list[tuple[str, str]], key: SigningKey
) -> dict[str, Any]:
    """Sign the files `entries` ((path, sha256 hex) pairs) of a model with a service key.

    Written to a file with `json.dump`, the result verifies with
    `model_signing verify key DIR --signature FILE --public_key PEM` against a folder holding
    exactly these files. `model_name` is informative only (the verifier ignores it).
    """
    if key.purpose != SigningKey.Purpose.MODELS:
        raise NotAllowed(f"key {key.kid} is for {key.purpose}, not models", code="wrong_key")
    if key.state != SigningKey.State.ACTIVE:
        raise NotAllowed(f"key {key.kid} is retired and signs nothing new", code="not_active")
    resources = _resources(entries)
    if not resources:
        raise DomainError("a model signature needs at least one file", code="empty_signature")
    statement = _statement(model_name=model_name, resources=resources)
    payload = json.dumps(statement, indent=2, ensure_ascii=False).encode()
    private_key = signing_key_private(key)
    public_key = private_key.public_key()
    signature = private_key.sign(_pae(payload), ec.ECDSA(_hash_for(public_key)))
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": _pem_hint(public_key)}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}],
        },
    }


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureInvalid(f"{what} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise SignatureInvalid(f"{what} is not valid base64") from error


def signature_verify(bundle: dict[str, Any], public_pem: str | bytes) -> list[tuple[str, str]]:
    """Check a bundle made by `signature_bundle` (or `model_signing sign key`) against a public
    key and return the signed (path, sha256 hex) pairs. Raises SignatureInvalid on any mismatch;
    the caller still has to compare the returned digests with the files it has."""
    try:
        public_key = serialization.load_pem_public_key(
            public_pem.encode() if isinstance(public_pem, str) else public_pem
        )
    except ValueError as error:
        raise SignatureInvalid("the public key is not a PEM public key") from error
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise SignatureInvalid("the public key is not an ECDSA key")
    try:
        media_type = bundle["mediaType"]
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
        envelope = bundle["dsseEnvelope"]
        payload_type = envelope["payloadType"]
        signatures = envelope["signatures"]
    except (KeyError, TypeError) as error:
        raise SignatureInvalid(f"not a signature bundle: missing {error}") from error
    if media_type != BUNDLE_MEDIA_TYPE:
        raise SignatureInvalid(f"media type {media_type!r} is not {BUNDLE_MEDIA_TYPE}")
    if hint != _pem_hint(public_key):
        raise SignatureInvalid("the bundle was signed with another key than this public key")
    if payload_type != PAYLOAD_TYPE:
        raise SignatureInvalid(f"payload type {payload_type!r} is not {PAYLOAD_TYPE}")
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise SignatureInvalid("the envelope must carry exactly one signature")
    payload = _b64(envelope.get("payload"), "the payload")
    signature = _b64(signatures[0].get("sig") if isinstance(signatures[0], dict) else None, "sig")
    try:
        public_key.verify(signature, _pae(payload), ec.ECDSA(_hash_for(public_key)))
    except InvalidSignature as error:
        raise SignatureInvalid("the signature does not match the payload and key") from error
    return _statement_resources(payload)


def _statement_resources(payload: bytes) -> list[tuple[str, str]]:
    """The files a signed payload lists, after checking it is a model signature statement."""
    try:
        statement = json.loads(payload)
        subjects = statement["subject"]
        predicate = statement["predicate"]
        serialization_ = predicate["serialization"]
        resources = [
            (item["name"], item["digest"], item["algorithm"]) for item in predicate["resources"]
        ]
        (subject,) = subjects
        root = subject["digest"]["sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise SignatureInvalid(
            f"the payload is not a model signature statement: {error}"
        ) from error
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise SignatureInvalid(f"the payload is not a {PREDICATE_TYPE} statement")
    if serialization_.get("method") != "files" or serialization_.get("hash_type") != "sha256":
        raise SignatureInvalid("only whole-file sha256 signatures are supported")
    if any(
        algorithm != "sha256" or not isinstance(name, str) or not isinstance(digest, str)
        for name, digest, algorithm in resources
    ):
        raise SignatureInvalid("every resource must be a file path with a sha256 digest")
    try:
        pairs = _resources([(name, digest) for name, digest, _ in resources])
    except DomainError as error:
        raise SignatureInvalid(f"the payload lists a bad resource: {error.message}") from error
    # Recomputed over the listed order, as the upstream verifier does.
    listed = b"".join(bytes.fromhex(digest) for _, digest, _ in resources)
    if hashlib.sha256(listed).hexdigest() != root:
        raise SignatureInvalid("the subject digest does not match the listed files")
    return pairs
