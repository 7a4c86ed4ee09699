import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest

from nex_causal.errors import NexError
from nex_causal.run.experiment import DEMO_CONFIG, load_config, run_experiment
from nex_causal.run.stages import STAGES


def tiny_config(family_dir, **overrides) -> dict:
    config = {
        "name": "tiny", "family": str(family_dir), "tasks": "organism:4",
        "capture": {"n_samples": 4, "max_new_tokens": 48, "temperature": 1.0, "batch_size": 16,
                    "sparsifier": "topk:24", "window": 3},
        "nex": {"rho": 0.95, "min_run": 2},
        "selection": {"selectors": ["nex-self", "nad-medoid", "entropy", "random", "avg@n", "oracle"],
                      "n_boot": 50},
        "ranking": {"scores": ["nex", "entropy", "activated"], "n_boot": 50, "n_bins": 3},
        "transfer": {"pairs": ["beta>alpha"], "both_directions": False, "tasks": "organism:4", "k": [2, 8],
                     "saturate": False, "n_random": 3, "n_random_accuracy": 1, "interventions": ["transplant"],
                     "max_new_tokens": 12, "n_boot": 50, "mask_steps": 10},
        "figures": True,
    }
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            config[section] = {**config[section], field: value}
        else:
            config[key] = value
    return config


def stage_log(run_dir):
    return {s["stage"]: s["status"] for s in json.loads((run_dir / "manifest.json").read_text())["stages"]}


def mtimes(run_dir):
    return {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")
            if p.is_file() and p.name not in ("manifest.json", "report.md", ".lock")}


@pytest.fixture(scope="module")
def finished(tiny_family_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    report = run_experiment(load_config(tiny_config(tiny_family_dir)), run_dir, progress=False)
    return run_dir, report


def test_a_tiny_config_runs_end_to_end(finished):
    run_dir, report = finished
    assert set(stage_log(run_dir).values()) == {"ran"}
    for table in ("nex", "selection", "ranking", "ranking_scores", "transfer", "transfer_summary", "transfer_scorers",
                  "trace", "neuron_weights"):
        assert (run_dir / "tables" / f"{table}.parquet").exists(), table
        assert (run_dir / "tables" / f"{table}.csv").exists(), table
    selection = pd.read_parquet(run_dir / "tables" / "selection.parquet")
    assert sorted(selection["cache"].unique()) == ["alpha", "beta", "gamma", "pooled"]
    transfer = pd.read_parquet(run_dir / "tables" / "transfer.parquet")
    assert {"nex-effective", "nex-redundant", "random", "rows", "first-seen", "weight-difference"} \
        <= set(transfer["set_kind"])  # every scorer the run's evidence allows (the donor's cache, both models)
    assert sorted(transfer.loc[transfer.set_kind == "nex-effective", "k"].unique()) == [2, 8]
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    assert {"trace.pdf", "trace.png", "best_of_n.png", "transfer.png", "neuron_weights.png"} <= figures
    text = report.read_text()
    assert "## Best-of-N accuracy per selector and variant" in text and "![transfer](figures/transfer.png)" in text
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["finished"] and manifest["versions"]["torch"] and manifest["config"]["name"] == "tiny"


def test_a_rerun_does_no_work(finished, tiny_family_dir):
    run_dir, _ = finished
    before = mtimes(run_dir)
    run_experiment(load_config(tiny_config(tiny_family_dir)), run_dir, progress=False)
    assert set(stage_log(run_dir).values()) == {"skipped (up to date)"}
    assert mtimes(run_dir) == before


def test_changing_a_nex_parameter_reruns_scoring_onward_only(finished, tiny_family_dir, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(finished[0], run_dir)
    caches = {p: p.stat().st_mtime_ns for p in (run_dir / "caches").rglob("*") if p.is_file()}
    run_experiment(load_config(tiny_config(tiny_family_dir, **{"nex.rho": 0.9})), run_dir, progress=False)
    log = stage_log(run_dir)
    assert log["family"] == log["capture"] == "skipped (up to date)"
    assert all(log[s] == "ran" for s in ("nex", "selection", "ranking", "transfer", "figures"))
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "caches").rglob("*") if p.is_file()} == caches
    assert json.loads((run_dir / "nex" / "alpha" / "summary.json").read_text())["rho"] == 0.9
    # every consumer reads NEX under the run's settings: the ranking's NEX per variant is the nex stage's mean GMF
    # at rho 0.9 (not the default 0.95, which the first run used)
    before = pd.read_parquet(finished[0] / "tables" / "ranking_scores.parquet").set_index("variant")["nex"]
    after = pd.read_parquet(run_dir / "tables" / "ranking_scores.parquet").set_index("variant")["nex"]
    for variant in after.index:
        summary = json.loads((run_dir / "nex" / variant / "summary.json").read_text())
        assert after[variant] == pytest.approx(summary["nex_score"], rel=1e-6), variant
    assert not np.allclose(before.sort_index(), after.sort_index())


