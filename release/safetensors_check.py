"""Strict validation of safetensors headers and `model.safetensors.index.json`, without loading
tensors: only the header is parsed; the data section is checked by arithmetic against the size.

The format: 8 bytes little-endian header length N, N bytes of UTF-8 JSON object, then data.
Stricter than the reference library: duplicate keys and unknown fields are refused, because two
readers that disagree about a file's contents are how poisoned weights slip through.
"""

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

# The reference implementation refuses headers over 100 MB; real ones are a few hundred KB.
MAX_HEADER_BYTES = 100_000_000

DTYPE_BITS = {
    "BOOL": 8,
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
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
TENSOR_FIELDS = {"dtype", "shape", "data_offsets"}
# The reference reads dims and offsets as 64-bit and refuses a shape whose product overflows.
MAX_U64 = 2**64 - 1
INDEX_NAME = "model.safetensors.index.json"


class InvalidWeights(ValueError):
    """A file that is not what it claims to be; the message says exactly why."""


@dataclass(frozen=True)
class SafetensorsHeader:
    header_size: int
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]]  # name -> dtype, shape, begin, end
    metadata: dict[str, str]

    def tensor_sizes(self) -> dict[str, int]:
        return {name: end - begin for name, (_, _, begin, end) in self.tensors.items()}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidWeights(f"duplicate key {key!r} in JSON")
        # Python accepts a lone surrogate escape ("\\ud800"), the reference refuses the file.
        for text in (key, value) if isinstance(value, str) else (key,):
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidWeights(
                        f"unpaired surrogate escape in JSON string {text!r}"
                    ) from None
        result[key] = value
    return result


def _strict_json(raw: bytes, what: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidWeights(f"{what} is not valid UTF-8 (byte {error.start})") from error
    if "\\u0000" in text:
        # Legal JSON, but PostgreSQL cannot store it and no real tensor name needs it.
        raise InvalidWeights(f"{what} contains a NUL character (\\u0000)")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as error:
        raise InvalidWeights(f"{what} is not valid JSON: {error.msg} at {error.pos}") from error
    except InvalidWeights:
        raise
    except (ValueError, RecursionError) as error:
        # Python's own limits (4300-digit integers, nesting depth) meet a hostile header: any
        # other exception would read as a storage error to the caller and be retried forever.
        raise InvalidWeights(f"{what} is not acceptable JSON: {error}"[:300]) from error


def header_length(prefix: bytes) -> int:
    """The header length from the first 8 bytes, refused when it cannot be a real header."""
    if len(prefix) < 8:
        raise InvalidWeights("file is shorter than the 8-byte header length")
    length = int.from_bytes(prefix[:8], "little")
    if length < 2:
        raise InvalidWeights(f"header length {length} is too small for a JSON object")
    if length > MAX_HEADER_BYTES:
        raise InvalidWeights(f"header length {length} exceeds the {MAX_HEADER_BYTES}-byte cap")
    return length


def _tensor(name: str, spec: Any) -> tuple[str, tuple[int, ...], int, int]:
    if not isinstance(spec, dict) or set(spec) != TENSOR_FIELDS:
        raise InvalidWeights(f"tensor {name!r} must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:  # a list is unhashable
        raise InvalidWeights(f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and 0 <= dim <= MAX_U64 for dim in shape
    ):
        raise InvalidWeights(
            f"tensor {name!r} shape must be a list of non-negative 64-bit integers"
        )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(
            isinstance(o, int) and not isinstance(o, bool) and 0 <= o <= MAX_U64 for o in offsets
        )
        or offsets[0] > offsets[1]
    ):
        raise InvalidWeights(
            f"tensor {name!r} data_offsets must be [begin, end], 0 <= begin <= end"
        )
    elements = 1
    for dim in shape:  # step by step, as the reference does, so a huge shape stops early
        elements *= dim
        if elements > MAX_U64:
            raise InvalidWeights(f"tensor {name!r} shape overflows 64 bits")
    bits = elements * DTYPE_BITS[dtype]
    if bits % 8:
        raise InvalidWeights(f"tensor {name!r} of {dtype} does not fill whole bytes")
    begin, end = offsets
    if end - begin != bits // 8:
        raise InvalidWeights(
            f"tensor {name!r} spans {end - begin} bytes but shape {shape} of {dtype} "
            f"needs {bits // 8}"
        )
    return dtype, tuple(shape), begin, end


def header_parse(raw_header: bytes, *, header_size: int, file_size: int) -> SafetensorsHeader:
    """Check the JSON header of a file of `file_size` bytes whose header is `header_size` long."""
    document = _strict_json(raw_header, "header")
    if not isinstance(document, dict):
        raise InvalidWeights("header must be a JSON object")
    metadata = document.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    ):
        raise InvalidWeights("__metadata__ must map strings to strings")
    tensors = {name: _tensor(name, spec) for name, spec in document.items()}
    # Sorted by offset, tensors must tile the data section exactly: no gap, no overlap.
    position = 0
    for name, (_, _, begin, end) in sorted(tensors.items(), key=lambda item: item[1][2:]):
        if begin != position:
            kind = "overlaps the tensor before it" if begin < position else "leaves a gap"
            raise InvalidWeights(f"tensor {name!r} at offset {begin} {kind} (expected {position})")
        position = end
    data_size = file_size - 8 - header_size
    if data_size < 0:
        raise InvalidWeights(f"file of {file_size} bytes is shorter than its header")
    if position != data_size:
        raise InvalidWeights(
            f"tensors cover {position} data bytes but the file holds {data_size} "
            + ("(truncated?)" if position > data_size else "(trailing bytes)")
        )
    return SafetensorsHeader(header_size=header_size, tensors=tensors, metadata=metadata)


