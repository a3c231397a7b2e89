"""The strict safetensors validator accepts what the reference library writes and loads, and
refuses hostile headers and lying indexes with a message that names the problem.

Hostile files are built by hand: 8-byte little-endian header length, header bytes, data bytes.
"""

import json
import random
import struct
from typing import Any

import numpy as np
import pytest
from safetensors import SafetensorError, deserialize
from safetensors.numpy import load, save

from release.safetensors_check import (
    DTYPE_BITS,
    INDEX_NAME,
    MAX_HEADER_BYTES,
    InvalidWeights,
    SafetensorsHeader,
    header_length,
    header_parse,
    index_check,
    index_parse,
)
from release.sample_weights import sample_model_files

# The dtypes of REFERENCE.md (safetensors 0.8.0), with the bits each element takes.
REFERENCE_DTYPES = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
# Dtypes numpy has, so `safetensors.numpy.load` can load them; the rest go through the
# reference's own parser (`safetensors.deserialize`), which `load` calls first.
NUMPY_DTYPES = {"BOOL", "U8", "I8", "I16", "U16", "F16", "I32", "U32", "F32", "C64", "F64"}
NUMPY_DTYPES |= {"I64", "U64"}

S1 = "model-00001-of-00002.safetensors"
S2 = "model-00002-of-00002.safetensors"


def build(header: dict[str, Any] | bytes, data: bytes = b"") -> bytes:
    """A safetensors file: the header's length as 8 little-endian bytes, the header, the data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def check(data: bytes) -> SafetensorsHeader:
    """The validator as ingest uses it: the length from the first 8 bytes, then the header."""
    n = header_length(data[:8])
    return header_parse(data[8 : 8 + n], header_size=n, file_size=len(data))


def spec(dtype: Any, shape: Any, begin: Any, end: Any) -> dict[str, Any]:
    """A tensor's header entry; any field may be of the wrong type, on purpose."""
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def u8(begin: int, end: int) -> dict[str, Any]:
    """A U8 tensor exactly filling [begin, end)."""
    return spec("U8", [end - begin], begin, end)


def reference_view(data: bytes) -> dict[str, tuple[str, list[int], int]]:
    """What the reference parser sees: name -> (dtype, shape, byte length)."""
    return {
        name: (info["dtype"], info["shape"], len(info["data"])) for name, info in deserialize(data)
    }


def shard_sizes(files: dict[str, bytes], prefix: str = "") -> dict[str, dict[str, int]]:
    """{shard path: {tensor: bytes}} as ingest builds it from the shards' headers."""
    return {
        prefix + path: check(data).tensor_sizes()
        for path, data in files.items()
        if path.endswith(".safetensors")
    }


# --- valid files ------------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 2, 3, 5])
def test_sample_shards_are_accepted_with_the_sizes_the_reference_loads(shards):
    files = sample_model_files(layers=3, hidden=16, shards=shards)
    shard_files = {path: data for path, data in files.items() if path.endswith(".safetensors")}
    assert len(shard_files) == shards

    for data in shard_files.values():
        header = check(data)

        arrays = load(data)
        assert header.tensor_sizes() == {name: array.nbytes for name, array in arrays.items()}
        assert header.metadata == {"format": "pt"}
        assert header.header_size == struct.unpack("<Q", data[:8])[0]
        for name, (dtype, shape, _, _) in header.tensors.items():
            assert shape == arrays[name].shape
            assert dtype in {"F32", "F16"}


@pytest.mark.parametrize(
    ("array", "dtype"),
    [
        pytest.param(np.arange(6, dtype=np.float64).reshape(2, 3), "F64", id="F64"),
        pytest.param(np.arange(6, dtype=np.float32), "F32", id="F32"),
        pytest.param(np.arange(6, dtype=np.float16), "F16", id="F16"),
        pytest.param(np.arange(6, dtype=np.int64), "I64", id="I64"),
        pytest.param(np.arange(6, dtype=np.uint64), "U64", id="U64"),
        pytest.param(np.arange(6, dtype=np.int32), "I32", id="I32"),
        pytest.param(np.arange(6, dtype=np.uint32), "U32", id="U32"),
        pytest.param(np.arange(6, dtype=np.int16), "I16", id="I16"),
        pytest.param(np.arange(6, dtype=np.uint16), "U16", id="U16"),
        pytest.param(np.arange(6, dtype=np.int8), "I8", id="I8"),
        pytest.param(np.arange(6, dtype=np.uint8), "U8", id="U8"),
        pytest.param(np.array([True, False, True]), "BOOL", id="BOOL"),
        pytest.param(np.ones((2, 2), dtype=np.complex64), "C64", id="C64"),
        pytest.param(np.array(1.5, dtype=np.float32), "F32", id="scalar-empty-shape"),
        pytest.param(np.zeros((0, 4), dtype=np.float32), "F32", id="zero-size"),
    ],
)
def test_files_written_by_the_reference_are_accepted(array, dtype):
    data = save({"t": array})

    header = check(data)

    assert header.tensors["t"][:2] == (dtype, array.shape)
    assert header.tensor_sizes() == {"t": array.nbytes}
    np.testing.assert_array_equal(load(data)["t"], array)


