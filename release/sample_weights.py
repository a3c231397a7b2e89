"""Small but real model files (safetensors shards, their index, a config and a tokenizer), for the
demo seed and the tests. Nothing is ever downloaded: numpy makes the tensors."""

import json

import numpy as np
from safetensors.numpy import save


def sample_model_files(
    *, layers: int = 4, hidden: int = 64, shards: int = 2, seed: int = 0
) -> dict[str, bytes]:
    """A tiny decoder-shaped model split into `shards` safetensors files plus the
    `model.safetensors.index.json` that maps every tensor to its shard."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.standard_normal((256, hidden), dtype=np.float32),
    }
    for layer in range(layers):
        prefix = f"model.layers.{layer}"
        tensors[f"{prefix}.self_attn.qkv.weight"] = rng.standard_normal(
            (3 * hidden, hidden), dtype=np.float32
        ).astype(np.float16)
        tensors[f"{prefix}.mlp.weight"] = rng.standard_normal(
            (4 * hidden, hidden), dtype=np.float32
        ).astype(np.float16)
        tensors[f"{prefix}.norm.weight"] = np.ones(hidden, dtype=np.float32)
    names = sorted(tensors)
    files: dict[str, bytes] = {}
    weight_map: dict[str, str] = {}
    total = 0
    for index in range(shards):
        shard_name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: tensors[name] for name in names[index::shards]}
        files[shard_name] = save(part, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard_name))
        total += sum(array.nbytes for array in part.values())
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2
    ).encode()
    files["config.json"] = json.dumps(
        {
            "model_type": "llama",
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "vocab_size": 256,
            "torch_dtype": "float16",
        },
        indent=2,
    ).encode()
    return files


def sample_tokenizer_files() -> dict[str, bytes]:
    vocab = {chr(code): code for code in range(32, 127)}
    return {
        "tokenizer.json": json.dumps(
            {"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab}}
        ).encode(),
    }
