"""Annotation tooling: windows that put the response back together, a blind CSV and HTML page
whose own JavaScript writes a CSV that reads back, and agreement numbers checked by hand."""

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from nex_causal.cache import SparseCacheWriter, seal
from nex_causal.capture import annotation as X
from nex_causal.cli import main
from nex_causal.errors import NexError
from nex_causal.io import write_json
from nex_causal.nex import annotate as A
from nex_causal.nex.config import NexConfig
from nex_causal.nex.phases import segment

PATTERN = "XXEEXXXEEXXXEEXX"  # planted phases of response 0: E rows recruit 40 new neurons each
WINDOW = 4


def planted_rows(pattern: str) -> list[tuple[np.ndarray, np.ndarray, int]]:
    rows, nxt, last = [], 0, np.empty(0, np.int64)
    for p in pattern:
        if p == "E":
            keys = last = np.arange(nxt, nxt + 40)
            nxt += 40
        else:
            keys = np.r_[last[:20], nxt]  # reuse the last E run's neurons, one new
            nxt += 1
        rows.append((keys.astype(np.uint32), np.ones(len(keys), np.float32), WINDOW))
    return rows


TEXTS = [  # decoded with the char tokenizer of the tiny model (tests/conftest.py)
    "".join("abcdefghij"[i % 10] for i in range(len(PATTERN) * WINDOW)),
    "so, 7*8 = 56; check: 7*8 = 56. ok",
    "12+3=15",  # ended with an EOS token, which has no text
]
TRICKY = ['say "7*8" = 56\nok, done', "café </script> é!"]  # quotes, newline, 2-byte characters, a tag


def byte_tokenizer():
    """One token per UTF-8 byte (byte-level BPE without merges), EOS = 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0} | {c: i + 1 for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def write_cache(path, texts, tokenizer, ends_with_eos=()):
    """A cache of ``texts``: response 0 has the planted rows, the others rows of 5 neurons with
    row 1 empty (the method skips it)."""
    with SparseCacheWriter(path) as writer:
        for r, text in enumerate(texts):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += [tokenizer.eos_token_id] * (r in ends_with_eos)
            n = len(ids)
            rows = planted_rows(PATTERN) if r == 0 and n == len(PATTERN) * WINDOW else [
                (np.arange(5 * (s != WINDOW), dtype=np.uint32), np.ones(5 * (s != WINDOW), np.float32),
                 min(WINDOW, n - s)) for s in range(0, n, WINDOW)]
            writer.append(rows, meta={"prompt_id": f"p{r}", "sample_index": r % 2, "prompt": f"question {r}?",
                                      "response": text, "n_tokens": n, "token_ids": np.array(ids, np.int32),
                                      "finish_reason": "eos" if r in ends_with_eos else "length"})
    return path


@pytest.fixture()
def cache_dir(tmp_path, tiny_qwen3_dir):
    """The cache of ``TEXTS``; the model in capture.json is a directory holding a char tokenizer."""
    from transformers import AutoTokenizer

    path = write_cache(tmp_path / "cache", TEXTS, AutoTokenizer.from_pretrained(tiny_qwen3_dir), ends_with_eos=(2,))
    write_json(path / "capture.json", {"config": {"model": str(tiny_qwen3_dir), "window": WINDOW}, "n_layers": 2,
                                       "d_mlp": 65536})
    seal(path)
    return path


def test_windows_are_the_cache_rows_and_rebuild_each_response(cache_dir, tmp_path):
    csv, page = X.export_annotation(cache_dir, [1, 2, 0], tmp_path / "ann.csv")
    assert (csv.name, page.name) == ("ann.csv", "ann.html")
    table = pd.read_csv(csv, keep_default_na=False, dtype={"text": str})
    assert list(table.columns) == list(A.COLUMNS) and (table["label"] == "").all()
    assert table["response"].drop_duplicates().tolist() == [1, 2, 0]  # the order asked for
    escaped = table["text"].str.startswith("'") & table["text"].str[1:2].isin(list("=+-@\t\r"))
    texts = table["text"].where(~escaped, table["text"].str[1:])  # a spreadsheet shows them as text, not formulas
    for r, text in enumerate(TEXTS):
        part = table["response"] == r
        assert "".join(texts[part]) == text
        assert table.loc[part, "token_start"].tolist() == list(range(0, part.sum() * WINDOW, WINDOW))
    eos = table[table["response"] == 2]
    assert eos["text"].tolist() == ["12+3", "'=15"] and eos["token_end"].tolist() == [4, 8]  # the EOS: no text


def test_a_character_split_across_windows_goes_where_it_is_complete(tmp_path):
    tokenizer = byte_tokenizer()
    ids = tokenizer("aé", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and tokenizer.decode(ids[:2]) == "a\ufffd"  # é is two byte tokens
    assert X.window_texts(ids, np.array([0, 1, 2, 3]), tokenizer) == ["a", "", "é"]
    assert X.window_texts(ids, np.array([0, 2, 3]), tokenizer) == ["a", "é"]
    cache = write_cache(tmp_path / "c", TRICKY, tokenizer)
    csv, _ = X.export_annotation(cache, [0, 1], tmp_path / "ann", tokenizer=tokenizer)
    table = pd.read_csv(csv, keep_default_na=False, dtype={"text": str})
    assert [table.loc[table["response"] == r, "text"].str.cat() for r in (0, 1)] == TRICKY
    assert "caf" in table["text"].tolist() and "é </" in table["text"].tolist()  # "é" = bytes 4-5: row 1


def test_token_ids_that_do_not_fill_the_rows_are_an_error(cache_dir, tmp_path):
    meta = pd.read_parquet(cache_dir / "responses.parquet")
    meta.at[1, "token_ids"] = meta.at[1, "token_ids"][:-1]
    meta.to_parquet(cache_dir / "responses.parquet")
    (cache_dir / "integrity.json").unlink()  # a cache whose table was edited by hand, with no record to catch it
    with pytest.raises(NexError, match="response 1 has 32 token ids but its rows cover 33"):
        X.export_annotation(cache_dir, [0, 1], tmp_path / "ann")
    meta.drop(columns="token_ids").to_parquet(cache_dir / "responses.parquet")
    with pytest.raises(NexError, match="no generated token ids"):
        X.export_annotation(cache_dir, [0], tmp_path / "ann")


@pytest.fixture()
def tricky_cache(tmp_path):
    """The cache of ``TRICKY`` and the byte tokenizer that decodes it."""
    tokenizer = byte_tokenizer()
    return write_cache(tmp_path / "tricky", TRICKY, tokenizer), tokenizer


def test_page_is_self_contained_blind_and_holds_the_windows(tricky_cache, tmp_path):
    cache, tokenizer = tricky_cache
    csv, page = X.export_annotation(cache, [0, 1], tmp_path / "ann", tokenizer=tokenizer)
    html = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']|https?://|@import""", html)  # nothing fetched
    assert html.count("</script>") == 2  # the response's "</script>" cannot close the data element
    data = json.loads(re.search(r'id="windows">(.*?)</script>', html, re.S).group(1))
    exported = pd.read_csv(csv, keep_default_na=False, dtype={"text": str})
    assert pd.DataFrame(data["windows"]).equals(exported)
    assert data["prompts"] == {"0": "question 0?", "1": "question 1?"}
    assert html.count('"hmm') == 0 and "HMM" not in html  # blind: no method labels in the page