@pytest.mark.parametrize("dtype", sorted(REFERENCE_DTYPES))
def test_every_reference_dtype_is_accepted_in_a_raw_header(dtype):
    nbytes = 8 * REFERENCE_DTYPES[dtype] // 8  # shape [2, 4]: whole bytes for every width
    data = build({"t": spec(dtype, [2, 4], 0, nbytes)}, bytes(nbytes))

    header = check(data)

    assert header.tensor_sizes() == {"t": nbytes}
    assert reference_view(data) == {"t": (dtype, [2, 4], nbytes)}
    if dtype in NUMPY_DTYPES:
        assert load(data)["t"].nbytes == nbytes


def test_the_validator_knows_exactly_the_reference_dtypes():
    assert DTYPE_BITS == REFERENCE_DTYPES


@pytest.mark.parametrize(
    ("dtype", "shape", "nbytes"),
    [
        pytest.param("BF16", [3, 2], 12, id="BF16-matrix"),
        pytest.param("BF16", [], 2, id="BF16-scalar"),
        pytest.param("F4", [2], 1, id="F4-two-halves"),
        pytest.param("F4", [2, 3], 3, id="F4-six-elements"),
        pytest.param("F4", [0], 0, id="F4-zero-size"),
        pytest.param("F6_E2M3", [4], 3, id="F6_E2M3-four-elements"),
        pytest.param("F6_E3M2", [2, 2], 3, id="F6_E3M2-two-by-two"),
        pytest.param("F6_E3M2", [8, 0, 3], 0, id="F6-zero-size"),
        pytest.param("F8_E4M3", [3], 3, id="F8-odd-count"),
        pytest.param("F32", [], 4, id="F32-scalar"),
        pytest.param("U8", [0, 5], 0, id="U8-zero-size"),
    ],
)
def test_raw_headers_are_accepted_as_the_reference_reads_them(dtype, shape, nbytes):
    data = build({"t": spec(dtype, shape, 0, nbytes)}, bytes(nbytes))

    header = check(data)

    assert header.tensors == {"t": (dtype, tuple(shape), 0, nbytes)}
    assert header.tensor_sizes() == {"t": nbytes}
    assert reference_view(data) == {"t": (dtype, shape, nbytes)}


@pytest.mark.parametrize(
    ("dtype", "shape", "nbytes"),
    [
        pytest.param("F4", [3], 2, id="F4-three-elements"),
        pytest.param("F4", [], 1, id="F4-scalar-is-half-a-byte"),
        pytest.param("F6_E2M3", [3], 3, id="F6_E2M3-three-elements"),
        pytest.param("F6_E3M2", [1, 5], 4, id="F6_E3M2-five-elements"),
    ],
)
def test_sub_byte_tensors_that_end_inside_a_byte_are_refused_like_the_reference(
    dtype, shape, nbytes
):
    data = build({"t": spec(dtype, shape, 0, nbytes)}, bytes(nbytes))

    with pytest.raises(InvalidWeights, match=f"tensor 't' of {dtype} does not fill whole bytes"):
        check(data)
    with pytest.raises(SafetensorError):
        deserialize(data)


def test_zero_size_tensors_may_share_an_offset_anywhere_in_the_data():
    header = {
        "empty_first": u8(0, 0),
        "a": u8(0, 4),
        "empty_middle": spec("F32", [0, 7], 4, 4),
        "also_empty_middle": spec("I64", [3, 0], 4, 4),
        "b": spec("F16", [2], 4, 8),
        "empty_last": u8(8, 8),
    }
    data = build(header, bytes(range(8)))

    sizes = check(data).tensor_sizes()

    assert sizes == {
        "empty_first": 0,
        "a": 4,
        "empty_middle": 0,
        "also_empty_middle": 0,
        "b": 4,
        "empty_last": 0,
    }
    assert {name: info[2] for name, info in reference_view(data).items()} == sizes
    assert load(data)["empty_middle"].shape == (0, 7)


def test_tensors_are_checked_in_offset_order_not_header_order():
    data = build({"second": u8(3, 5), "first": u8(0, 3)}, bytes(5))

    assert check(data).tensor_sizes() == {"second": 2, "first": 3}
    assert set(load(data)) == {"first", "second"}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b"{}      ", id="padded-with-spaces"),
        pytest.param(b'{"__metadata__": {}}', id="empty-metadata"),
        pytest.param(b'{"__metadata__": {"format": "pt", "note": "caf\\u00e9"}}', id="metadata"),
    ],
)
def test_headers_without_tensors_are_accepted_and_load_empty(raw):
    data = build(raw)

    header = check(data)

    assert header.tensors == {}
    assert load(data) == {}


