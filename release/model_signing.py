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
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from config.errors import DomainError, NotAllowed
from licensing.keys import signing_key_private
from licensing.models import SigningKey

# The format itself lives in a module without Django, shared with the `weightgate` CLI; these
# names stay importable from here.
from release import signature_format
from release.signature_format import BUNDLE_MEDIA_TYPE as BUNDLE_MEDIA_TYPE
from release.signature_format import IGNORE_PATHS as IGNORE_PATHS
from release.signature_format import PAYLOAD_TYPE as PAYLOAD_TYPE
from release.signature_format import PREDICATE_TYPE as PREDICATE_TYPE
from release.signature_format import STATEMENT_TYPE as STATEMENT_TYPE
from release.signature_format import SignatureError


class SignatureInvalid(DomainError):
    """A signature bundle that does not verify or does not say what a model signature says."""

    code = "signature_invalid"


def _resources(entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Validated (path, digest) pairs in the verifier's canonical order."""
    try:
        return signature_format.resources_ordered(entries)
    except SignatureError as error:
        raise DomainError(error.message, code=error.code) from error


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
    statement = signature_format.statement(model_name=model_name, resources=resources)
    payload = json.dumps(statement, indent=2, ensure_ascii=False).encode()
    private_key = signing_key_private(key)
    public_key = private_key.public_key()
    try:
        algorithm = signature_format.hash_for(public_key)
    except SignatureError as error:
        raise SignatureInvalid(error.message) from error
    signature = private_key.sign(signature_format.pae(payload), ec.ECDSA(algorithm))
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": signature_format.pem_hint(public_key)},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}],
        },
    }


def signature_verify(bundle: dict[str, Any], public_pem: str | bytes) -> list[tuple[str, str]]:
    """Check a bundle made by `signature_bundle` (or `model_signing sign key`) against a public
    key and return the signed (path, sha256 hex) pairs. Raises SignatureInvalid on any mismatch;
    the caller still has to compare the returned digests with the files it has."""
    try:
        return signature_format.signature_verify(bundle, public_pem)
    except SignatureError as error:
        raise SignatureInvalid(error.message) from error
