"""Windows of a cache's responses as text, exported for a person to label explore (E) or exploit (X).

An annotator reads the windows of a few responses and marks each one E (the window brings
in something new: an approach, a sub-goal, a guess, a correction) or X (it carries out,
restates or checks what came before). The windows are exactly the cache's rows, so each
human label lines up with one label of NEX_METHOD section 3.

Export writes the same windows twice: ``<out>.csv`` (columns ``COLUMNS``, ``label`` blank)
for a spreadsheet, and ``<out>.html``, a self-contained page (inline CSS and JavaScript, no
network) with an E/X choice per window that downloads the filled CSV. Neither file holds
the HMM labels: the annotation is blind.

Window text: the cache's ``responses.parquet`` holds each response's generated token ids
(``token_ids``), and row j covers ids [t_j, t_{j+1}). They are decoded with the capturing
model's tokenizer (the model named in the cache's ``capture.json``, found as
``models.resolve_model`` finds it, or one given explicitly). Row j's text is what its
tokens add to the decoded response: the part of the decoded prefix ids[:t_{j+1}] that the
whole decode shares, minus what came before. A character whose bytes straddle two windows
goes to the window where it is complete, special tokens (the EOS) show no text, and the
windows put together are exactly the decoded response.

Cells that begin with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) are written
with a leading apostrophe, so a spreadsheet shows them as text instead of running them as
formulas; ``nex.annotate`` scores the filled CSV against the HMM phases.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nex_causal.cache import CAPTURE_FILE, SparseCache
from nex_causal.errors import NexError
from nex_causal.io import atomic_path, spreadsheet_safe
from nex_causal.nex.annotate import COLUMNS, window_bounds


def load_tokenizer(cache_dir: str | os.PathLike, model: str | None = None):
    """The tokenizer of ``model``, default the model named in ``cache_dir/capture.json``."""
    from nex_causal.models.loading import tokenizer_of

    if model is None:
        config = Path(cache_dir) / CAPTURE_FILE
        model = json.loads(config.read_text()).get("config", {}).get("model") if config.is_file() else None
        if model is None:
            raise NexError(f"{config} does not name the capturing model: pass --tokenizer "
                           "(a model name or directory)")
    return tokenizer_of(model)


# --- windows and their text ---------------------------------------------------------------

def window_texts(token_ids: np.ndarray, bounds: np.ndarray, tokenizer) -> list[str]:
    """The text each window of ids adds to the decoded response; row j covers ids [b[j], b[j+1]).

    Decoding a prefix can end in half a character (a replacement character) or differ in
    spacing, so each cut is where the prefix's decode stops agreeing with the whole decode.
    """
    ids = [int(i) for i in token_ids]
    full = tokenizer.decode(ids, skip_special_tokens=True)
    cuts = [len(os.path.commonprefix([tokenizer.decode(ids[:b], skip_special_tokens=True), full]))
            for b in bounds[1:-1]]
    cuts = np.maximum.accumulate([0, *cuts, len(full)])
    return [full[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def annotation_windows(cache: SparseCache, responses: Sequence[int], tokenizer,
                       progress: bool = False) -> pd.DataFrame:
    """One row per window of the chosen responses, with its text and a blank label (``COLUMNS``)."""
    meta = cache.responses
    if meta is None or "token_ids" not in meta.columns:
        raise NexError(f"cache {cache.path} has no generated token ids (responses.parquet, token_ids): "
                       "annotation needs a cache written by the current `nex-causal capture`")
    records = []
    for r in tqdm(responses, desc="windows", disable=not progress):
        if not 0 <= r < cache.n_responses:
            raise NexError(f"response {r} is out of range: cache {cache.path} holds {cache.n_responses} "
                           f"responses (0..{cache.n_responses - 1})")
        info = meta.iloc[r]
        bounds = window_bounds(cache, r)
        if len(info["token_ids"]) != bounds[-1]:
            raise NexError(f"response {r} has {len(info['token_ids'])} token ids but its rows cover "
                           f"{bounds[-1]} tokens: the cache is inconsistent, re-capture it")
        for j, piece in enumerate(window_texts(info["token_ids"], bounds, tokenizer)):
            records.append({"response": r, "prompt_id": str(info.get("prompt_id", "")),
                            "sample_index": int(info.get("sample_index", 0)), "row": j,
                            "token_start": int(bounds[j]), "token_end": int(bounds[j + 1]),
                            "text": piece, "label": ""})
    return pd.DataFrame(records, columns=list(COLUMNS))


# --- the annotator's page -----------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #111; }
.guide { background: #f4f4f4; padding: .6rem 1rem; border-left: 4px solid #555; }
.bar { position: sticky; top: 0; background: #fff; padding: .5rem 0; border-bottom: 1px solid #ccc; z-index: 1; }
section { margin: 1.5rem 0; }
.win { display: grid; grid-template-columns: 7rem 1fr 7rem; gap: .8rem; padding: .4rem .3rem;
       border-left: 6px solid transparent; border-bottom: 1px dotted #ccc; }
.win.E { border-left: 6px double #000; background: #eee; }
.win.X { border-left: 6px solid #bbb; }
.meta { color: #555; font-size: 12px; }
.text, pre { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 13px; margin: 0; }
label { margin-right: .6rem; cursor: pointer; }
</style></head><body>
<h1>__TITLE__</h1>
<div class="guide"><p>Mark every window of each response as <b>E</b> (explore: it brings in something
new, such as an approach, a sub-goal, a guess, a correction or a doubt) or <b>X</b> (exploit: it
carries out, restates or checks what earlier windows set up). Judge each window in the context
of the ones before it. When done, press <i>Download CSV</i> and send the file back.</p></div>
<div class="bar"><button id="download">Download CSV</button> <span id="count"></span></div>
<div id="responses"></div>
<script type="application/json" id="windows">__DATA__</script>
<script>
const COLUMNS = __COLUMNS__;

function csvField(value) {
  const text = String(value);
  return /[",\\r\\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
}

// The export's CSV with each window's label filled in from labels (window index -> "E" | "X").
function labelledCsv(windows, labels) {
  const lines = [COLUMNS.join(",")];
  windows.forEach(function (w, i) {
    const row = Object.assign({}, w, {label: labels[i] || ""});
    lines.push(COLUMNS.map(function (c) { return csvField(row[c]); }).join(","));
  });
  return lines.join("\\n") + "\\n";
}

if (typeof document !== "undefined") {
  const data = JSON.parse(document.getElementById("windows").textContent);
  const labels = {};
  const root = document.getElementById("responses");
  const count = document.getElementById("count");
  const show = function () {
    count.textContent = Object.keys(labels).length + " of " + data.windows.length + " windows labelled";
  };
  let section = null;
  data.windows.forEach(function (w, i) {
    if (!section || section.dataset.response !== String(w.response)) {
      section = root.appendChild(document.createElement("section"));
      section.dataset.response = String(w.response);
      const head = section.appendChild(document.createElement("h2"));
      head.textContent = "Response " + w.response + " (prompt " + w.prompt_id + ", sample " + w.sample_index + ")";
      const details = section.appendChild(document.createElement("details"));
      details.appendChild(document.createElement("summary")).textContent = "prompt";
      details.appendChild(document.createElement("pre")).textContent = data.prompts[String(w.response)] || "";
    }
    const win = section.appendChild(document.createElement("div"));
    win.className = "win";
    const meta = win.appendChild(document.createElement("div"));
    meta.className = "meta";
    meta.textContent = "row " + w.row + ", tokens " + w.token_start + "-" + w.token_end;
    const text = win.appendChild(document.createElement("div"));
    text.className = "text";
    text.textContent = w.text;
    const choice = win.appendChild(document.createElement("div"));
    ["E", "X"].forEach(function (phase) {
      const label = choice.appendChild(document.createElement("label"));
      const input = label.appendChild(document.createElement("input"));
      input.type = "radio";
      input.name = "w" + i;
      input.value = phase;
      input.addEventListener("change", function () { labels[i] = phase; win.className = "win " + phase; show(); });
      label.appendChild(document.createTextNode(" " + phase));
    });
  });
  document.getElementById("download").addEventListener("click", function () {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([labelledCsv(data.windows, labels)], {type: "text/csv"}));
    link.download = data.name + "-labels.csv";
    link.click();
  });
  show();
}
</script></body></html>
"""


