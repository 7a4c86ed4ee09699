"""Shared fixtures. Model fixtures build tiny, randomly initialised HF models on disk in
seconds, so tests exercise the real TransformerBridge instead of mocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"

CHARS = "0123456789+-*=?:;,.|! abcdefghijklmnopqrstuvwxyz"


def save_char_tokenizer(path: Path) -> None:
    """A character-level HF tokenizer (PAD=0, BOS=1, EOS=2) that prepends BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2}
    vocab.update({c: i + 3 for i, c in enumerate(CHARS)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", add_bos_token=True)
    fast.save_pretrained(path)


def save_tiny_qwen3(path: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Qwen3ForCausalLM (d_mlp 128) with a char tokenizer."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(CHARS) + 3, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(seed)
    Qwen3ForCausalLM(config).save_pretrained(path)
    save_char_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory) -> Path:
    """The tiny Qwen3 saved as an HF directory."""
    return save_tiny_qwen3(tmp_path_factory.mktemp("tiny_qwen3"))


@pytest.fixture(scope="session")
def tiny_family_dir(tmp_path_factory) -> Path:
    """A family directory as the zoo writes it: three tiny variants and family.csv."""
    import pandas as pd

    root = tmp_path_factory.mktemp("tiny_family")
    rows = []
    for seed, name in enumerate(("alpha", "beta", "gamma")):
        save_tiny_qwen3(root / name, seed)
        rows.append({"name": name, "path": name, "method": "random-init", "params": "{}", "parents": "",
                     "accuracy": 0.1 * seed})
    pd.DataFrame(rows).to_csv(root / "family.csv", index=False)
    return root


@pytest.fixture(scope="session")
def tiny_qwen3_bridge(tiny_qwen3_dir):
    """The tiny Qwen3 booted as a TransformerBridge (float32, CPU)."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(str(tiny_qwen3_dir), device="cpu")


class NexPlanted:
    """Planted NEX responses: bursts of new "good" neurons (layer 3) that the following exploit
    rows reuse (A cycles), or of new "bad" neurons (layer 5) that they ignore (B cycles)."""

    GOOD, BAD, BACKGROUND, NOISE = 3, 5, 7, 9  # layers of the neuron pools
    BURST, EXPLOIT, NEW = 3, 6, 30  # rows per burst, rows per exploit run, new neurons per burst row

    def __init__(self, root: Path):
        self.root = root

    def response(self, rng, kinds: str = "ABAB"):
        """(rows as (keys, mass, n_tokens), planted E/X labels) of one response."""
        from nex_causal.cache import pack_keys

        pools = {"A": rng.permutation(300), "B": rng.permutation(300)}
        used = {"A": 0, "B": 0}
        background = pack_keys(self.BACKGROUND, rng.choice(65536, 25, replace=False))
        noise = iter(pack_keys(self.NOISE, rng.choice(65536, 1000, replace=False)))
        rows, labels = [], []
        for c, kind in enumerate(kinds):
            layer = self.GOOD if kind == "A" else self.BAD
            burst = []
            for j in range(self.BURST):
                units = pools[kind][used[kind]:used[kind] + self.NEW]
                used[kind] += self.NEW
                keys = pack_keys(layer, units)
                burst.append(keys)
                if c == 0 and j == 0:
                    keys = np.concatenate([keys, background])
                rows.append((keys, rng.uniform(1, 2, len(keys)), 32))
                labels.append(True)
            reused = np.concatenate(burst)
            for _ in range(self.EXPLOIT):
                keep = rng.choice(reused, 25, replace=False) if kind == "A" else rng.choice(background, 20, False)
                keys = np.concatenate([keep, rng.choice(background, 5, replace=False), [next(noise)]])
                rows.append((keys, rng.uniform(1, 2, len(keys)), 32))
                labels.append(False)
        return rows, np.array(labels)

    def cache(self, kinds=("ABAB",) * 8, seed: int = 0, name: str | None = None):
        """A SparseCache of one planted response per entry of ``kinds``."""
        from nex_causal.cache import SparseCache, SparseCacheWriter

        path = self.root / (name or f"planted-{seed}-{'-'.join(kinds)}")
        if not path.exists():
            rng = np.random.default_rng(seed)
            with SparseCacheWriter(path) as writer:
                for r, k in enumerate(kinds):
                    writer.append(self.response(rng, k)[0], meta={"prompt_id": f"p{r // 2}", "sample_index": r % 2})
        return SparseCache.open(path)


@pytest.fixture(scope="session")
def nex_planted(tmp_path_factory) -> NexPlanted:
    """Builder of planted NEX responses and caches (see ``NexPlanted``)."""
    return NexPlanted(tmp_path_factory.mktemp("nex_planted"))
