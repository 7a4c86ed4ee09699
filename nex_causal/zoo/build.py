"""Building the zoo: the trained models, the merge family, and its accuracy table.

A zoo directory holds one Hugging Face model directory per variant (``DIR/<name>/``, each
with a ``zoo.json`` that records its content key, weights hash and accuracy) and the
family table ``DIR/family.csv`` (also ``.parquet`` and ``.meta.json``). Everything is
cached by content: a trained model's key hashes its recipe, a merge's key hashes its
parents' weights and its mergekit configuration, an accuracy's key hashes the weights and
the evaluation settings. A build skips every step whose key is already on disk, so an
interrupted build resumes, and a finished one is reused at once (``manifest.json``).

Each organism's trained models are committed under ``zoo/checkpoints/<organism>/`` and
copied, not retrained; ``retrain=True`` trains them from scratch and records in the
manifest whether the weights match the committed ones bit for bit. A variant is named
``<organism>:<name>`` (``seek:linear-0.5``), or by its name alone in the default organism.

Every key also holds the versions that change numbers (``versions.result_stack``), so a zoo
built under other versions is re-merged and re-evaluated, not reused. Each committed
checkpoint records the greedy accuracy it had when it was committed (``recorded_eval`` in
its ``zoo.json``); a build whose evaluation of that checkpoint differs by more than
``ACCURACY_TOLERANCE`` stops with a one-line error instead of writing a family table: the
stack it runs on computes other numbers than the one that made the weights.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from nex_causal.errors import NexError
from nex_causal.io import atomic_path, digest, locked, nex_home, remove_inside, write_json, write_table
from nex_causal.models.files import MODEL_RECORD, check_recorded_hash, weights_hash
from nex_causal.models.variants import FAMILY_FILE, load_family
from nex_causal.resume import check_ours
from nex_causal.versions import FIX, result_stack
from nex_causal.zoo.family import BASE, Merge, run_merge
from nex_causal.zoo.recipe import (
    DEFAULT_ORGANISM,
    RECIPES,
    TRAINING_VERSION,
    Recipe,
    recipe_for,
)
from nex_causal.zoo.task import TASKS, organism_tasks
from nex_causal.zoo.tokenizer import save_tokenizer

if TYPE_CHECKING:
    import pandas as pd
CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"  # <organism>/<name>/
META_FILE = MODEL_RECORD
MANIFEST = "manifest.json"  # a zoo directory's record: its organism, and its build key once the build is complete
# Greedy decoding is deterministic given the logits; across CPUs and BLAS builds float32
# logits of this size differ by ~1e-5, which flips a greedy choice only when the top two
# logits are that close. On the committed checkpoints the closest pair over every step of
# the 3 x 200 evaluation traces is 8.5e-5 apart, and at most 10 of 200 traces hold a step
# closer than 1e-3, so the expected change is 0 answers; the tolerance lets 4 of 200 move
# and still catches any broken stack (a KV cache that is ignored scores 0).
ACCURACY_TOLERANCE = 0.02


def default_zoo_dir(organism: str = DEFAULT_ORGANISM) -> Path:
    """``$NEX_CAUSAL_HOME/zoo/<organism>`` (``~/.cache/nex_causal/zoo/trek`` by default)."""
    return nex_home() / "zoo" / organism


def checkpoints_of(organism: str = DEFAULT_ORGANISM) -> Path:
    """Where ``organism``'s trained models are committed."""
    return CHECKPOINTS / organism


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or {} when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else {}


def read_meta(model_dir: Path) -> dict[str, Any]:
    """The variant's ``zoo.json``, or {} when there is none."""
    return read_json(model_dir / META_FILE)


# --- trained models -------------------------------------------------------------------------