def test_header_padding_written_by_the_reference_is_accepted():
    # The reference pads the header with spaces so the data starts 8-byte aligned.
    data = save({"t": np.ones(3, dtype=np.uint8)}, metadata={"k": "v"})
    n = struct.unpack("<Q", data[:8])[0]
    assert data[8 + n - 1 : 8 + n] == b" "

    assert check(data).metadata == {"k": "v"}


def test_escaped_non_ascii_names_are_accepted():
    # A proper surrogate pair is one character (U+1F600); only unpaired halves are refused.
    data = build(
        b'{"caf\\u00e9.\\ud83d\\ude00": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}',
        b"x",
    )

    assert check(data).tensor_sizes() == {"caf\u00e9.\U0001f600": 1}
    assert set(load(data)) == {"caf\u00e9.\U0001f600"}


def test_header_length_is_read_little_endian():
    assert header_length(struct.pack("<Q", 300) + b"rest is ignored") == 300
    assert header_length(struct.pack("<Q", MAX_HEADER_BYTES)) == MAX_HEADER_BYTES


# --- hostile files: the first 8 bytes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        pytest.param(b"", "shorter than the 8-byte header length", id="empty-file"),
        pytest.param(b"\x02\x00\x00", "shorter than the 8-byte header length", id="3-bytes"),
        pytest.param(b"\x02" + bytes(6), "shorter than the 8-byte header length", id="7-bytes"),
        pytest.param(struct.pack("<Q", 0), "header length 0 is too small", id="length-0"),
        pytest.param(struct.pack("<Q", 1), "header length 1 is too small", id="length-1"),
        pytest.param(
            struct.pack("<Q", MAX_HEADER_BYTES + 1),
            f"header length {MAX_HEADER_BYTES + 1} exceeds the {MAX_HEADER_BYTES}-byte cap",
            id="cap-plus-one",
        ),
        pytest.param(struct.pack("<Q", 2**64 - 1), "exceeds the 100000000-byte cap", id="all-ones"),
        pytest.param(
            struct.pack(">Q", 80), "exceeds the 100000000-byte cap", id="big-endian-length"
        ),
    ],
)
def test_header_length_refuses_impossible_lengths(prefix, message):
    with pytest.raises(InvalidWeights, match=message):
        header_length(prefix)


def test_file_shorter_than_8_bytes_is_refused_by_the_whole_check():
    with pytest.raises(InvalidWeights, match="shorter than the 8-byte header length"):
        check(b"{}")


# --- hostile files: the header ----------------------------------------------------------------

SPEC_OK = '"dtype": "U8", "shape": [4], "data_offsets": [0, 4]'

HOSTILE_HEADERS = [
    # encoding and JSON
    pytest.param(b'{"caf\xe9": {}}', b"", "header is not valid UTF-8 \\(byte 5\\)", id="latin-1"),
    pytest.param(b"\xff\xfe{}", b"", "header is not valid UTF-8", id="utf-16-bom"),
    pytest.param(b"\xef\xbb\xbf{}", b"", "header is not valid JSON", id="utf-8-bom"),
    pytest.param(b'{"a": ', b"", "header is not valid JSON", id="cut-short"),
    pytest.param(b"{'a': 1}", b"", "header is not valid JSON", id="single-quotes"),
    pytest.param(b"{} {}", b"", "header is not valid JSON: Extra data", id="two-objects"),
    pytest.param(b"{}\x00\x00", b"", "header is not valid JSON", id="nul-padding"),
    pytest.param(b"[]", b"", "header must be a JSON object", id="array"),
    pytest.param(b'[{"a": 1}]', b"", "header must be a JSON object", id="array-of-object"),
    pytest.param(b'"{}"', b"", "header must be a JSON object", id="string"),
    pytest.param(b"42", b"", "header must be a JSON object", id="number"),
    pytest.param(b"null", b"", "header must be a JSON object", id="null"),
    # duplicate keys: two readers would disagree about which one counts
    pytest.param(
        f'{{"a": {{{SPEC_OK}}}, "a": {{{SPEC_OK}}}}}'.encode(),
        bytes(4),
        "duplicate key 'a' in JSON",
        id="duplicate-tensor",
    ),
    pytest.param(
        b'{"a": {"dtype": "U8", "dtype": "F32", "shape": [4], "data_offsets": [0, 4]}}',
        bytes(4),
        "duplicate key 'dtype' in JSON",
        id="duplicate-dtype-in-spec",
    ),
    pytest.param(
        b'{"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4], "data_offsets": [0, 4]}}',
        bytes(4),
        "duplicate key 'data_offsets' in JSON",
        id="duplicate-offsets-in-spec",
    ),
    pytest.param(
        b'{"__metadata__": {"k": "1"}, "__metadata__": {"k": "2"}}',
        b"",
        "duplicate key '__metadata__' in JSON",
        id="duplicate-metadata",
    ),
    pytest.param(
        b'{"__metadata__": {"k": "1", "k": "2"}}',
        b"",
        "duplicate key 'k' in JSON",
        id="duplicate-metadata-key",
    ),
    # strings Python would read but the reference refuses
    pytest.param(
        b'{"\\ud800": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}',
        b"x",
        "unpaired surrogate escape",
        id="lone-surrogate-name",
    ),
    pytest.param(
        b'{"__metadata__": {"k": "\\udc00"}}',
        b"",
        "unpaired surrogate escape",
        id="lone-surrogate-metadata",
    ),
    # Python's own JSON limits must surface as InvalidWeights, never as another exception
    pytest.param(
        b'{"a": {"dtype": "U8", "shape": [' + b"1" * 5000 + b'], "data_offsets": [0, 0]}}',
        b"",
        "header is not acceptable JSON",
        id="5000-digit-integer",
    ),
    pytest.param(
        b'{"__metadata__": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"",
        "header is not acceptable JSON",
        id="nested-100000-deep",
    ),
]


