"""What a model directory must hold before a bridge is booted from it, checked in one place.

- **No code.** A directory whose ``config.json`` or ``tokenizer_config.json`` asks for custom
  code (``auto_map``) is refused: transformers would run a ``.py`` file from it (after asking
  on the terminal, in the middle of a capture). Every transformers call here passes
  ``trust_remote_code=False``, and pickle-only weights (``*.bin``, ``*.pt``), which run code
  when loaded, are refused too: nex-causal reads safetensors only.
- **Every tensor, and nothing else.** The safetensors headers are read (not the tensors) and
  compared with the tensors the architecture has: a missing tensor (which transformers would
  initialise at random, silently), an unexpected one, a wrong shape, a truncated file or a
  damaged header is named in one line.
- **The recorded content.** A directory the zoo wrote records its weights' SHA-256 in
  ``zoo.json`` (``MODEL_RECORD``); every load checks it, so a flipped byte is caught.
- **Finite values**, checked on the loaded model before anything runs (``check_finite``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from nex_causal.errors import NexError
from nex_causal.io import digest, json_object

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

MODEL_RECORD = "zoo.json"  # a model directory's record of its weights (``weights_sha256``)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# a tokenizer's vocabulary is in one of these (transformers makes an empty tokenizer, silently, when none is there)
# what makes two models' MLP neurons comparable when no zoo record says where a model came from
ARCHITECTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size",
                     "num_attention_heads", "num_key_value_heads")
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
# safetensors dtype codes: (bytes per element, the torch name the weights hash records)
DTYPES = {"F64": (8, "torch.float64"), "F32": (4, "torch.float32"), "F16": (2, "torch.float16"),
          "BF16": (2, "torch.bfloat16"), "I64": (8, "torch.int64"), "I32": (4, "torch.int32"),
          "I16": (2, "torch.int16"), "I8": (1, "torch.int8"), "U8": (1, "torch.uint8"), "BOOL": (1, "torch.bool")}


def check_no_remote_code(path: Path) -> None:
    """One line refusing a directory whose config or tokenizer config asks for custom code."""
    for name in ("config.json", "tokenizer_config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            values = json.loads(file.read_text())
        except (ValueError, UnicodeDecodeError):
            raise NexError(f"{file} is not valid JSON: the model directory is damaged; fetch it again") from None
        if isinstance(values, dict) and values.get("auto_map"):
            raise NexError(f"{file} asks to run custom code from the model directory (auto_map): nex-causal never "
                           "runs code shipped with a model; use a model whose architecture transformers implements")


def read_config(path: Path) -> PretrainedConfig:
    """The model's config, read without running any code from the directory."""
    from transformers import AutoConfig

    check_no_remote_code(path)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (ValueError, KeyError, OSError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NexError(f"cannot read the model config in {path} ({first}): is it a Hugging Face "
                       f"model directory of an architecture this transformers version knows?") from None


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``path``, loaded without running any code from it."""
    from transformers import AutoTokenizer

    path = Path(path)
    check_no_remote_code(path)
    if path.is_dir() and not any((path / name).is_file() for name in VOCABULARY_FILES):
        raise NexError(f"{path} holds no tokenizer (none of {', '.join(VOCABULARY_FILES)}): save the tokenizer with "
                       "the model (tokenizer.save_pretrained), or pass one")
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (ValueError, KeyError, OSError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NexError(f"cannot load the tokenizer in {path} ({first[:200]}): the directory needs the tokenizer "
                       "files save_pretrained writes (tokenizer.json, tokenizer_config.json)") from None


def read_header(file: Path) -> tuple[dict[str, dict], int]:
    """A safetensors file's tensor table (name -> dtype, shape, data offsets) and where its data starts,
    checked against the file's size; one line naming the file for any damage."""
    size = file.stat().st_size
    fix = f"{file} is damaged ({{}}): fetch or save the model again"
    if size < 8:
        raise NexError(fix.format(f"{size} bytes, not even a header"))
    with open(file, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > size - 8 or length > 100 << 20:
            raise NexError(fix.format(f"its header claims {length} bytes of {size}"))
        try:
            header = json.loads(f.read(length))
        except (ValueError, UnicodeDecodeError):
            raise NexError(fix.format("its header is not JSON")) from None
    if not isinstance(header, dict):
        raise NexError(fix.format("its header is not a table of tensors"))
    header.pop("__metadata__", None)
    data = 8 + length
    for name, info in header.items():
        try:
            width = DTYPES[info["dtype"]][0]
            start, end = (int(v) for v in info["data_offsets"])
            count = math.prod(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise NexError(fix.format(f"tensor {name!r} has no valid dtype, shape and offsets")) from None
        if end - start != count * width or start < 0:
            raise NexError(fix.format(f"tensor {name!r} has {end - start} bytes for shape {info['shape']}"))
        if data + end > size:
            raise NexError(fix.format(f"truncated: tensor {name!r} ends at byte {data + end} of {size}"))
    return header, data


def weight_files(path: Path) -> list[Path]:
    """The directory's safetensors files; a one-line refusal for pickle-only weights or none at all."""
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise NexError(f"{path} holds only pickle weights ({', '.join(pickles)}), which run code when loaded: "
                       "nex-causal reads safetensors only; convert with save_pretrained(..., safe_serialization=True) "
                       "on a machine you trust")
    raise NexError(f"{path} holds no weights (*.safetensors): point at a complete model directory")


def check_tensors(path: Path, config: PretrainedConfig) -> None:
    """Every tensor the architecture has, with its shape, and no other (one line naming the first difference)."""
    import torch
    from transformers import AutoModelForCausalLM

    found: dict[str, list[int]] = {}
    for file in weight_files(path):
        found.update({name: list(info["shape"]) for name, info in read_header(file)[0].items()})
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    allowed = {name: list(t.shape) for name, t in skeleton.state_dict().items()}
    required = {name for name, _ in skeleton.named_parameters()}  # tied weights once
    required |= {name for name, _ in skeleton.named_buffers() if name in allowed}
    prefix = f"{skeleton.base_model_prefix}."
    if found and not any(n.startswith(prefix) for n in found) and any(n.startswith(prefix) for n in allowed):
        found = {prefix + name: shape for name, shape in found.items()}  # a base model's checkpoint
    fix = "the directory does not hold this architecture's weights: fetch or save the model again"
    if missing := sorted(required - set(found)):
        raise NexError(f"{path} lacks {len(missing)} tensor(s) the architecture needs, first {missing[0]!r} "
                       f"(transformers would initialise it at random): {fix}")
    if unexpected := sorted(set(found) - set(allowed)):
        raise NexError(f"{path} holds {len(unexpected)} tensor(s) the architecture does not have, first "
                       f"{unexpected[0]!r}: {fix}")
    if wrong := [n for n in sorted(found) if found[n] != allowed[n]]:
        raise NexError(f"{path}: tensor {wrong[0]!r} has shape {found[wrong[0]]}, the config says "
                       f"{allowed[wrong[0]]}: {fix}")


def weights_hash(path: str | os.PathLike) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order (file metadata ignored),
    read from the safetensors files without loading them."""
    digest = hashlib.sha256()
    tensors = []
    for file in weight_files(Path(path)):
        header, data = read_header(file)
        tensors += [(name, info, file, data) for name, info in header.items()]
    for name, info, file, data in sorted(tensors, key=lambda t: t[0]):
        digest.update(f"{name}|{DTYPES[info['dtype']][1]}|{tuple(int(d) for d in info['shape'])}|".encode())
        start, end = info["data_offsets"]
        with open(file, "rb") as f:
            f.seek(data + start)
            left = end - start
            while left > 0:
                block = f.read(min(left, 1 << 24))
                digest.update(block)
                left -= len(block)
    return digest.hexdigest()


def check_recorded_hash(path: Path) -> None:
    """When the directory records its weights' SHA-256 (``zoo.json``), the weights must still have it."""
    record = path / MODEL_RECORD
    if not record.is_file():
        return
    try:
        recorded = json.loads(record.read_text()).get("weights_sha256")
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise NexError(f"{record} is not a valid record: the model directory is damaged; rebuild it") from None
    if recorded and weights_hash(path) != recorded:
        raise NexError(f"the weights in {path} are not those recorded in {record.name} (SHA-256 differs): they were "
                       "changed or corrupted after they were written; rebuild them (`nex-causal zoo build`)")


def check_finite(model, source: str) -> None:
    """One line naming the first weight that holds a NaN or an infinity."""
    import torch

    for name, param in model.named_parameters():
        if param.is_floating_point() and not bool(torch.isfinite(param).all()):
            name = name.replace("._original_component", "")  # the bridge's wrapping, not the model's name
            raise NexError(f"{source}: weight {name} holds NaN or infinite values: the model is damaged "
                           "(or was saved from a diverged run); use intact weights")


def _json_of(file: Path) -> dict:
    """The JSON object in ``file``; one line naming a damaged one."""
    if (value := json_object(file)) is None:
        raise NexError(f"{file} is not a JSON object: the model directory is damaged; fetch or rebuild it")
    return value


def lineage(path: str | os.PathLike) -> str:
    """What a model descends from: the level at which NEX weights carry over from one model to another.

    A zoo variant's lineage is the trained roots its ``zoo.json`` parents lead to (its organism's
    base), so the experts and merges of one organism share it and two organisms of one shape do
    not; any other model's is its architecture (``ARCHITECTURE_KEYS`` of its config.json).
    """
    path = Path(path).resolve()
    if not (path / MODEL_RECORD).is_file():
        config = _json_of(path / "config.json")
        config = config.get("text_config", config)
        return "architecture:" + digest({key: config.get(key) for key in ARCHITECTURE_KEYS})
    roots, todo, seen = set(), [path], set()
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        record = _json_of(node / MODEL_RECORD)
        parents = [(node.parent / name).resolve() for name in record.get("parents") or []]
        if parents and all((parent / MODEL_RECORD).is_file() for parent in parents):
            todo += parents
        else:
            roots.add(record.get("weights_sha256") or record.get("key") or node.name)
    return "zoo:" + digest(sorted(roots))


def model_identity(path: str | os.PathLike, *, with_digest: bool = True) -> dict:
    """What NEX weights learned on this model's activations are checked against (``nex.weights.check_learned_on``):
    its lineage, MLP shape and (``with_digest``) the SHA-256 of its weights (the one ``zoo.json`` records, checked
    on every load, else computed)."""
    path = Path(path).resolve()
    config = _json_of(path / "config.json")
    config = config.get("text_config", config)
    out = {"model": str(path), "lineage": lineage(path), "n_layers": config.get("num_hidden_layers"),
           "d_mlp": config.get("intermediate_size")}
    if with_digest:
        recorded = _json_of(path / MODEL_RECORD).get("weights_sha256") if (path / MODEL_RECORD).is_file() else None
        out["model_sha256"] = recorded or weights_hash(path)
    return out
