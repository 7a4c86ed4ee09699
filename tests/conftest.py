"""Shared fixtures. Model fixtures build tiny, randomly initialised HF models on disk in
seconds, so tests exercise the real TransformerBridge instead of mocks."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Qwen3ForCausalLM with a char tokenizer, saved as an HF dir."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path = tmp_path_factory.mktemp("tiny_qwen3")
    config = Qwen3Config(
        vocab_size=len(CHARS) + 3, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(path)
    save_char_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_qwen3_bridge(tiny_qwen3_dir):
    """The tiny Qwen3 booted as a TransformerBridge (float32, CPU)."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(str(tiny_qwen3_dir), device="cpu")