@pytest.mark.parametrize(("raw", "data", "message"), HOSTILE_HEADERS)
def test_header_refuses_malformed_json(raw, data, message):
    with pytest.raises(InvalidWeights, match=message):
        check(build(raw, data))


TENSOR_CASES = [
    # spec shape
    pytest.param(
        ["not", "a", "spec"], 0, "must have exactly dtype, shape and data_offsets", id="list-spec"
    ),
    pytest.param("U8", 0, "must have exactly dtype, shape and data_offsets", id="string-spec"),
    pytest.param(None, 0, "must have exactly dtype, shape and data_offsets", id="null-spec"),
    pytest.param({**u8(0, 4), "offset": 0}, 4, "must have exactly dtype", id="unknown-field"),
    pytest.param({**u8(0, 4), "checksum": "x"}, 4, "must have exactly dtype", id="unknown-field-2"),
    pytest.param(
        {"shape": [4], "data_offsets": [0, 4]}, 4, "must have exactly", id="missing-dtype"
    ),
    pytest.param(
        {"dtype": "U8", "data_offsets": [0, 4]}, 4, "must have exactly", id="missing-shape"
    ),
    pytest.param({"dtype": "U8", "shape": [4]}, 4, "must have exactly", id="missing-offsets"),
    pytest.param({}, 0, "must have exactly", id="empty-spec"),
    # dtype
    pytest.param(spec("F128", [1], 0, 16), 16, "unknown dtype 'F128'", id="dtype-F128"),
    pytest.param(spec("f32", [1], 0, 4), 4, "unknown dtype 'f32'", id="dtype-lowercase"),
    pytest.param(spec("float32", [1], 0, 4), 4, "unknown dtype 'float32'", id="dtype-numpy-name"),
    pytest.param(spec("F6", [4], 0, 3), 3, "unknown dtype 'F6'", id="dtype-F6-bare"),
    pytest.param(spec(32, [1], 0, 4), 4, "unknown dtype 32", id="dtype-number"),
    pytest.param(spec(["F32"], [1], 0, 4), 4, "unknown dtype \\['F32'\\]", id="dtype-list"),
    pytest.param(spec({"F32": 1}, [1], 0, 4), 4, "unknown dtype", id="dtype-object"),
    pytest.param(spec(None, [1], 0, 4), 4, "unknown dtype None", id="dtype-null"),
    # shape
    pytest.param(
        spec("U8", [-4], 0, 4), 4, "shape must be a list of non-negative", id="shape-negative"
    ),
    pytest.param(
        spec("U8", [2, -2], 0, 4), 4, "shape must be a list", id="shape-negative-product-positive"
    ),
    pytest.param(spec("U8", [4.0], 0, 4), 4, "shape must be a list", id="shape-float"),
    pytest.param(spec("U8", ["4"], 0, 4), 4, "shape must be a list", id="shape-string"),
    pytest.param(spec("U8", [True], 0, 1), 1, "shape must be a list", id="shape-bool"),
    pytest.param(spec("U8", [None], 0, 0), 0, "shape must be a list", id="shape-null"),
    pytest.param(spec("U8", [[4]], 0, 4), 4, "shape must be a list", id="shape-nested"),
    pytest.param(spec("U8", 4, 0, 4), 4, "shape must be a list", id="shape-int"),
    pytest.param(spec("U8", "4", 0, 4), 4, "shape must be a list", id="shape-str"),
    pytest.param(spec("U8", {"0": 4}, 0, 4), 4, "shape must be a list", id="shape-object"),
    pytest.param(
        spec("U8", [2**64, 0], 0, 0),
        0,
        "shape must be a list of non-negative 64-bit",
        id="shape-dim-over-64-bits",
    ),
    pytest.param(
        spec("U8", [2**32, 2**32], 0, 0), 0, "shape overflows 64 bits", id="shape-product-overflows"
    ),
    pytest.param(
        spec("U8", [2**63, 2**63, 0], 0, 0),
        0,
        "shape overflows 64 bits",
        id="shape-overflows-before-zero",
    ),
    # data_offsets
    pytest.param(
        {**u8(0, 4), "data_offsets": [0]},
        4,
        "data_offsets must be \\[begin, end\\]",
        id="offsets-one",
    ),
    pytest.param(
        {**u8(0, 4), "data_offsets": [0, 4, 8]}, 4, "data_offsets must be", id="offsets-three"
    ),
    pytest.param({**u8(0, 4), "data_offsets": []}, 4, "data_offsets must be", id="offsets-empty"),
    pytest.param({**u8(0, 4), "data_offsets": 4}, 4, "data_offsets must be", id="offsets-int"),
    pytest.param(
        {**u8(0, 4), "data_offsets": {"0": 0, "1": 4}},
        4,
        "data_offsets must be",
        id="offsets-object",
    ),
    pytest.param(spec("U8", [0], 4, 0), 4, "0 <= begin <= end", id="offsets-begin-after-end"),
    pytest.param(spec("U8", [4], -4, 0), 4, "0 <= begin <= end", id="offsets-negative-begin"),
    pytest.param(spec("U8", [4], 0, -4), 4, "0 <= begin <= end", id="offsets-negative-end"),
    pytest.param(spec("U8", [1], False, True), 1, "data_offsets must be", id="offsets-bools"),
    pytest.param(spec("U8", [1], 0, True), 1, "data_offsets must be", id="offsets-end-bool"),
    pytest.param(spec("U8", [4], 0.0, 4.0), 4, "data_offsets must be", id="offsets-floats"),
    pytest.param(spec("U8", [4], "0", "4"), 4, "data_offsets must be", id="offsets-strings"),
    pytest.param(spec("U8", [4], None, 4), 4, "data_offsets must be", id="offsets-null"),
    pytest.param(
        spec("U8", [0], 2**64, 2**64), 0, "data_offsets must be", id="offsets-over-64-bits"
    ),
    # size
    pytest.param(
        spec("F32", [2], 0, 4),
        4,
        "spans 4 bytes but shape \\[2\\] of F32 needs 8",
        id="size-too-small",
    ),
    pytest.param(
        spec("F32", [2], 0, 12),
        12,
        "spans 12 bytes but shape \\[2\\] of F32 needs 8",
        id="size-too-big",
    ),
    pytest.param(
        spec("BF16", [3, 2], 0, 6), 6, "shape \\[3, 2\\] of BF16 needs 12", id="size-bf16-as-bytes"
    ),
    pytest.param(spec("F4", [4], 0, 4), 4, "shape \\[4\\] of F4 needs 2", id="size-f4-as-bytes"),
    pytest.param(
        spec("F32", [], 0, 0),
        0,
        "spans 0 bytes but shape \\[\\] of F32 needs 4",
        id="size-scalar-empty",
    ),
    pytest.param(
        spec("F32", [0], 0, 4),
        4,
        "spans 4 bytes but shape \\[0\\] of F32 needs 0",
        id="size-zero-dim-with-bytes",
    ),
]