def train_models(recipe: Recipe, out: str | Path, *, progress: bool = True,
                 only: Sequence[str] | None = None) -> dict[str, dict]:
    """Train the recipe's models (or ``only`` those, whose parents must be there) into ``out/<name>/``, in the
    recipe's order (a stage's place fixes its data stream), skipping those already there (by key)."""
    from transformers import Qwen3ForCausalLM

    from nex_causal.zoo.localize import add_sham
    from nex_causal.zoo.train import deterministic_cpu, draw_batch, init_model, train_stage

    out = Path(out)
    metas = {}
    with deterministic_cpu(recipe.threads):
        for index, (name, stage) in enumerate(recipe.stages().items()):
            key = recipe.trained_key(name)
            if read_meta(out / name).get("key") == key:
                metas[name] = read_meta(out / name)
                continue
            if only is not None and name not in only:
                continue
            if name == BASE:
                model = init_model(recipe.shape, recipe.seed)
            else:
                if read_meta(out / stage.parent).get("key") != recipe.trained_key(stage.parent):
                    raise NexError(f"{name} is fine-tuned from {stage.parent}, which {out} does not hold as this "
                                   f"recipe makes it: train {stage.parent} first")
                model = Qwen3ForCausalLM.from_pretrained(out / stage.parent)
            start = time.perf_counter()
            model, losses = train_stage(model, stage, recipe.seed, index, progress=progress,
                                        desc=f"training {name}", task=recipe.task, route=recipe.route)
            localized = None
            if stage.localized is not None:
                localized = {**asdict(stage.localized), "free_units": stage.localized.free[1] - stage.localized.free[0]}
                if stage.localized.sham:  # measured on the level's own training problems, drawn apart
                    problems = draw_batch(np.random.default_rng([recipe.seed, index, 1]), stage.skill, 128,
                                          recipe.task)
                    model, localized["sham_record"] = add_sham(model, out / stage.parent, stage.localized.free,
                                                               problems, seed=recipe.seed + index)
            seconds = time.perf_counter() - start
            with atomic_path(out / name, is_dir=True) as tmp:
                model.save_pretrained(tmp)
                save_tokenizer(tmp)
                metas[name] = {"name": name, "role": "base" if name == BASE else "expert",
                               "method": "train", "key": key, "weights_sha256": weights_hash(tmp),
                               "params": {"skill": stage.skill, "steps": stage.steps, "lr": stage.lr,
                                          "seed": recipe.seed},
                               "recipe": {"stage": asdict(stage), "shape": asdict(recipe.shape)},
                               "parents": [] if name == BASE else [stage.parent], "localized": localized,
                               "route": None if recipe.route is None else asdict(recipe.route),
                               "train_seconds": round(seconds, 1),
                               "final_loss": float(np.mean(losses[-25:]))}
                write_json(tmp / META_FILE, metas[name])
    return metas


def copy_committed(recipe: Recipe, out: Path, source: Path) -> bool:
    """Copy the committed checkpoints in ``source`` into ``out`` when they were trained with ``recipe``,
    with the accuracy recorded beside them."""
    if any(read_meta(source / name).get("key") != recipe.trained_key(name) for name in recipe.trained):
        return False
    for name in recipe.trained:
        if read_meta(out / name).get("key") != recipe.trained_key(name):
            with atomic_path(out / name, is_dir=True) as tmp:
                shutil.copytree(source / name, tmp, dirs_exist_ok=True)
        meta, recorded = read_meta(out / name), read_meta(source / name).get("recorded_eval")
        if meta.get("recorded_eval") != recorded:
            write_json(out / name / META_FILE, {**meta, "recorded_eval": recorded})
    return True


def compare_with_committed(recipe: Recipe, metas: dict[str, dict], source: Path) -> dict[str, Any]:
    """Whether freshly trained weights equal the committed ones in ``source`` (same recipe only)."""
    committed = {name: read_meta(source / name) for name in recipe.trained}
    if any(committed[n].get("key") != recipe.trained_key(n) for n in recipe.trained):
        return {"comparable": False}
    return {"comparable": True, "weights_match": {
        n: metas[n]["weights_sha256"] == committed[n]["weights_sha256"] for n in recipe.trained}}


# --- merges and accuracy --------------------------------------------------------------------

def merge_key(merge: Merge, parents: dict[str, dict], seed: int) -> str:
    return digest({"method": merge.method, "params": merge.params(), "seed": seed,
                   "parents": [parents[p]["weights_sha256"] for p in merge.parents], "stack": result_stack()})


