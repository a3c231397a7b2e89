"""Version signatures are OpenSSF Model Signing bundles: the upstream `model_signing verify key`
accepts them for the exact files they list and refuses any change, and our own verifier agrees."""

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from config.errors import DomainError, NotAllowed
from licensing.keys import signing_key_ensure, signing_key_retire, signing_key_rotate
from release.model_signing import (
    IGNORE_PATHS,
    SignatureInvalid,
    signature_bundle,
    signature_verify,
)
from release.sample_weights import sample_model_files, sample_tokenizer_files

MODEL_SIGNING = Path(sys.executable).with_name("model_signing")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A real model folder: safetensors shards, their index, a config, and a nested tokenizer."""
    folder = tmp_path / "tiny"
    files = sample_model_files() | {
        f"tokenizer/{name}": body for name, body in sample_tokenizer_files().items()
    }
    for name, body in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return folder


@pytest.fixture
def models_key(db):
    return signing_key_ensure(purpose="models")


def digests(folder: Path) -> list[tuple[str, str]]:
    """What ingest knows about each file; the signing code itself never reads a file."""
    return [
        (path.relative_to(folder).as_posix(), hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]


def write_signature(tmp_path: Path, bundle: dict[str, Any], public_pem: str) -> tuple[Path, Path]:
    """The signature and key go beside the model folder, not inside it."""
    signature = tmp_path / "signature" / "model.sig"
    signature.parent.mkdir(exist_ok=True)
    signature.write_text(json.dumps(bundle))
    public_key = tmp_path / "signature" / "public.pem"
    public_key.write_text(public_pem)
    return signature, public_key


def upstream_verify(folder: Path, signature: Path, public_key: Path):
    return subprocess.run(
        [
            str(MODEL_SIGNING),
            "verify",
            "key",
            str(folder),
            "--signature",
            str(signature),
            "--public_key",
            str(public_key),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def signed(folder: Path, tmp_path: Path, key) -> tuple[Path, Path]:
    bundle = signature_bundle(model_name="acme/tiny", entries=digests(folder), key=key)
    return write_signature(tmp_path, bundle, key.public_pem)


def payload_of(bundle: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def test_upstream_verifier_accepts_our_signature(model_dir, tmp_path, models_key):
    signature, public_key = signed(model_dir, tmp_path, models_key)

    result = upstream_verify(model_dir, signature, public_key)

    assert result.returncode == 0, result.stderr
    assert "Verification succeeded" in result.stdout


@pytest.mark.django_db
def test_upstream_verifier_accepts_a_p384_signature(model_dir, tmp_path):
    key = signing_key_rotate(purpose="models", actor=None, curve="P-384")
    signature, public_key = signed(model_dir, tmp_path, key)

    result = upstream_verify(model_dir, signature, public_key)

    assert key.algorithm == "ES384"
    assert result.returncode == 0, result.stderr


def test_upstream_verifier_refuses_a_flipped_byte(model_dir, tmp_path, models_key):
    signature, public_key = signed(model_dir, tmp_path, models_key)
    shard = model_dir / "model-00001-of-00002.safetensors"
    body = bytearray(shard.read_bytes())
    body[len(body) // 2] ^= 0x01
    shard.write_bytes(bytes(body))

    result = upstream_verify(model_dir, signature, public_key)

    assert result.returncode != 0
    assert "Hash mismatch for 'model-00001-of-00002.safetensors'" in result.stderr


def test_upstream_verifier_refuses_a_missing_file(model_dir, tmp_path, models_key):
    signature, public_key = signed(model_dir, tmp_path, models_key)
    (model_dir / "tokenizer" / "tokenizer.json").unlink()

    result = upstream_verify(model_dir, signature, public_key)

    assert result.returncode != 0
    assert "Missing files in model" in result.stderr
    assert "tokenizer/tokenizer.json" in result.stderr


def test_upstream_verifier_refuses_an_unsigned_extra_file(model_dir, tmp_path, models_key):
    signature, public_key = signed(model_dir, tmp_path, models_key)
    (model_dir / "extra.bin").write_bytes(b"not signed")

    result = upstream_verify(model_dir, signature, public_key)

    assert result.returncode != 0
    assert "Extra files found in model" in result.stderr


def test_upstream_verifier_refuses_another_public_key(model_dir, tmp_path, models_key):
    signature, _ = signed(model_dir, tmp_path, models_key)
    other = signing_key_ensure(purpose="grants")
    other_pem = tmp_path / "other.pem"
    other_pem.write_text(other.public_pem)

    result = upstream_verify(model_dir, signature, other_pem)

    assert result.returncode != 0
    assert "Key mismatch" in result.stderr


def test_signature_file_inside_the_model_folder_is_ignored_by_the_verifier(
    model_dir, tmp_path, models_key
):
    """`verify key` leaves out the signature file itself when it sits in the folder."""
    bundle = signature_bundle(model_name="acme/tiny", entries=digests(model_dir), key=models_key)
    signature = model_dir / "model.sig"
    signature.write_text(json.dumps(bundle))
    public_key = tmp_path / "public.pem"
    public_key.write_text(models_key.public_pem)

    assert upstream_verify(model_dir, signature, public_key).returncode == 0


def test_statement_is_what_model_signing_sign_writes(model_dir, tmp_path, models_key):
    """Signed by the upstream tool with a throwaway key, the same folder gives the same in-toto
    statement (up to the order of ignore_paths, which upstream takes from a set)."""
    # Names whose order by path components differs from their order as strings.
    (model_dir / "original").mkdir()
    (model_dir / "original" / "params.json").write_text("{}")
    (model_dir / "original.md").write_text("notes")
    throwaway = tmp_path / "throwaway.pem"
    throwaway.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    upstream_signature = tmp_path / "upstream.sig"
    subprocess.run(
        [
            str(MODEL_SIGNING),
            "sign",
            "key",
            str(model_dir),
            "--signature",
            str(upstream_signature),
            "--private_key",
            str(throwaway),
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    upstream = json.loads(upstream_signature.read_text())

    ours = signature_bundle(model_name=model_dir.name, entries=digests(model_dir), key=models_key)

    theirs_statement = payload_of(upstream)
    theirs_statement["predicate"]["serialization"]["ignore_paths"].sort()
    assert payload_of(ours) == theirs_statement
    assert ours.keys() == upstream.keys()
    assert ours["verificationMaterial"].keys() == upstream["verificationMaterial"].keys()
    assert ours["dsseEnvelope"].keys() == upstream["dsseEnvelope"].keys()
    assert ours["dsseEnvelope"]["signatures"][0].keys() == {"sig", "keyid"}


def test_resources_are_ordered_by_path_components(models_key):
    entries = [
        ("a.b", "1" * 64),
        ("a-b", "2" * 64),
        ("a/b", "3" * 64),
        ("B", "4" * 64),
    ]

    bundle = signature_bundle(model_name="m", entries=entries, key=models_key)

    statement = payload_of(bundle)
    names = [resource["name"] for resource in statement["predicate"]["resources"]]
    assert names == ["B", "a/b", "a-b", "a.b"]
    root = hashlib.sha256(bytes.fromhex("4" * 64 + "3" * 64 + "2" * 64 + "1" * 64)).hexdigest()
    assert statement["subject"] == [{"name": "m", "digest": {"sha256": root}}]
    assert statement["predicate"]["serialization"] == {
        "method": "files",
        "hash_type": "sha256",
        "allow_symlinks": False,
        "ignore_paths": IGNORE_PATHS,
    }


def test_bundle_names_the_public_key_by_the_hash_of_its_pem(models_key):
    bundle = signature_bundle(model_name="m", entries=[("f", "0" * 64)], key=models_key)

    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["verificationMaterial"] == {
        "publicKey": {"hint": hashlib.sha256(models_key.public_pem.encode()).hexdigest()},
        "tlogEntries": [],
    }
    assert bundle["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"


def test_our_verifier_returns_the_signed_files(model_dir, models_key):
    entries = digests(model_dir)
    bundle = signature_bundle(model_name="acme/tiny", entries=entries, key=models_key)

    assert sorted(signature_verify(bundle, models_key.public_pem)) == sorted(entries)


@pytest.mark.django_db
def test_our_verifier_accepts_a_p384_bundle():
    key = signing_key_rotate(purpose="models", actor=None, curve="P-384")
    bundle = signature_bundle(model_name="m", entries=[("f", "0" * 64)], key=key)

    assert signature_verify(bundle, key.public_pem.encode()) == [("f", "0" * 64)]


def test_our_verifier_refuses_a_tampered_payload(models_key):
    bundle = signature_bundle(model_name="m", entries=[("f", "0" * 64)], key=models_key)
    statement = payload_of(bundle)
    statement["predicate"]["resources"][0]["digest"] = "1" * 64
    tampered = json.dumps(statement, indent=2).encode()
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(tampered).decode()

    with pytest.raises(SignatureInvalid, match="signature does not match"):
        signature_verify(bundle, models_key.public_pem)


def test_our_verifier_refuses_a_tampered_signature(models_key):
    bundle = signature_bundle(model_name="m", entries=[("f", "0" * 64)], key=models_key)
    sig = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 0x01
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()

    with pytest.raises(SignatureInvalid, match="signature does not match"):
        signature_verify(bundle, models_key.public_pem)


def test_our_verifier_refuses_another_key_and_malformed_bundles(models_key):
    bundle = signature_bundle(model_name="m", entries=[("f", "0" * 64)], key=models_key)
    other = signing_key_ensure(purpose="grants")

    with pytest.raises(SignatureInvalid, match="signed with another key"):
        signature_verify(bundle, other.public_pem)
    with pytest.raises(SignatureInvalid, match="not a signature bundle"):
        signature_verify({"mediaType": bundle["mediaType"]}, models_key.public_pem)
    with pytest.raises(SignatureInvalid, match="not a PEM public key"):
        signature_verify(bundle, "not a key")
    bundle["dsseEnvelope"]["payload"] = "%%%"
    with pytest.raises(SignatureInvalid, match="payload is not valid base64"):
        signature_verify(bundle, models_key.public_pem)


def test_our_verifier_accepts_what_model_signing_sign_writes(model_dir, tmp_path):
    private_key = ec.generate_private_key(ec.SECP384R1())
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    signature = tmp_path / "upstream.sig"
    subprocess.run(
        [
            str(MODEL_SIGNING),
            "sign",
            "key",
            str(model_dir),
            "--signature",
            str(signature),
            "--private_key",
            str(key_file),
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    files = signature_verify(json.loads(signature.read_text()), public_pem)

    assert sorted(files) == sorted(digests(model_dir))


def test_signing_refuses_bad_entries(models_key):
    with pytest.raises(DomainError, match="sha256 must be 64 lowercase hex digits"):
        signature_bundle(model_name="m", entries=[("f", "ABC")], key=models_key)
    with pytest.raises(DomainError, match="must not contain empty, '.' or '..' segments"):
        signature_bundle(model_name="m", entries=[("../f", "0" * 64)], key=models_key)
    with pytest.raises(DomainError, match="must not be inside .git"):
        signature_bundle(model_name="m", entries=[(".git/config", "0" * 64)], key=models_key)
    with pytest.raises(DomainError, match="listed twice"):
        signature_bundle(model_name="m", entries=[("f", "0" * 64)] * 2, key=models_key)
    with pytest.raises(DomainError, match="at least one file"):
        signature_bundle(model_name="m", entries=[], key=models_key)


def test_only_an_active_models_key_signs_versions(models_key):
    grants_key = signing_key_ensure(purpose="grants")
    with pytest.raises(NotAllowed, match="is for grants, not models"):
        signature_bundle(model_name="m", entries=[("f", "0" * 64)], key=grants_key)

    signing_key_retire(key=models_key, actor=None)
    models_key.refresh_from_db()
    with pytest.raises(NotAllowed, match="is retired"):
        signature_bundle(model_name="m", entries=[("f", "0" * 64)], key=models_key)