@pytest.mark.parametrize(("tensor_spec", "data_size", "message"), TENSOR_CASES)
def test_header_refuses_a_bad_tensor_spec(tensor_spec, data_size, message):
    data = build({"t": tensor_spec}, bytes(data_size))

    with pytest.raises(InvalidWeights, match=f"tensor 't' .*{message}"):
        check(data)


LAYOUT_CASES = [
    pytest.param(
        {"a": u8(0, 4), "b": u8(8, 12)},
        12,
        "tensor 'b' at offset 8 leaves a gap \\(expected 4\\)",
        id="gap",
    ),
    pytest.param(
        {"a": u8(4, 8)},
        8,
        "tensor 'a' at offset 4 leaves a gap \\(expected 0\\)",
        id="first-not-at-0",
    ),
    pytest.param(
        {"a": u8(1, 1), "b": u8(1, 5)},
        5,
        "tensor 'a' at offset 1 leaves a gap \\(expected 0\\)",
        id="empty-first-not-at-0",
    ),
    pytest.param(
        {"a": u8(0, 8), "b": u8(4, 12)},
        12,
        "tensor 'b' at offset 4 overlaps the tensor before it \\(expected 8\\)",
        id="overlap",
    ),
    pytest.param(
        {"a": u8(0, 4), "b": u8(0, 4)},
        4,
        "at offset 0 overlaps the tensor before it",
        id="same-bytes-twice",
    ),
    pytest.param(
        {"a": u8(0, 8), "b": u8(0, 4), "c": u8(4, 8)},
        8,
        "overlaps the tensor before it",
        id="one-tensor-covers-two",
    ),
    pytest.param(
        {"a": u8(0, 8), "z": u8(4, 4)},
        8,
        "tensor 'z' at offset 4 overlaps",
        id="empty-inside-another",
    ),
    pytest.param(
        {"a": u8(0, 8)},
        4,
        "tensors cover 8 data bytes but the file holds 4 \\(truncated\\?\\)",
        id="truncated",
    ),
    pytest.param(
        {"a": u8(0, 8)},
        0,
        "tensors cover 8 data bytes but the file holds 0 \\(truncated\\?\\)",
        id="no-data-at-all",
    ),
    pytest.param(
        {"a": u8(0, 8)},
        9,
        "tensors cover 8 data bytes but the file holds 9 \\(trailing bytes\\)",
        id="trailing-byte",
    ),
    pytest.param(
        {},
        16,
        "tensors cover 0 data bytes but the file holds 16 \\(trailing bytes\\)",
        id="data-without-tensors",
    ),
    pytest.param(
        {"z": u8(0, 0)},
        1,
        "cover 0 data bytes but the file holds 1 \\(trailing bytes\\)",
        id="empty-tensor-and-a-byte",
    ),
]


