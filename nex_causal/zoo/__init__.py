"""The embedded model organism: a small Qwen3 trained here, its experts, and their merge family.

- ``task``: seek-and-compute problems whose chains of thought explore, then exploit;
- ``tokenizer``: the character-level tokenizer, saved in the Hugging Face format;
- ``recipe``: architecture, training stages and evaluation settings, and their content keys;
- ``train``: deterministic training of the base model and the experts;
- ``family``: the mergekit merges over the experts;
- ``build``: the zoo directory, its cache by content, and the family table.
"""

from nex_causal.zoo.build import build, default_zoo_dir, find_variant, load_family, train_models
from nex_causal.zoo.task import organism_tasks

__all__ = ["build", "default_zoo_dir", "find_variant", "load_family", "organism_tasks", "train_models"]