def build_merge(merge: Merge, out: Path, parents: dict[str, dict], seed: int) -> dict:
    """Run ``merge`` into ``out/<name>/`` unless its key is already there; return its meta."""
    key = merge_key(merge, parents, seed)
    meta = read_meta(out / merge.name)
    if meta.get("key") == key:
        return meta
    run_merge(merge, {name: out / name for name in merge.parents}, out / merge.name, seed)
    meta = {"name": merge.name, "role": "merge", "method": merge.method, "key": key,
            "weights_sha256": weights_hash(out / merge.name), "params": merge.params(),
            "parents": list(merge.parents)}
    write_json(out / merge.name / META_FILE, meta)
    return meta


def evaluate_variant(model_dir: Path, recipe: Recipe) -> dict[str, Any]:
    """Greedy accuracy on the held-out mixed prompts, overall and per skill."""
    from nex_causal.models.evaluation import evaluate
    from nex_causal.models.loading import load_bridge

    tasks = organism_tasks(recipe.n_eval, seed=0, skill="mixed", split="test", task=recipe.task)
    bridge = load_bridge(model_dir)
    result = evaluate(bridge, tasks, max_new_tokens=recipe.max_new_tokens, temperature=0.0,
                      batch_size=recipe.eval_batch, hooks=False)
    groups = np.array([p.meta[TASKS[recipe.task].group] for p in tasks.problems])
    out = {"accuracy": result.accuracy, "n_eval": len(tasks)}
    for group in sorted(set(groups)):
        out[f"accuracy_{group}"] = float(result.correct[groups == group].mean())
    return out


def ensure_evaluated(model_dir: Path, recipe: Recipe) -> dict:
    """The variant's meta with its accuracy, evaluating only when the cached one is stale
    (other weights, settings or software versions)."""
    meta = read_meta(model_dir)
    stack = result_stack()
    key = digest({"weights": meta["weights_sha256"], **recipe.eval_settings(), "stack": stack})
    if meta.get("eval", {}).get("key") != key:
        meta["eval"] = {"key": key, **recipe.eval_settings(), **evaluate_variant(model_dir, recipe), "stack": stack}
        write_json(model_dir / META_FILE, meta)
    check_recorded_accuracy(meta)
    return meta


def check_recorded_accuracy(meta: dict) -> None:
    """One-line NexError when a checkpoint's accuracy here differs from the one recorded with its weights."""
    recorded, measured = meta.get("recorded_eval"), meta["eval"]
    settings = ("tasks", "task_seed", "greedy", "max_new_tokens")
    if not recorded or any(recorded.get(k) != measured.get(k) for k in settings):
        return
    if abs(measured["accuracy"] - recorded["accuracy"]) > ACCURACY_TOLERANCE:
        made = recorded.get("stack", {})
        raise NexError(f"zoo checkpoint {meta['name']} scores greedy accuracy {measured['accuracy']:.3f} here but "
                       f"{recorded['accuracy']:.3f} when its weights were committed (transformers "
                       f"{made.get('transformers')}, torch {made.get('torch')}; here transformers "
                       f"{result_stack()['transformers']}, torch {result_stack()['torch']}): this stack computes "
                       f"other numbers; run `nex-causal doctor`. Fix: {FIX}")


def record_accuracy(model_dir: Path, recipe: Recipe) -> dict:
    """Evaluate a trained checkpoint and record the result in its ``zoo.json`` as ``recorded_eval``."""
    meta = ensure_evaluated(model_dir, recipe)
    meta["recorded_eval"] = {k: v for k, v in meta["eval"].items() if k != "key"}
    write_json(model_dir / META_FILE, meta)
    return meta


def family_table(metas: list[dict]) -> pd.DataFrame:
    """One row per variant: name, path (relative to the zoo), method, params, parents, accuracy."""
    import pandas as pd

    rows = [{
        "name": m["name"], "path": m["name"], "role": m["role"], "method": m["method"],
        "params": json.dumps(m["params"], sort_keys=True), "parents": ";".join(m["parents"]),
        **{k: v for k, v in m["eval"].items() if k.startswith("accuracy")}, "n_eval": m["eval"]["n_eval"],
        "weights_sha256": m["weights_sha256"],
    } for m in metas]
    return pd.DataFrame(rows)