@pytest.mark.parametrize(("header", "data_size", "message"), LAYOUT_CASES)
def test_header_refuses_tensors_that_do_not_tile_the_data_exactly(header, data_size, message):
    with pytest.raises(InvalidWeights, match=message):
        check(build(header, bytes(data_size)))


def test_header_refuses_a_file_that_ends_before_its_header_does():
    raw = json.dumps({"__metadata__": {"k": "v"}}).encode()
    data = struct.pack("<Q", len(raw) + 10) + raw  # claims 10 header bytes more than it has

    with pytest.raises(
        InvalidWeights, match=f"file of {len(data)} bytes is shorter than its header"
    ):
        check(data)


METADATA_CASES = [
    pytest.param({"n": 1}, id="int-value"),
    pytest.param({"n": 1.5}, id="float-value"),
    pytest.param({"n": True}, id="bool-value"),
    pytest.param({"n": None}, id="null-value"),
    pytest.param({"n": {"nested": "object"}}, id="nested-object"),
    pytest.param({"n": ["a", "b"]}, id="list-value"),
    pytest.param({"ok": "str", "n": 1}, id="one-bad-value-among-good"),
    pytest.param(["format", "pt"], id="list"),
    pytest.param("format=pt", id="string"),
    pytest.param(7, id="number"),
    pytest.param(None, id="null"),
]


@pytest.mark.parametrize("metadata", METADATA_CASES)
def test_header_refuses_metadata_that_is_not_strings_to_strings(metadata):
    data = build({"__metadata__": metadata, "a": u8(0, 2)}, bytes(2))

    with pytest.raises(InvalidWeights, match="__metadata__ must map strings to strings"):
        check(data)


def test_header_refuses_each_sample_shard_with_a_byte_too_many_or_too_few():
    for path, data in sample_model_files(layers=2, hidden=8, shards=2).items():
        if not path.endswith(".safetensors"):
            continue
        with pytest.raises(InvalidWeights, match="\\(truncated\\?\\)"):
            check(data[:-1])
        with pytest.raises(InvalidWeights, match="\\(trailing bytes\\)"):
            check(data + b"\x00")


def test_header_mutations_are_refused_cleanly_or_loadable_by_the_reference():
    # A small deterministic fuzz: whatever the validator accepts, the reference must parse too,
    # and nothing else than InvalidWeights may escape (ingest would take it for a storage error).
    rng = random.Random(20240611)
    seed = save(
        {
            "a": np.zeros((0, 2), dtype=np.float32),
            "s": np.array(1, dtype=np.int8),
            "b": np.ones(3, dtype=np.uint8),
            "c": np.ones((2, 2), dtype=np.float16),
        },
        metadata={"format": "pt"},
    )
    n = struct.unpack("<Q", seed[:8])[0]
    tokens = [b"0", b"-1", b"1.0", b"true", b"null", b"[]", b"{}", b'"F4"', b'"BF16"', b",", b"]"]
    tokens += [b"}", b'"x"', b"18446744073709551616", b"\\ud800", b" ", b"\\u00e9"]
    accepted = 0
    for _ in range(1500):
        header, data = bytearray(seed[8 : 8 + n]), bytearray(seed[8 + n :])
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(header))
            if rng.random() < 0.5:
                header[position] = rng.choice(b'0123456789[]{},:"- ')
            else:
                header[position : position + rng.randint(0, 3)] = rng.choice(tokens)
        if rng.random() < 0.1:
            data = data[:-1] if rng.random() < 0.5 else data + b"\x00"
        candidate = build(bytes(header), bytes(data))
        try:
            check(candidate)
        except InvalidWeights:
            continue
        accepted += 1
        deserialize(candidate)  # raises if the reference disagrees
    assert accepted > 0  # the fuzz is not merely refusing everything


# --- model.safetensors.index.json -------------------------------------------------------------

SHARDS = {S1: {"a": 4, "b": 8}, S2: {"c": 2}}
WEIGHT_MAP = {"a": S1, "b": S1, "c": S2}


