"""nex_causal: causal interventions on LLM MLP neurons, guided by NEX explore-exploit scores.

The packages users call: ``nex_causal.nex`` (NEX itself), ``nex_causal.models.loading``
(``load_bridge``), ``nex_causal.capture.record``, ``nex_causal.selectors``, ``nex_causal.ranking.scores``,
``nex_causal.intervene``, ``nex_causal.run.experiment`` and ``nex_causal.figures``; ``docs/``
maps the rest. Importing the package registers the embedded organism (``nex_causal.zoo``):
its task family and its variant names.
"""

__version__ = "0.1.0"

from nex_causal import zoo as _zoo  # noqa: E402,F401  (registration only)
