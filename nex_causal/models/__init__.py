"""Models: variants as TransformerLens bridges, their MLP neurons, generation, evaluation and task sets.

    loading      load_bridge (name, directory, HF id, in-memory), the checks every load passes
    files        what a model directory must hold: no custom code, every tensor, finite values
    geometry     MLP neurons: their hook (mlp_hook) and their weights (MLPGeometry)
    generation   seeded batched decoding through the bridge or plain Hugging Face
    evaluation   accuracy on a task set, log-probabilities of given continuations
    tasks        task sets with verifiable answers and their registered families
    variants     variant names (resolvers) and family tables

Names are imported on first use, so ``import nex_causal.models`` loads no torch.
"""

from nex_causal.registry import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "load_bridge": "loading", "resolve_model": "loading", "tokenizer_of": "loading", "plain_model": "loading",
    "MLPGeometry": "geometry", "mlp_hook": "geometry", "generate": "generation", "evaluate": "evaluation",
    "Problem": "tasks", "TaskSet": "tasks", "load_tasks": "tasks", "load_family": "variants",
})
