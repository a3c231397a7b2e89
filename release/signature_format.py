"""The OpenSSF Model Signing bundle format, without Django: build the signed statement and
verify a bundle against a public key. `release.model_signing` signs with the service's keys on
top of this; the `weightgate` CLI verifies downloads with it and needs only `cryptography`.

See `release.model_signing` for how the format was matched against `model_signing` 1.1.1.
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

from release.file_paths import file_path_problem

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# What `model_signing sign` records by default (it writes them in set order; sorted here so the
# same files always give the same payload). Our file paths never start with .git.
IGNORE_PATHS = [".git", ".gitattributes", ".github", ".gitignore"]
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class SignatureError(ValueError):
    """A bundle that does not verify, or entries that cannot be signed; `code` says which."""

    def __init__(self, message: str, *, code: str = "signature_invalid") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed."""
    payload_type = PAYLOAD_TYPE.encode()
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(payload), payload)


def hash_for(public_key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    # The hash follows the curve size, as `sign_ec_key.get_ec_key_hash` expects.
    if isinstance(public_key.curve, ec.SECP256R1):
        return hashes.SHA256()
    if isinstance(public_key.curve, ec.SECP384R1):
        return hashes.SHA384()
    raise SignatureError(f"unsupported curve {public_key.curve.name}; use P-256 or P-384")


def pem_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def resources_ordered(entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Validated (path, digest) pairs in the verifier's canonical order."""
    seen: set[str] = set()
    for path, digest in entries:
        problem = file_path_problem(path)
        if problem:
            raise SignatureError(f"file path {path!r} {problem}", code="invalid_path")
        if not _SHA256_HEX.fullmatch(digest):
            raise SignatureError(
                f"file {path!r}: sha256 must be 64 lowercase hex digits", code="invalid_digest"
            )
        if path in seen:
            raise SignatureError(f"file {path!r} is listed twice", code="duplicate_path")
        seen.add(path)
    # By path components, not by string: "a/b" sorts before "a-b" and "a.b".
    return sorted(entries, key=lambda entry: PurePosixPath(entry[0]).parts)


def statement(*, model_name: str, resources: list[tuple[str, str]]) -> dict[str, Any]:
    """The in-toto statement over `resources`, already in canonical order."""
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


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"{what} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise SignatureError(f"{what} is not valid base64") from error


def signature_verify(bundle: Any, public_pem: str | bytes) -> list[tuple[str, str]]:
    """Check a model signature bundle against a public key and return the signed
    (path, sha256 hex) pairs. Raises SignatureError on any mismatch; the caller still has to
    compare the returned digests with the files it has."""
    try:
        public_key = serialization.load_pem_public_key(
            public_pem.encode() if isinstance(public_pem, str) else public_pem
        )
    except ValueError as error:
        raise SignatureError("the public key is not a PEM public key") from error
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise SignatureError("the public key is not an ECDSA key")
    try:
        media_type = bundle["mediaType"]
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
        envelope = bundle["dsseEnvelope"]
        payload_type = envelope["payloadType"]
        signatures = envelope["signatures"]
    except (KeyError, TypeError) as error:
        raise SignatureError(f"not a signature bundle: missing {error}") from error
    if media_type != BUNDLE_MEDIA_TYPE:
        raise SignatureError(f"media type {media_type!r} is not {BUNDLE_MEDIA_TYPE}")
    if hint != pem_hint(public_key):
        raise SignatureError("the bundle was signed with another key than this public key")
    if payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"payload type {payload_type!r} is not {PAYLOAD_TYPE}")
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise SignatureError("the envelope must carry exactly one signature")
    payload = _b64(envelope.get("payload"), "the payload")
    signature = _b64(signatures[0].get("sig") if isinstance(signatures[0], dict) else None, "sig")
    try:
        public_key.verify(signature, pae(payload), ec.ECDSA(hash_for(public_key)))
    except InvalidSignature as error:
        raise SignatureError("the signature does not match the payload and key") from error
    return statement_resources(payload)


def statement_resources(payload: bytes) -> list[tuple[str, str]]:
    """The files a signed payload lists, after checking it is a model signature statement."""
    try:
        statement_ = json.loads(payload)
        subjects = statement_["subject"]
        predicate = statement_["predicate"]
        serialization_ = predicate["serialization"]
        resources = [
            (item["name"], item["digest"], item["algorithm"]) for item in predicate["resources"]
        ]
        (subject,) = subjects
        root = subject["digest"]["sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise SignatureError(f"the payload is not a model signature statement: {error}") from error
    if (
        statement_.get("_type") != STATEMENT_TYPE
        or statement_.get("predicateType") != PREDICATE_TYPE
    ):
        raise SignatureError(f"the payload is not a {PREDICATE_TYPE} statement")
    if serialization_.get("method") != "files" or serialization_.get("hash_type") != "sha256":
        raise SignatureError("only whole-file sha256 signatures are supported")
    if any(
        algorithm != "sha256" or not isinstance(name, str) or not isinstance(digest, str)
        for name, digest, algorithm in resources
    ):
        raise SignatureError("every resource must be a file path with a sha256 digest")
    try:
        pairs = resources_ordered([(name, digest) for name, digest, _ in resources])
    except SignatureError as error:
        raise SignatureError(f"the payload lists a bad resource: {error.message}") from error
    # Recomputed over the listed order, as the upstream verifier does.
    listed = b"".join(bytes.fromhex(digest) for _, digest, _ in resources)
    if hashlib.sha256(listed).hexdigest() != root:
        raise SignatureError("the subject digest does not match the listed files")
    return pairs
