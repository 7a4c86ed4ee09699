"""The embedded model organism: a small Qwen3 trained here, its experts, and their merge family.

- ``task``: seek-and-compute problems whose chains of thought explore, then exploit;
- ``tokenizer``: the character-level tokenizer, saved in the Hugging Face format;
- ``recipe``: architecture, training stages and evaluation settings, and their content keys;
- ``train``: deterministic training of the base model and the experts;
- ``family``: the mergekit merges over the experts;
- ``build``: the zoo directory, its cache by content, and the family table.

Importing the package registers the organism's task family (``organism:N``) with
``nex_causal.tasks`` and its variant names with ``nex_causal.variants``.
"""

from nex_causal.variants import register_resolver
from nex_causal.zoo.build import build, default_zoo_dir, describe, find_variant, train_models
from nex_causal.zoo.task import organism_tasks

register_resolver(find_variant)

__all__ = ["build", "default_zoo_dir", "describe", "find_variant", "organism_tasks", "train_models"]