FAKE_DOM = """
const made = [];
function element(tag) {
  const e = {tag: tag, children: [], dataset: {}, listeners: {}, textContent: "", className: "",
             appendChild(child) { this.children.push(child); return child; },
             addEventListener(type, f) { this.listeners[type] = f; }, click() {}};
  made.push(e);
  return e;
}
const byId = {responses: element("div"), count: element("span"), download: element("button"),
              windows: Object.assign(element("script"), {textContent: DATA})};
globalThis.document = {getElementById: (id) => byId[id], createElement: element,
                       createTextNode: (text) => ({text: text})};
let downloaded = null;
globalThis.Blob = class { constructor(parts) { downloaded = parts.join(""); } };
globalThis.URL = {createObjectURL: () => "blob:labels"};
"""
CLICK_AND_DOWNLOAD = """
const radios = made.filter((e) => e.tag === "input");
for (const [i, phase] of CHOSEN) radios.find((r) => r.name === "w" + i && r.value === phase).listeners.change();
byId.download.listeners.click();
process.stdout.write(JSON.stringify({radios: radios.length, sections: byId.responses.children.length,
  count: byId.count.textContent, file: made.find((e) => e.tag === "a").download, csv: downloaded}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's JavaScript")
def test_page_labels_download_as_a_csv_that_reads_back(tricky_cache, tmp_path):
    """Run the page's script in node on a minimal stand-in DOM: pick E/X on some windows, press
    Download, and read the CSV it hands over back with read_labels."""
    cache, tokenizer = tricky_cache
    csv, page = X.export_annotation(cache, [1, 0], tmp_path / "ann", tokenizer=tokenizer)
    html = page.read_text()
    data = re.search(r'id="windows">(.*?)</script>', html, re.S).group(1)
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    chosen = [[0, "E"], [2, "X"], [5, "E"], [2, "E"]]  # the last choice for a window wins
    program = (f"const DATA = {json.dumps(data)};\nconst CHOSEN = {json.dumps(chosen)};\n"
               f"{FAKE_DOM}\n{script}\n{CLICK_AND_DOWNLOAD}")
    result = json.loads(subprocess.run(["node", "-e", program], capture_output=True, text=True, check=True).stdout)
    exported = pd.read_csv(csv, keep_default_na=False, dtype={"text": str})
    assert (result["radios"], result["sections"]) == (2 * len(exported), 2)
    assert result["count"] == f"3 of {len(exported)} windows labelled" and result["file"] == "ann-labels.csv"
    (tmp_path / "filled.csv").write_text(result["csv"])
    filled = pd.read_csv(tmp_path / "filled.csv", keep_default_na=False, dtype={"text": str})
    assert filled.drop(columns="label").equals(exported.drop(columns="label"))  # text survives quoting
    assert "56\no" in filled["text"].tolist() and '"7*8' in filled["text"].tolist()
    labels = A.read_labels(tmp_path / "filled.csv")
    assert labels["label"].tolist() == ["E", "E", "E"]
    assert labels[["response", "row"]].values.tolist() == \
        exported.loc[[0, 2, 5], ["response", "row"]].values.tolist()


def test_agreement_matches_hand_computed_kappa_and_f1():
    # HMM: 4 E, 6 X. Human: 3 of the E agreed (one called X), 5 of the X agreed (one called E).
    hmm = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    human = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], bool)
    got = A.agreement(human, hmm)
    # p_o = 0.8, p_e = 0.4 * 0.4 + 0.6 * 0.6 = 0.52, kappa = 0.28 / 0.48
    assert got.kappa == pytest.approx(0.28 / 0.48)
    assert got.f1_explore == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # 0.75
    assert got.f1_exploit == pytest.approx(2 * 5 / (2 * 5 + 1 + 1))
    assert (got.n, got.accuracy) == (10, 0.8)
    same = A.agreement(np.zeros(3, bool), np.zeros(3, bool))  # one label on both sides
    assert np.isnan(same.kappa) and np.isnan(same.f1_explore) and same.f1_exploit == 1.0
    with pytest.raises(NexError, match="equally long"):
        A.agreement(human, hmm[:5])


def fill(csv, labels: dict[tuple[int, int], str], out):
    table = pd.read_csv(csv, keep_default_na=False, dtype={"text": str})
    for (r, j), label in labels.items():
        table.loc[(table["response"] == r) & (table["row"] == j), "label"] = label
    table.to_csv(out, index=False)
    return out


def test_score_recovers_the_planted_phases_and_counts_flips(cache_dir, tmp_path):
    csv, _ = X.export_annotation(cache_dir, [0], tmp_path / "ann")
    truth = {(0, j): p for j, p in enumerate(PATTERN)}
    result, table = A.score_annotation(cache_dir, fill(csv, truth, tmp_path / "a.csv"))
    assert (result.n, result.kappa, result.f1_explore, result.accuracy) == (16, 1.0, 1.0, 1.0)
    assert "".join(table["hmm"]) == PATTERN  # the HMM finds the planted phases
    flipped = dict(truth) | {(0, 2): "x", (0, 5): "e", (0, 9): " X "}  # two flips; case and spaces ignored
    result, _ = A.score_annotation(cache_dir, fill(csv, flipped, tmp_path / "b.csv"))
    human = np.array([flipped[(0, j)].strip().upper() == "E" for j in range(16)])
    assert result == A.agreement(human, np.array([p == "E" for p in PATTERN]))
    assert result.accuracy == 14 / 16


def test_score_compares_with_the_hmm_at_the_given_rho_and_min_run(cache_dir, tmp_path):
    csv, _ = X.export_annotation(cache_dir, [0], tmp_path / "ann")
    labels = fill(csv, {(0, j): "E" if j % 3 == 0 else "X" for j in range(16)}, tmp_path / "a.csv")
    _, table = A.score_annotation(cache_dir, labels, NexConfig(rho=0.6, min_run=4))
    slopes = np.array([40 if p == "E" else 1 for p in PATTERN]) / WINDOW
    expected = segment(slopes, rho=0.6, min_run=4).explore
    assert (table["hmm"] == "E").tolist() == expected.tolist()
    assert "".join(np.where(expected, "E", "X")) != PATTERN  # runs of 2 are absorbed at min_run 4


def test_blank_labels_and_rows_without_a_phase_are_left_out(cache_dir, tmp_path):
    csv, _ = X.export_annotation(cache_dir, [0, 1], tmp_path / "ann")
    labels = fill(csv, {(0, 2): "E", (0, 4): "X", (1, 0): "X", (1, 1): "E"}, tmp_path / "a.csv")
    result, table = A.score_annotation(cache_dir, labels)
    assert table[["response", "row"]].values.tolist() == [[0, 2], [0, 4], [1, 0], [1, 1]]
    assert table["hmm"].tolist()[:2] == ["E", "X"] and table["hmm"].iloc[3] == ""  # row 1 of response 1 is empty
    assert result.n == 3 and result.accuracy == pytest.approx((2 + (table["hmm"].iloc[2] == "X")) / 3)


def test_bad_label_files_are_named_in_one_line(cache_dir, tmp_path):
    csv, _ = X.export_annotation(cache_dir, [0], tmp_path / "ann")
    with pytest.raises(NexError, match=r"line 3 has label 'MAYBE'"):
        A.read_labels(fill(csv, {(0, 0): "E", (0, 1): "maybe"}, tmp_path / "a.csv"))
    with pytest.raises(NexError, match="no labelled window"):
        A.score_annotation(cache_dir, csv)
    shifted = pd.read_csv(fill(csv, {(0, 0): "E"}, tmp_path / "b.csv"), keep_default_na=False)
    shifted["token_end"] += 1
    shifted.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(NexError, match="do not match the rows of cache"):
        A.score_annotation(cache_dir, tmp_path / "b.csv")
    (tmp_path / "d.csv").write_text("response,row,token_start,token_end,label\n0,one,0,4,E\n")
    with pytest.raises(NexError, match="non-integer row"):
        A.read_labels(tmp_path / "d.csv")
    (tmp_path / "c.csv").write_text("response,row\n0,1\n")
    with pytest.raises(NexError, match="lacks column"):
        A.read_labels(tmp_path / "c.csv")
    with pytest.raises(NexError, match="out of range"):
        X.export_annotation(cache_dir, [7], tmp_path / "x")


def test_cli_export_then_score(cache_dir, tmp_path, capsys):
    stem = tmp_path / "cli"
    assert main(["annotate", "export", "--cache-dir", str(cache_dir), "--responses", "0", "--out", str(stem)]) == 0
    fill(stem.with_suffix(".csv"), {(0, j): p for j, p in enumerate(PATTERN)}, tmp_path / "filled.csv")
    assert main(["annotate", "score", "--cache-dir", str(cache_dir), "--labels", str(tmp_path / "filled.csv"),
                 "--out", str(tmp_path / "compare")]) == 0
    out = capsys.readouterr().out
    assert "16 windows (0 without an HMM phase): Cohen's kappa 1.000" in out
    assert pd.read_parquet(tmp_path / "compare.parquet")["hmm"].str.cat() == PATTERN
    assert main(["annotate", "export", "--cache-dir", str(cache_dir), "--responses", "0,a", "--out", "x"]) == 2
    assert "--responses" in capsys.readouterr().err
    (cache_dir / "capture.json").unlink()
    seal(cache_dir)
    assert main(["annotate", "export", "--cache-dir", str(cache_dir), "--responses", "0", "--out", "x"]) == 2
    assert "pass --tokenizer" in capsys.readouterr().err


def test_agreement_equals_sklearns_kappa_and_f1_on_random_and_degenerate_labels():
    """The counts-based kappa and F1 (what the positive control bootstraps) equal sklearn's, NaN where sklearn's is."""
    import warnings

    from sklearn.metrics import cohen_kappa_score, f1_score

    rng = np.random.default_rng(0)
    for i in range(600):
        n = int(rng.integers(1, 12))
        human, hmm = rng.random(n) < rng.random(), rng.random(n) < rng.random()
        if i % 7 == 0:
            hmm = human.copy()  # perfect agreement
        if i % 11 == 0:
            human[:], hmm[:] = True, True  # one label everywhere: kappa undefined
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kappa = cohen_kappa_score(hmm, human, labels=[True, False])
            f1 = f1_score(hmm, human, labels=[True, False], average=None, zero_division=np.nan)
        got = A.agreement(human, hmm)
        np.testing.assert_allclose([got.kappa, got.f1_explore, got.f1_exploit], [kappa, *f1], rtol=0, atol=1e-12)
        assert got.n == n and got.accuracy == (human == hmm).mean()
