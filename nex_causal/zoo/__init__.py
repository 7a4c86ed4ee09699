"""The embedded model organisms: small Qwen3s trained here, their experts, and their merge families.

Three organisms share the code and differ in their task and size: ``trek`` (6 x 512 MLP
neurons, ~200-token traces with several searches, backtracking and re-checks; the documented
negative case), ``seek`` (4 x 256 neurons, ~100-token traces: fast, for tests, and NEX's
counter-example) and ``scout`` (6 x 512 neurons: the positive control, whose exploration is
planted and whose strategies are routed to known MLP units: ``scout``, ``route``,
``groundtruth``).

- ``task``: seek-and-compute problems whose chains of thought explore, then exploit;
- ``tokenizer``: the character-level tokenizer, saved in the Hugging Face format;
- ``recipe``: architecture, training stages and evaluation settings, and their content keys;
- ``train``: deterministic training of the base model and the experts;
- ``family``: the mergekit merges over the experts;
- ``build``: the zoo directory, its cache by content, and the family table.

Importing the package registers the organisms' task families (``trek:N``, ``seek:N``, ``scout:N``, and
``organism:N`` for the default) with ``nex_causal.models.tasks`` and their variant names
(``linear-0.5``, ``seek:linear-0.5``) with ``nex_causal.models.variants``.
"""

from nex_causal.models.variants import register_resolver
from nex_causal.zoo.build import (
    build,
    default_zoo_dir,
    describe,
    find_variant,
    train_models,
    zoo_organism,
)
from nex_causal.zoo.task import organism_tasks

register_resolver(find_variant)

__all__ = ["build", "default_zoo_dir", "describe", "find_variant", "organism_tasks", "train_models", "zoo_organism"]
