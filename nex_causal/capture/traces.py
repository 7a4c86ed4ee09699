"""Traces: sampled responses as token ids, from this project's sampler or from any other engine.

A trace is one prompt and one response. Replay (``nex_causal.capture.replay``) feeds it through a
model to record activations, so what it needs is the prompt text and the generated token
ids (the end-of-sequence token included when it ended the response). Three sources read
into the same ``Trace``:

- the parquet table ``nex-causal sample`` writes (``prompt_id``, ``sample_index``,
  ``prompt``, ``response``, ``prompt_token_ids``, ``token_ids``, ``finish_reason``,
  ``answer``, ``target``, ``correct`` and the per-token statistics of
  ``sampling.TOKEN_STATS``; the sampling config, backend and versions in the schema
  metadata under ``nex_causal``);
- a cache's ``responses.parquet``, which holds the same columns;
- JSONL from any engine, one object per line with ``prompt`` (text) and either
  ``response_token_ids`` (ids, taking precedence) or ``response`` (text, tokenised with the
  replaying model's tokenizer and required to decode back to itself), and optionally
  ``prompt_id``, ``sample_index``, ``target``, ``finish_reason`` and ``prompt_token_ids``. Lines without a
  ``prompt_id`` are grouped by prompt text, and ``sample_index`` counts a prompt's lines.

Errors name the file and the line (or row) of the trace at fault.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nex_causal.errors import NexError
from nex_causal.io import atomic_path, jsonl_objects

META_KEY = b"nex_causal"  # parquet schema metadata: what made a traces table


@dataclass(frozen=True)
class Trace:
    """One prompt and one generated response (``token_ids``), with what is known of its answer."""

    prompt_id: str
    sample_index: int
    prompt: str
    response: str
    token_ids: np.ndarray
    finish_reason: str = "unknown"
    target: str | None = None
    prompt_ids: np.ndarray | None = None  # the prompt as the sampler tokenised it, when recorded
    answer: str | None = None  # the sampler's extracted answer and verdict, when recorded
    correct: bool | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


def write_traces(records: list[dict[str, Any]], path: str | Path) -> None:
    """Write trace ``records`` (the columns above) as one parquet table, atomically."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(pd.DataFrame(records), preserve_index=False).replace_schema_metadata({})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def join_traces(parts: list[Path], out: str | Path, meta: dict[str, Any]) -> None:
    """Write the traces tables ``parts``, in order, as one table at ``out`` with ``meta``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(p) for p in parts])
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)


def traces_meta(path: str | Path) -> dict[str, Any]:
    """What made a traces parquet (its sampling stamp, backend and versions); {} for other files."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def read_traces(path: str | Path, tokenizer, vocab_size: int, max_tokens: int | None = None) -> list[Trace]:
    """The traces in ``path`` (parquet or JSONL), checked against the replaying model's vocabulary.

    Every prompt and sample index appears once (a Best-of-N pool needs one response per
    sample) and no index is negative; with ``max_tokens`` (a bound on what replay can hold),
    no trace is longer than that.
    """
    path = Path(path)
    if not path.is_file():
        raise NexError(f"traces file {path} does not exist: check the path")
    if path.suffix == ".parquet":
        traces = _from_parquet(path, tokenizer, vocab_size)
    elif path.suffix == ".jsonl":
        traces = _from_jsonl(path, tokenizer, vocab_size)
    else:
        raise NexError(f"traces file {path} is neither .parquet nor .jsonl: write one of the two")
    if not traces:
        raise NexError(f"traces file {path} holds no traces: add one response per line or row")
    seen: dict[tuple[str, int], str] = {}
    for where, trace in traces:
        if trace.sample_index < 0:
            raise NexError(f"{where}: sample_index {trace.sample_index} is negative: number a prompt's samples 0, 1, ...")
        key = (trace.prompt_id, trace.sample_index)
        if key in seen:
            raise NexError(f"{where} repeats prompt {key[0]!r} sample {key[1]} of {seen[key]}: give each sample of a "
                           "prompt its own sample_index (Best-of-N pools need one response per sample)")
        seen[key] = where
        length = trace.n_tokens + (0 if trace.prompt_ids is None else len(trace.prompt_ids))
        if max_tokens is not None and length > max_tokens:
            raise NexError(f"{where}: {length} tokens, more than the {max_tokens} replay can hold for this model: "
                           "not a trace of this model; drop it")
    return [trace for _, trace in traces]