# --- the whole build --------------------------------------------------------------------------

def zoo_key(seed: int = 0, organism: str = DEFAULT_ORGANISM) -> str:
    """Content key of a zoo: its recipe, the training code version, the merge family and the stack."""
    return digest({"recipe": asdict(recipe_for(organism, seed)), "version": TRAINING_VERSION,
                   "stack": result_stack()})


def build(out: str | Path | None = None, *, seed: int = 0, organism: str = DEFAULT_ORGANISM,
          retrain: bool = False, progress: bool = True, checkpoints: Path | None = None) -> Path:
    """Build (or reuse) ``organism``'s zoo in ``out`` and return that directory.

    Trained models come from the committed ``checkpoints`` (default ``checkpoints_of(organism)``)
    when the recipe matches, else they are trained here (an hour for trek); ``retrain`` always
    trains and records in ``manifest.json`` whether the result matches the committed weights.
    A directory that holds something but no zoo manifest is refused before anything is written, and a
    build holds the directory's lock (``io.locked``), so two builds never write one zoo.
    """
    recipe = recipe_for(organism, seed)
    checkpoints = checkpoints_of(organism) if checkpoints is None else checkpoints
    out = Path(out).expanduser().resolve() if out is not None else default_zoo_dir(organism)
    names = list(recipe.variants)
    build_key = zoo_key(seed, organism)
    manifest = read_json(out / MANIFEST)
    if (not retrain and manifest.get("build_key") == build_key and (out / FAMILY_FILE).is_file()
            and all((out / n / META_FILE).is_file() for n in names)):
        for name in names:  # a variant changed on disk since the build is refused, not reused
            check_recorded_hash(out / name)
        return out
    # a directory with neither a zoo manifest nor a variant a build wrote (an older build, interrupted) is no zoo:
    # refused before anything is written
    if not (out.is_dir() and any((entry / META_FILE).is_file() for entry in out.iterdir())):
        check_ours(out, MANIFEST, "zoo", needs=("organism",))
    with locked(out, "a zoo build"):
        if not (out / MANIFEST).is_file():  # claims the directory; the build key is written when it is complete
            write_json(out / MANIFEST, {"organism": organism, "seed": seed, "build_key": None})
        _build(recipe, out, checkpoints, build_key, seed=seed, organism=organism, retrain=retrain, progress=progress)
    return out


def _build(recipe: Recipe, out: Path, checkpoints: Path, build_key: str, *, seed: int, organism: str,
           retrain: bool, progress: bool) -> None:
    """Copy or train, check, merge and evaluate into ``out`` (locked), then write the family table and manifest."""
    from nex_causal.zoo.train import deterministic_cpu

    family, names = recipe.family, list(recipe.variants)
    start = time.perf_counter()
    retrain_report = None
    if retrain or not copy_committed(recipe, out, checkpoints):
        if retrain:
            for name in recipe.trained:
                remove_inside(out / name, out, missing_ok=True)
        trained = train_models(recipe, out, progress=progress)
        retrain_report = compare_with_committed(recipe, trained, checkpoints) if retrain else None
    metas = {name: read_meta(out / name) for name in recipe.trained}
    with deterministic_cpu(recipe.threads):
        for name in tqdm(recipe.trained, desc="checking checkpoints", unit="model", disable=not progress):
            metas[name] = ensure_evaluated(out / name, recipe)  # a stack that computes garbage stops here
        for merge in tqdm(family, desc="merging", unit="variant", disable=not progress):
            metas[merge.name] = build_merge(merge, out, metas, seed)
        for name in tqdm(names, desc="evaluating", unit="variant", disable=not progress):
            metas[name] = ensure_evaluated(out / name, recipe)
    table = family_table([metas[n] for n in names])
    write_table(table, out / FAMILY_FILE, config={"recipe": asdict(recipe), "build_key": build_key})
    write_json(out / MANIFEST, {
        "build_key": build_key, "organism": organism, "seed": seed, "variants": names,
        "build_seconds": round(time.perf_counter() - start, 1), "retrain": retrain_report,
        "train_seconds": {n: metas[n].get("train_seconds") for n in recipe.trained}})