def test_a_killed_run_resumes(tiny_family_dir, tmp_path, monkeypatch):
    run_dir = tmp_path / "killed"
    config = load_config(tiny_config(tiny_family_dir, transfer=None, ranking=None))

    def killed(run):
        raise KeyboardInterrupt

    monkeypatch.setitem(STAGES._items, "selection", dataclasses.replace(STAGES["selection"], run=killed))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, run_dir, progress=False)
    assert (run_dir / "stages" / "nex.json").exists() and not (run_dir / "stages" / "selection.json").exists()
    monkeypatch.undo()
    run_experiment(config, run_dir, progress=False)
    log = stage_log(run_dir)
    assert log["capture"] == log["nex"] == "skipped (up to date)"
    assert log["selection"] == log["figures"] == "ran"


@pytest.mark.parametrize("override, message", [
    ({"capture.n_sample": 3}, "capture.n_sample"),
    ({"nex.rho": "high"}, "nex.rho"),
    ({"variants": ["alpha", "omega"]}, "omega"),
    ({"colour": "red"}, "colour"),
    ({"transfer.k": "8,32"}, "transfer.k"),
])
def test_config_errors_name_the_key_before_any_work(tiny_family_dir, tmp_path, override, message):
    with pytest.raises(NexError, match=message):
        run_experiment(load_config(tiny_config(tiny_family_dir, **override)), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "caches").exists()


def test_shipped_configs_parse():
    configs = sorted((DEMO_CONFIG.parents[2] / "experiments").glob("*.yaml"))
    assert {c.name for c in configs} >= {"demo.yaml", "selection.yaml", "ranking.yaml", "transfer.yaml",
                                         "ablation.yaml"}
    for path in [DEMO_CONFIG, *configs]:
        assert load_config(path).name
    assert os.path.samefile(DEMO_CONFIG.parents[2] / "experiments" / "demo.yaml", DEMO_CONFIG)


def test_degenerate_results_are_flagged_at_the_top_and_fail_the_command(finished, tmp_path, capsys):
    # the tiny family is randomly initialised: not one sampled response is correct
    run_dir, report = finished
    warnings = json.loads((run_dir / "manifest.json").read_text())["warnings"]
    assert any(w.startswith("oracle accuracy is 0 on 3 of 3 caches") for w in warnings)
    text = report.read_text()
    assert text.index("Warning: degenerate results") < text.index("## ")
    import yaml

    from nex_causal.cli import main
    from nex_causal.cli.run import DEGENERATE

    manifest = json.loads((run_dir / "manifest.json").read_text())
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(manifest["config"]))
    assert main(["run", str(config_file), "--run-dir", str(run_dir)]) == DEGENERATE
    assert "warning: degenerate result: oracle accuracy is 0" in capsys.readouterr().err


def test_a_result_made_under_other_versions_is_recomputed(tiny_family_dir, tmp_path, monkeypatch):
    import nex_causal.versions as stack

    config = load_config(tiny_config(tiny_family_dir, selection=None, ranking=None, transfer=None, figures=False,
                                     variants=["alpha", "beta"]))
    run_dir = tmp_path / "run"
    run_experiment(config, run_dir, progress=False)
    run_experiment(config, run_dir, progress=False)
    assert set(stage_log(run_dir).values()) == {"skipped (up to date)"}
    real = stack.installed
    monkeypatch.setattr(stack, "installed", lambda p: "9.9.9" if p == "torch" else real(p))
    run_experiment(config, run_dir, progress=False)
    assert set(stage_log(run_dir).values()) == {"ran"}
    made = json.loads((run_dir / "caches" / "alpha" / "capture.json").read_text())["stack"]
    assert made["torch"] == "9.9.9"
    assert json.loads((run_dir / "manifest.json").read_text())["stack"]["torch"] == "9.9.9"


def test_the_stop_stage_calibrates_on_its_own_prompts_and_writes_its_table_and_figure(tiny_family_dir, tmp_path):
    from nex_causal.cache import SparseCache

    config = tiny_config(tiny_family_dir, selection=None, ranking=None, transfer=None, variants=["alpha"],
                         **{"capture.method": "stepwise"})
    config["stop"] = {"calibration": "organism:4@9", "rules": ["budget", "nex-gmf", "prune-random"],
                      "shares": [0.5], "prune_rows": [2], "n_boot": 50}
    run_dir = tmp_path / "stop"
    run_experiment(load_config(config), run_dir, progress=False)
    pareto = pd.read_parquet(run_dir / "tables" / "stop_pareto.parquet")
    matched = pd.read_parquet(run_dir / "tables" / "stop_matched.parquet")
    assert set(pareto["rule"]) == {"none", "budget", "nex-gmf", "prune-random"}
    assert set(matched["rule"]) == {"budget", "nex-gmf", "prune-random"}
    reported = SparseCache.open(run_dir / "caches" / "alpha")
    calibration = SparseCache.open(run_dir / "stop" / "alpha" / "calibration")
    assert not set(reported.responses["prompt_id"]) & set(calibration.responses["prompt_id"])
    full = pareto[(pareto["rule"] == "none") & (pareto["split"] == "reported")].iloc[0]
    assert full["tokens"] * full["n_prompts"] == reported.responses["n_tokens"].sum()
    assert (run_dir / "figures" / "stop_frontier.png").exists()
