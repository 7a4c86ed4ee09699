"""nex_causal: causal interventions on LLM MLP neurons, guided by NEX explore-exploit scores."""

__version__ = "0.1.0"