def _script_json(obj) -> str:
    """JSON that is safe inside a <script> element (no '</script>' can close it early)."""
    return json.dumps(obj, ensure_ascii=False).replace("<", "\\u003c")


def render_html(windows: pd.DataFrame, prompts: dict[int, str], name: str) -> str:
    """The self-contained annotation page for ``windows`` (``COLUMNS``); ``prompts`` by response."""
    data = {"name": name, "windows": windows[list(COLUMNS)].to_dict("records"),
            "prompts": {str(r): p for r, p in prompts.items()}}
    return (PAGE.replace("__TITLE__", html.escape(f"E/X annotation: {name}"))
            .replace("__COLUMNS__", json.dumps(list(COLUMNS)))
            .replace("__DATA__", _script_json(data)))


def export_annotation(cache_dir: str | os.PathLike, responses: Sequence[int], out: str | os.PathLike,
                      *, tokenizer=None, progress: bool = False) -> tuple[Path, Path]:
    """Write ``<out>.csv`` and ``<out>.html`` for annotating the windows of ``responses``.

    ``tokenizer``: a tokenizer, a model name/directory, or None for the cache's own model.
    """
    cache = SparseCache.open(cache_dir)
    if not responses:
        raise NexError("no responses chosen: pass --responses, e.g. 0,3,5")
    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(cache_dir, None if tokenizer is None else os.fspath(tokenizer))
    windows = annotation_windows(cache, list(responses), tokenizer, progress)
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in {".csv", ".html"} else out
    csv_path, html_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".html")
    with atomic_path(csv_path) as tmp:
        spreadsheet_safe(windows).to_csv(tmp, index=False)
    prompts = {r: str(cache.responses.iloc[r].get("prompt", "")) for r in dict.fromkeys(responses)}
    with atomic_path(html_path) as tmp:
        tmp.write_text(render_html(windows, prompts, stem.name), encoding="utf-8")
    return csv_path, html_path