def token_ids(values: Any, vocab_size: int, where: str, part: str) -> np.ndarray:
    """``values`` as int64 token ids of a model with ``vocab_size`` ids; one line naming the first bad one."""
    try:
        ids = np.asarray(values, np.int64).reshape(-1)
    except (OverflowError, ValueError, TypeError):
        raise NexError(f"{where}: the {part} token ids are not integers of the model's vocabulary") from None
    if len(ids) == 0:
        raise NexError(f"{where}: the {part} has no tokens: drop the trace or give its tokens")
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if len(bad):
        raise NexError(f"{where}: {part} token id {int(bad[0])} is outside the model's vocabulary of {vocab_size} ids: "
                       "were these traces made with another tokenizer?")
    return ids


def _text_ids(tokenizer, text: str, where: str) -> np.ndarray:
    """The ids of a response given as text, which must decode back to the same text."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    back = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if back != text:
        at = next((i for i, (a, b) in enumerate(zip(back, text)) if a != b), min(len(back), len(text)))
        raise NexError(f"{where}: the response text does not round-trip through the model's tokenizer (it "
                       f"differs at character {at}): give response_token_ids, or traces of this model")
    return np.asarray(ids, np.int64)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _from_parquet(path: Path, tokenizer, vocab_size: int) -> list[tuple[str, Trace]]:
    import pandas as pd

    try:
        table = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several kinds for a file that is not parquet
        raise NexError(f"cannot read {path} as parquet ({type(err).__name__}): is it a traces table?") from None
    missing = [c for c in ("prompt", "token_ids") if c not in table.columns]
    if missing:
        raise NexError(f"{path} has no column {missing[0]!r}: write traces with `nex-causal sample` or as JSONL")
    out = []
    for i, row in enumerate(table.to_dict("records")):
        row = {k: (None if _missing(v) else v) for k, v in row.items()}
        where = f"{path}, row {i}"
        ids = token_ids(row["token_ids"], vocab_size, where, "response")
        prompt_ids = row.get("prompt_token_ids")
        text = row.get("response")
        out.append((where, Trace(
            prompt_id=str(row.get("prompt_id") or i), sample_index=int(row.get("sample_index") or 0),
            prompt=row["prompt"], token_ids=ids,
            response=text if isinstance(text, str) else tokenizer.decode(ids.tolist(), skip_special_tokens=True),
            finish_reason=str(row.get("finish_reason") or "unknown"),
            target=None if row.get("target") is None else str(row["target"]),
            prompt_ids=None if prompt_ids is None else token_ids(prompt_ids, vocab_size, where, "prompt"),
            answer=row.get("answer"), correct=None if row.get("correct") is None else bool(row["correct"]))))
    return out


def _from_jsonl(path: Path, tokenizer, vocab_size: int) -> list[tuple[str, Trace]]:
    out: list[tuple[str, Trace]] = []
    by_text: dict[str, str] = {}  # prompt text -> the id given to lines without a prompt_id
    counts: dict[str, int] = {}
    for _, where, record in jsonl_objects(path):
        if not isinstance(record.get("prompt"), str):
            raise NexError(f"{where}: expected an object with a text field 'prompt'")
        ids, text = record.get("response_token_ids"), record.get("response")
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise NexError(f"{where}: 'response_token_ids' must be a list of integers")
            ids = token_ids(ids, vocab_size, where, "response")
            if not isinstance(text, str):
                text = tokenizer.decode(ids.tolist(), skip_special_tokens=True) if len(ids) else ""
        elif isinstance(text, str):
            ids = _text_ids(tokenizer, text, where)
        else:
            raise NexError(f"{where}: give the response as 'response' (text) or 'response_token_ids'")
        prompt = record["prompt"]
        pid = str(record["prompt_id"]) if record.get("prompt_id") is not None else \
            by_text.setdefault(prompt, f"{path.stem}-{len(by_text)}")
        index = record.get("sample_index", counts.get(pid, 0))
        if not isinstance(index, int) or isinstance(index, bool):
            raise NexError(f"{where}: 'sample_index' must be an integer")
        counts[pid] = max(counts.get(pid, 0), index + 1)
        target, prompt_ids = record.get("target"), record.get("prompt_token_ids")
        if prompt_ids is not None and not (isinstance(prompt_ids, list) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in prompt_ids)):
            raise NexError(f"{where}: 'prompt_token_ids' must be a list of integers")
        if target is not None and (isinstance(target, bool) or not isinstance(target, (str, int, float))
                                   or (isinstance(target, float) and not math.isfinite(target))):
            raise NexError(f"{where}: 'target' must be the gold answer as text or a finite number, got {target!r}")
        out.append((where, Trace(pid, index, prompt, text, ids, str(record.get("finish_reason") or "unknown"),
                                 None if target is None else str(target),
                                 None if prompt_ids is None else token_ids(prompt_ids, vocab_size, where, "prompt"))))
    return out