def index_parse(raw: bytes) -> Any:
    """The index's JSON, strictly parsed (duplicate keys refused); checked by `index_check`."""
    return _strict_json(raw, INDEX_NAME)


def index_check(document: Any, *, index_path: str, shards: dict[str, dict[str, int]]) -> None:
    """Check that an index maps every tensor to the shard that really holds it, names only
    shards of the version beside it, and that its total_size is the sum of their tensor bytes.

    `shards` maps each safetensors file's path in the version to {tensor name: byte size}, as
    read from its header.
    """
    if not isinstance(document, dict) or not isinstance(document.get("weight_map"), dict):
        raise InvalidWeights("index must be an object with a weight_map object")
    if not document["weight_map"]:
        raise InvalidWeights("index weight_map is empty")
    folder = PurePosixPath(index_path).parent
    # (shard, tensor) pairs: a tensor mapped to one shard must not also hide in another, where
    # a loader that reads whole shards would pick up a second copy the index never named.
    mapped: set[tuple[str, str]] = set()
    shards_named: set[str] = set()
    for tensor, shard in document["weight_map"].items():
        if not isinstance(shard, str) or not shard:
            raise InvalidWeights(f"weight_map entry {tensor!r} must name a shard file")
        parts = PurePosixPath(shard).parts
        if shard.startswith("/") or "\\" in shard or ".." in parts or "." in parts:
            raise InvalidWeights(f"weight_map entry {tensor!r} names an unsafe path {shard!r}")
        path = str(folder / shard)
        if path not in shards:
            raise InvalidWeights(
                f"weight_map maps {tensor!r} to {shard!r}, which is not a shard of the version"
            )
        if tensor not in shards[path]:
            raise InvalidWeights(f"weight_map maps {tensor!r} to {shard!r}, which does not hold it")
        shards_named.add(path)
        mapped.add((path, tensor))
    for path in sorted(shards_named):
        unmapped = {name for name in shards[path] if (path, name) not in mapped}
        if unmapped:
            raise InvalidWeights(
                f"shard {path!r} holds tensors the index does not map to it: "
                f"{', '.join(sorted(unmapped)[:5])}"
            )
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        raise InvalidWeights("index metadata must be an object")
    if "total_size" in metadata:
        total = sum(sum(shards[path].values()) for path in shards_named)
        claimed = metadata["total_size"]
        if type(claimed) is not int or claimed != total:  # not True for 1, nor 1.0
            raise InvalidWeights(
                f"index total_size {metadata['total_size']} does not match the shards' "
                f"{total} tensor bytes"
            )