def index_document(
    weight_map: Any = WEIGHT_MAP, metadata: Any = None, **extra: Any
) -> dict[str, Any]:
    document: dict[str, Any] = {"metadata": {"total_size": 14}, "weight_map": weight_map}
    if metadata is not None:
        document["metadata"] = metadata
    return {**document, **extra}


@pytest.mark.parametrize("shards", [1, 2, 3, 5])
def test_index_accepts_the_sample_index(shards):
    files = sample_model_files(layers=3, hidden=16, shards=shards)
    document = index_parse(files[INDEX_NAME])

    index_check(document, index_path=INDEX_NAME, shards=shard_sizes(files))

    assert document == json.loads(files[INDEX_NAME])
    assert set(document["weight_map"].values()) == set(shard_sizes(files))


def test_index_accepts_a_hand_written_index_without_total_size():
    index_check(index_document(metadata={}), index_path=INDEX_NAME, shards=SHARDS)
    index_check({"weight_map": WEIGHT_MAP}, index_path=INDEX_NAME, shards=SHARDS)


@pytest.mark.parametrize("folder", ["sub/", "org/model/v1/"])
def test_index_in_a_subfolder_resolves_shards_relative_to_its_folder(folder):
    files = sample_model_files(layers=2, hidden=8, shards=2)
    document = index_parse(files[INDEX_NAME])

    index_check(document, index_path=folder + INDEX_NAME, shards=shard_sizes(files, prefix=folder))
    with pytest.raises(InvalidWeights, match="which is not a shard of the version"):
        # The same shards beside the version root are not beside this index.
        index_check(document, index_path=folder + INDEX_NAME, shards=shard_sizes(files))


def test_index_at_the_root_does_not_reach_shards_in_a_subfolder():
    files = sample_model_files(layers=2, hidden=8, shards=2)

    with pytest.raises(InvalidWeights, match="which is not a shard of the version"):
        index_check(
            index_parse(files[INDEX_NAME]),
            index_path=INDEX_NAME,
            shards=shard_sizes(files, prefix="sub/"),
        )


def test_index_ignores_shards_of_the_version_that_sit_in_other_folders():
    other = {"other/" + S1: {"x": 1}}

    index_check(index_document(), index_path=INDEX_NAME, shards={**SHARDS, **other})


INDEX_CASES = [
    # structure
    pytest.param(
        {"metadata": {"total_size": 14}},
        "index must be an object with a weight_map object",
        id="weight-map-missing",
    ),
    pytest.param(
        index_document(weight_map=[["a", S1]]), "with a weight_map object", id="weight-map-list"
    ),
    pytest.param(index_document(weight_map=None), "with a weight_map object", id="weight-map-null"),
    pytest.param(index_document(weight_map=S1), "with a weight_map object", id="weight-map-string"),
    pytest.param([WEIGHT_MAP], "with a weight_map object", id="index-is-a-list"),
    pytest.param(None, "with a weight_map object", id="index-is-null"),
    pytest.param(
        index_document(metadata=[["total_size", 14]]),
        "index metadata must be an object",
        id="metadata-list",
    ),
    pytest.param(
        index_document(metadata="14"), "index metadata must be an object", id="metadata-string"
    ),
    pytest.param(
        {"metadata": None, "weight_map": WEIGHT_MAP},
        "index metadata must be an object",
        id="metadata-null",
    ),
    # shard names
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": 2}),
        "entry 'c' must name a shard file",
        id="shard-number",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": None}),
        "entry 'c' must name a shard file",
        id="shard-null",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": ""}),
        "entry 'c' must name a shard file",
        id="shard-empty",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": [S2]}),
        "entry 'c' must name a shard file",
        id="shard-list",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": "../" + S2}),
        "entry 'c' names an unsafe path '../model-00002",
        id="shard-dotdot",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": "sub/../" + S2}),
        "names an unsafe path",
        id="shard-dotdot-inside",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": ".."}),
        "names an unsafe path",
        id="shard-just-dotdot",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": "/" + S2}),
        "names an unsafe path '/model-00002",
        id="shard-absolute",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": "//" + S2}),
        "names an unsafe path",
        id="shard-double-slash",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": "sub\\" + S2}),
        "names an unsafe path",
        id="shard-backslash",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": "..\\" + S2}),
        "names an unsafe path",
        id="shard-backslash-dotdot",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": "C:\\" + S2}),
        "names an unsafe path",
        id="shard-windows-drive",
    ),
    # which shard holds what
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": "model-00003-of-00003.safetensors"}),
        "maps 'c' to 'model-00003-of-00003.safetensors', which is not a shard of the version",
        id="shard-not-in-version",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": "sub/" + S2}),
        "which is not a shard of the version",
        id="shard-in-wrong-folder",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "c": "config.json"}),
        "which is not a shard of the version",
        id="shard-not-safetensors",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "a": S2}),
        f"maps 'a' to '{S2}', which does not hold it",
        id="tensor-in-other-shard",
    ),
    pytest.param(
        index_document(weight_map={**WEIGHT_MAP, "ghost": S1}),
        "maps 'ghost' to .*which does not hold it",
        id="tensor-in-no-shard",
    ),
    pytest.param(
        index_document(weight_map={"a": S1, "c": S2}),
        f"shard '{S1}' holds tensors the index does not map to it: b",
        id="tensor-not-mapped",
    ),
    # total_size
    pytest.param(
        index_document(metadata={"total_size": 15}),
        "index total_size 15 does not match the shards' 14 tensor bytes",
        id="total-size-too-big",
    ),
    pytest.param(
        index_document(metadata={"total_size": 0}),
        "index total_size 0 does not match the shards' 14",
        id="total-size-zero",
    ),
    pytest.param(
        index_document(metadata={"total_size": "14"}),
        "index total_size 14 does not match",
        id="total-size-string",
    ),
    pytest.param(
        index_document(metadata={"total_size": None}),
        "index total_size None does not match",
        id="total-size-null",
    ),
]