def zoo_organism(family: str) -> str | None:
    """The organism a family spec names (``zoo``: the default, ``zoo:<organism>``), or None for other specs."""
    if family == "zoo":
        return DEFAULT_ORGANISM
    if family.startswith("zoo:"):
        organism = family[len("zoo:"):]
        if organism not in RECIPES:
            raise NexError(f"family {family!r} names no organism: use zoo, or zoo:<{'|'.join(RECIPES)}>")
        return organism
    return None


# --- finding what was built --------------------------------------------------------------------

def find_variant(name: str, zoo_dir: str | Path | None = None) -> Path | None:
    """The directory of variant ``name`` (``[<organism>:]<variant>``), or None when there is none.

    Without ``zoo_dir`` the organism's default zoo is searched first, then its committed
    checkpoints (so ``base`` and the experts resolve even before the first build).
    """
    organism, _, name = name.rpartition(":") if ":" in name else (DEFAULT_ORGANISM, "", name)
    if organism not in RECIPES or not name or Path(name).name != name or name in {".", ".."}:
        return None  # a path or another kind of name, not a variant
    root = Path(zoo_dir).expanduser() if zoo_dir is not None else default_zoo_dir(organism)
    candidates = [root / name]
    if zoo_dir is None and name in RECIPES[organism].trained:
        candidates.append(checkpoints_of(organism) / name)
    return next((c.resolve() for c in candidates if (c / META_FILE).is_file()), None)


def planted_units(donor_dir: Path, recipient_dir: Path) -> np.ndarray | None:
    """The packed keys of the units that carry every difference between two variants of one zoo, where that is
    known by construction: one is a localized level (``zoo.localize``) fine-tuned from the other, or both are
    localized levels of one parent with one free block. None otherwise (the sham units are not among them: they
    change nothing)."""
    from nex_causal.cache import pack_keys

    if Path(donor_dir).parent != Path(recipient_dir).parent:
        return None
    donor, recipient = read_meta(Path(donor_dir)), read_meta(Path(recipient_dir))
    free = {m.get("name"): tuple((m.get("localized") or {}).get("free") or ()) for m in (donor, recipient)}
    parent = {m.get("name"): (m.get("parents") or [None])[0] for m in (donor, recipient)}
    d, r = donor.get("name"), recipient.get("name")
    if free[r] and parent[r] == d:
        block = free[r]
    elif free[d] and parent[d] == r:
        block = free[d]
    elif free[d] and free[d] == free[r] and parent[d] == parent[r]:
        block = free[d]
    else:
        return None
    n_layers = int(json.loads((Path(recipient_dir) / "config.json").read_text())["num_hidden_layers"])
    units = np.arange(*block)
    return pack_keys(np.repeat(np.arange(n_layers), len(units)), np.tile(units, n_layers))


def describe(zoo_dir: str | Path | None = None, organism: str = DEFAULT_ORGANISM) -> str:
    """The family table as text, with the accuracy spread and any retrain comparison."""
    root = Path(zoo_dir).expanduser() if zoo_dir is not None else default_zoo_dir(organism)
    table = load_family(root)
    columns = ["name", "method", "params", *(c for c in table.columns if c.startswith("accuracy"))]
    lines = [table[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}")]
    manifest = read_json(root / MANIFEST)
    spread = table["accuracy"].max() - table["accuracy"].min()
    lines.append(f"{len(table)} variants in {root} (organism {manifest.get('organism')}, seed "
                 f"{manifest.get('seed')}); accuracy spread {spread:.3f}")
    report = manifest.get("retrain")
    if report and not report["comparable"]:
        lines.append("retrained; the committed checkpoints have another recipe, nothing to compare")
    elif report:
        lines.append("retrained; weights equal to the committed checkpoints: " + ", ".join(
            f"{name} {'yes' if same else 'NO'}" for name, same in report["weights_match"].items()))
    return "\n".join(lines)
