"""Best-of-N selection: pick one of a prompt's N sampled responses without labels.

Each selector sees the N responses of one prompt (the rows of ``responses.parquet`` that
share a ``prompt_id``, with their activation cache) and keeps one; its accuracy is the mean
over prompts of ``correct`` of the kept response, with a BCa bootstrap interval over
prompts (one resample shared by all selectors). The definitions are NEX_METHOD sections 6
and 8, one family a module:

    neurons      nex-self, nex-cross; NAD minact / medoid / knn-medoid / dbscan-medoid /
                 consensus-min, each also @early
    confidence   entropy, logprob; self-certainty, self-certainty-borda; deepconf-lowest /
                 -bottom10 / -tail, deepconf-weighted-vote, deepconf-filter10-vote
    answers      majority-vote (and the weighted vote the voting selectors cast)
    references   random, avg@n, oracle

A new selector is one function registered in ``SELECTORS`` (``selectors.base``) by the
module of its family; ``table`` runs them (``select``, ``selection_table``), ``pool`` groups a
cache's responses by prompt, ``config`` holds ``SelectionConfig``. "Tokens" are the generated tokens a selector reads to make its pick,
averaged over prompts. A selector whose input is missing (no token statistics, no
extracted answers, no weights) is reported as skipped with the reason.
"""

from nex_causal.registry import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "SELECTORS": "base", "Pool": "pool", "SelectionConfig": "config", "POOLED": "table", "select": "table",
    "selection_table": "table",
})