@pytest.mark.parametrize(("document", "message"), INDEX_CASES)
def test_index_refuses_a_map_that_does_not_match_the_shards(document, message):
    with pytest.raises(InvalidWeights, match=message):
        index_check(document, index_path=INDEX_NAME, shards=SHARDS)


def test_index_refuses_a_second_copy_of_a_tensor_hidden_in_another_shard():
    # A loader that reads whole shards would take whichever copy of 'b' it reads last.
    shards = {S1: {"a": 4, "b": 8}, S2: {"b": 8, "c": 2}}
    document = index_document(metadata={"total_size": 22})

    with pytest.raises(
        InvalidWeights, match=f"shard '{S2}' holds tensors the index does not map to it: b"
    ):
        index_check(document, index_path=INDEX_NAME, shards=shards)


def test_index_refuses_a_sample_index_whose_total_size_lies():
    files = sample_model_files(layers=2, hidden=8, shards=2)
    document = index_parse(files[INDEX_NAME])
    real = document["metadata"]["total_size"]
    document["metadata"]["total_size"] = real + 2

    with pytest.raises(
        InvalidWeights,
        match=f"index total_size {real + 2} does not match the shards' {real} tensor bytes",
    ):
        index_check(document, index_path=INDEX_NAME, shards=shard_sizes(files))


def test_index_refuses_a_sample_shard_that_gained_a_tensor():
    files = sample_model_files(layers=2, hidden=8, shards=2)
    shards = shard_sizes(files)
    first = sorted(shards)[0]
    shards[first]["extra.weight"] = 4

    with pytest.raises(InvalidWeights, match="does not map to it: extra.weight"):
        index_check(index_parse(files[INDEX_NAME]), index_path=INDEX_NAME, shards=shards)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(
            b'{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}',
            "duplicate key 'a' in JSON",
            id="duplicate-tensor",
        ),
        pytest.param(
            b'{"weight_map": {"a": "x.safetensors"}, "weight_map": {"b": "y.safetensors"}}',
            "duplicate key 'weight_map' in JSON",
            id="duplicate-weight-map",
        ),
        pytest.param(
            b'{"metadata": {"total_size": 1, "total_size": 2}, "weight_map": {}}',
            "duplicate key 'total_size' in JSON",
            id="duplicate-total-size",
        ),
        pytest.param(
            b'{"weight_map": {"\\ud800": "x.safetensors"}}',
            "unpaired surrogate escape",
            id="lone-surrogate",
        ),
        pytest.param(
            b'{"weight_map": {"caf\xe9": 1}}', f"{INDEX_NAME} is not valid UTF-8", id="latin-1"
        ),
        pytest.param(b'{"weight_map": ', f"{INDEX_NAME} is not valid JSON", id="cut-short"),
        pytest.param(b"", f"{INDEX_NAME} is not valid JSON", id="empty"),
        pytest.param(b"[" * 100_000, f"{INDEX_NAME} is not acceptable JSON", id="nested-deep"),
    ],
)
def test_index_parse_refuses_ambiguous_or_broken_json(raw, message):
    with pytest.raises(InvalidWeights, match=message):
        index_parse(raw)


def test_nul_characters_are_refused_before_they_reach_the_database():
    data = build(b'{"a\\u0000b": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}', b"x")

    with pytest.raises(InvalidWeights, match="NUL character"):
        check(data)


@pytest.mark.parametrize("claimed", [True, 14.0, "14"], ids=["bool", "float", "string"])
def test_total_size_must_be_an_integer(claimed):
    with pytest.raises(InvalidWeights, match="total_size"):
        index_check(
            index_document(metadata={"total_size": claimed}), index_path=INDEX_NAME, shards=SHARDS
        )


def test_empty_weight_map_is_refused():
    with pytest.raises(InvalidWeights, match="weight_map is empty"):
        index_check(index_document(weight_map={}), index_path=INDEX_NAME, shards=SHARDS)
