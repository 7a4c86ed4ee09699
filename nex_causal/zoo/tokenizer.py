"""A character-level tokenizer for the organism, saved in the Hugging Face format.

One token per character (a ``tokenizers`` WordLevel model over single characters), with
``<pad>`` = 0, ``<eos>`` = 1, ``<unk>`` = 2. Like Qwen3's own tokenizer it has no BOS token:
TransformerLens's Qwen3 adapter strips a tokenizer-added BOS (``default_prepend_bos`` is
False for Qwen), so a BOS-free encoding is the one the bridge's ``to_tokens`` (by default),
``AutoTokenizer`` and the training loop all agree on. (``prepend_bos=True`` makes the bridge
prepend EOS as a stand-in BOS, as it does for real Qwen3; the organism never saw that.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<eos>", "<unk>")
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz =:|!#*+-,.?;"
PAD_ID, EOS_ID, UNK_ID = range(3)
VOCAB = {token: i for i, token in enumerate((*SPECIALS, *ALPHABET))}


def char_tokenizer() -> PreTrainedTokenizerFast:
    """The organism's tokenizer: every character a token, no special tokens added."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left")


def encode(text: str) -> list[int]:
    """Token ids of ``text`` (characters outside the alphabet become ``<unk>``)."""
    return [VOCAB.get(ch, UNK_ID) for ch in text]


def save_tokenizer(model_dir: str | Path) -> None:
    """Write tokenizer.json and tokenizer_config.json into ``model_dir``."""
    char_tokenizer().save_pretrained(str(model_dir))
