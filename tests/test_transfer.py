"""The transfer and ablation grids on planted signals, resuming, configs and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from nex_causal.cache import KEY_SPACE
from nex_causal.cli.intervene import command_config
from nex_causal.errors import NexError
from nex_causal.intervene.cells import GridConfig
from nex_causal.intervene.grid import Grid, neuron_grid
from nex_causal.intervene.neuron_sets import NeuronSet, user_set
from nex_causal.io import read_mapping
from nex_causal.models.evaluation import evaluate
from nex_causal.models.geometry import MLPGeometry
from nex_causal.models.loading import load_bridge
from nex_causal.models.tasks import Problem, TaskSet

STEPS = 6
PLANTED = NeuronSet.from_units("planted", np.r_[np.zeros(8), np.ones(16)].astype(int),
                               np.r_[np.arange(0, 64, 8), np.arange(3, 128, 8)])
DECOYS = NeuronSet.from_units("decoys", np.r_[np.zeros(8), np.ones(16)].astype(int),
                              np.r_[np.arange(1, 64, 8), np.arange(5, 128, 8)])


def planted_weights() -> np.ndarray:
    """NEX weights that call the planted set effective and the decoys redundant."""
    w = np.zeros(KEY_SPACE, dtype=np.float32)
    w[PLANTED.keys] = np.linspace(0.9, 0.5, len(PLANTED))
    w[DECOYS.keys] = -np.linspace(0.9, 0.5, len(DECOYS))
    return w


def continuation_task(bridge, n: int = 16) -> TaskSet:
    """Prompts whose verifiable answer is the intact model's greedy continuation."""
    rng = np.random.default_rng(0)
    alphabet = list("0123456789abcdefghij=|+ ")
    prompts = ["".join(rng.choice(alphabet, size=int(rng.integers(5, 12)))) for _ in range(n)]
    problems = [Problem(f"c{i}", p, "") for i, p in enumerate(prompts)]
    answers = evaluate(bridge, TaskSet("c", problems, str, lambda p, t: True), max_new_tokens=STEPS).texts
    problems = [Problem(p.id, p.prompt, a) for p, a in zip(problems, answers)]
    return TaskSet("continuation", problems, lambda text: text, lambda p, text: text == p.target,
                   answer_prefix=lambda text: "", solution=lambda p: p.target)


def corrupt(bridge, neurons: NeuronSet, seed: int = 0) -> None:
    """Overwrite the input weights (gate and up rows) of ``neurons`` with large seeded noise.

    Their activations become wrong while what they write stays intact, so both remedies --
    the intact weights, or the intact activations -- must restore the model exactly.
    """
    geometry = MLPGeometry.of(bridge)
    gen = torch.Generator().manual_seed(seed)
    for layer, units in neurons.by_layer().items():
        weights = geometry.neuron_weights(layer, units)
        for part in ("gate", "in"):
            weights[part] = torch.randn(weights[part].shape, generator=gen)
        geometry.set_neuron_weights(layer, units, weights)


@pytest.fixture(scope="module")
def intact(tiny_qwen3_dir):
    return load_bridge(tiny_qwen3_dir)


@pytest.fixture(scope="module")
def corrupted(tiny_qwen3_dir):
    bridge = load_bridge(tiny_qwen3_dir)
    corrupt(bridge, PLANTED)
    return bridge


@pytest.fixture(scope="module")
def task(intact):
    return continuation_task(intact)


def transfer_config(**changes) -> GridConfig:
    base = dict(experiment="transfer", recipient="corrupted", donor="intact", weights="W.npz",
                tasks="continuation", k=(len(PLANTED),), n_random=3, n_random_accuracy=3, outcomes=("greedy",),
                max_new_tokens=STEPS, n_boot=500, saturate=False, n_matched=0, supervised=False, ceiling=False,
                scorers=("nex-effective", "nex-redundant"))
    return GridConfig(**{**base, **changes})


def row(table, **match):
    hit = table
    for key, value in match.items():
        hit = hit[hit[key] == value]
    assert len(hit) == 1, match
    return hit.iloc[0]


def test_localization_methods_find_a_planted_difference_that_nex_misses(intact, corrupted, task, tmp_path):
    """The corrupted model differs from the intact one only in the planted units (the truth). Every localization
    method finds exactly them and restores every answer, the learned mask (the positive control) among them, so
    the test can see; NEX weights that call the decoys effective recover none of the ceiling. The ceilings
    outside the MLP units change nothing (attention, embeddings and norms are the same in both models), and the
    covariate-matched null matches NEX's set more closely than the layer-only one on every covariate."""
    skill = continuation_task(intact, n=24)  # the first 16 prompts are the test's: 8 remain for the attribution
    wrong = np.zeros(KEY_SPACE, dtype=np.float32)
    wrong[DECOYS.keys], wrong[PLANTED.keys] = 0.9, -0.9
    PLANTED.save(tmp_path / "truth.csv")
    config = transfer_config(interventions=("transplant",), n_random=2, n_matched=2, supervised=True, ceiling=True,
                             scorers=None, truth=str(tmp_path / "truth.csv"), mask_steps=60)
    grid = Grid(corrupted, task, config, tmp_path / "grid", donor=intact, skill=skill, progress=False)
    table, summary = grid.run(wrong)
    by = grid.by_scorer.set_index("set_kind")
    assert {"nex-effective", "nex-redundant", "weight-difference", "activation-contrast", "atp", "atp-transplant",
            "mask", "truth"} <= set(by.index)
    for name in ("weight-difference", "truth"):
        assert by.loc[name, "truth_precision"] == 1.0 and by.loc[name, "truth_recall"] == 1.0, name
    for name in ("weight-difference", "mask", "truth"):  # the mask may leave out units whose corruption is harmless
        assert by.loc[name, "share_of_ceiling"] == pytest.approx(1.0), name
    assert by.loc["mask", "truth_precision"] >= 0.9  # measured 22 of 24
    assert by.loc["nex-effective", "truth_precision"] == 0.0 and by.loc["nex-effective", "share_of_ceiling"] == 0.0
    assert bool(by.loc["mask", "supervised"]) and not bool(by.loc["weight-difference", "supervised"])
    s = row(summary, intervention="transplant", outcome="greedy")
    baseline = s.baseline_value
    assert baseline < 0.5
    assert s.positive_control == "mask" and s.positive_control_delta == pytest.approx(1 - baseline)
    assert s.positive_control_moved and s.verdict == "informative"
    assert s.ceiling_delta == pytest.approx(1 - baseline) and s.effective_share_of_ceiling == pytest.approx(0.0)
    assert s.donor_delta == pytest.approx(1 - baseline)
    for part in ("attention", "embeddings", "norms"):
        assert s[f"ceiling_{part}_delta"] == 0.0
    assert s.effective_delta == 0.0 and s.n_matched == 2 and s.effective_random_ties == 0
    for name in ("mass_recipient", "mass_donor", "weight_diff"):  # measured: 0.20 / -0.55 / 0.27 for layer-only
        assert abs(s[f"smd_matched_{name}"]) < abs(s[f"smd_random_{name}"])
    assert s.smd_matched_weight_diff == 0.0  # the effective set (the decoys) has no weight difference, nor its matches
    assert row(table, set_kind="ceiling-mlp", intervention="transplant", outcome="greedy").set_size == 2 * 128
    record = json.loads((tmp_path / "grid" / "scores.json").read_text())
    assert record["records"]["mask"]["outcome_mask"] > record["records"]["mask"]["outcome_recipient"]


def test_a_positive_control_that_does_not_move_marks_the_test_blind(intact, task, tmp_path):
    """Donor and recipient identical: no transplant can move anything, so the verdict says the test cannot see
    and there is no ceiling (no layer differs); no scorer that reads the difference finds a unit."""
    config = transfer_config(interventions=("transplant",), n_random=2, supervised=True, ceiling=True,
                             scorers=("nex-effective", "nex-redundant", "weight-difference", "mask"), mask_steps=5)
    grid = Grid(intact, task, config, tmp_path, donor=intact, skill=continuation_task(intact, n=24), progress=False)
    with pytest.warns(UserWarning, match="weight-difference-24: only 0 units have a positive score"):
        _, summary = grid.run(planted_weights())
    s = row(summary, intervention="transplant", outcome="greedy")
    assert s.positive_control_delta == 0.0 and not s.positive_control_moved
    assert s.verdict.startswith("the test cannot see")
    assert "ceiling_delta" not in summary


@pytest.mark.parametrize("delta,low,high,mde,ceiling,expected", [
    (-0.0005, -0.0009, -0.0001, 0.0002, 0.018, False),  # excludes 0, but against the ceiling and tiny
    (0.00005, 0.00001, 0.00009, 0.0002, 0.018, False),  # the right way, excludes 0, below the MDE and 10%
    (0.0015, 0.0005, 0.0025, 0.0002, 0.018, False),  # above the MDE, below 10% of the ceiling
    (0.004, 0.002, 0.006, 0.0002, 0.018, True),  # both
    (0.004, -0.001, 0.009, 0.0002, 0.018, False),  # large but not sure
    (-0.05, -0.07, -0.03, 0.01, -0.2, True),  # a ceiling that lowers the outcome: the control must lower it too
])
def test_the_positive_control_moves_only_in_the_ceilings_direction_by_enough(delta, low, high, mde, ceiling,
                                                                            expected):
    from nex_causal.intervene.tables import SHARE_OF_CEILING, moved

    assert moved(delta, low, high, np.sign(ceiling), max(mde, SHARE_OF_CEILING * abs(ceiling))) is expected


def test_planted_transfer_restores_only_with_the_corrupted_set(intact, corrupted, task, tmp_path):
    """Corrupting a known set breaks the model; transplanting (or patching) exactly that set back
    from the intact model restores every answer, while equally large matched random sets and
    the untouched decoys do not."""
    assert evaluate(intact, task, max_new_tokens=STEPS).accuracy == 1.0  # correct by construction
    PLANTED.save(tmp_path / "mine.csv")  # a user's own set rides along
    config = transfer_config(sets=(str(tmp_path / "mine.csv"),))
    table, summary = Grid(corrupted, task, config, tmp_path / "run", donor=intact,
                          progress=False).run(planted_weights())
    baseline = row(table, set_kind="baseline").value
    assert baseline <= 0.5  # the corruption really broke it
    assert row(table, set_kind="donor").value == 1.0
    for intervention in ("transplant", "patch"):
        effective = row(table, intervention=intervention, set_kind="nex-effective")
        assert effective.value == 1.0 and effective.set_size == len(PLANTED)
        assert effective.composition == "0:8 1:16"
        assert effective.delta == pytest.approx(1.0 - baseline)
        assert effective.delta_low > 0
        redundant = row(table, intervention=intervention, set_kind="nex-redundant")
        assert redundant.value == baseline and redundant.delta == 0  # the decoys were never corrupted
        randoms = table[(table.intervention == intervention) & (table.set_kind == "random")]
        assert len(randoms) == 3 and (randoms.set_size == len(PLANTED)).all()
        assert (randoms.value < 0.75).all()
        assert row(table, intervention=intervention, set_kind=f"user-{user_set(tmp_path / 'mine.csv').name}").value == 1.0
        gaps = row(summary, intervention=intervention)
        assert gaps.effective_minus_random_low > 0 and gaps.effective_minus_redundant_low > 0
        assert gaps.effective_minus_redundant == pytest.approx(1.0 - baseline)
    # the sets used are on disk for inspection
    assert NeuronSet.load(tmp_path / "run" / "sets" / f"nex-effective-{len(PLANTED)}.csv").keys.tolist() \
        == PLANTED.keys.tolist()
    assert (tmp_path / "run" / "transfer.parquet").exists() and (tmp_path / "run" / "summary.csv").exists()


def test_a_rerun_resumes_from_the_stored_cells(intact, corrupted, task, tmp_path):
    config = transfer_config(n_random=1, interventions=("transplant",))
    first, _ = Grid(corrupted, task, config, tmp_path, donor=intact, progress=False).run(planted_weights())
    cells = sorted(p.name for p in (tmp_path / "cells").iterdir())
    assert cells == ["baseline.json", "donor.json", "transplant-nex-effective-k24-s0.json",
                     "transplant-nex-redundant-k24-s0.json", "transplant-random-k24-s0.json"]
    (tmp_path / "cells" / "transplant-random-k24-s0.json").unlink()
    # the stored cells are read back, not re-measured: a rerun on the intact model only
    # re-measures the deleted cell
    second, _ = Grid(intact, task, config, tmp_path, donor=intact, progress=False).run(planted_weights())
    same = second.set_kind != "random"
    assert second[same].reset_index(drop=True).equals(first[same].reset_index(drop=True))
    assert row(second, set_kind="random").value == 1.0  # measured now, on the intact model
    with pytest.raises(NexError, match="another config"):
        Grid(corrupted, task, transfer_config(n_random=2), tmp_path, donor=intact).run(planted_weights())


def test_planted_ablation_hurts_only_through_neurons_that_matter(tiny_qwen3_dir, tmp_path):
    """In a model whose decoys are dead (all their weights zero) and whose planted set reads
    and writes strongly (weights x10), ablating the planted set breaks the answers and ablating the decoys
    changes nothing."""
    model = load_bridge(tiny_qwen3_dir)
    geometry = MLPGeometry.of(model)
    for neurons, scale in ((DECOYS, 0.0), (PLANTED, 10.0)):
        for layer, units in neurons.by_layer().items():
            weights = geometry.neuron_weights(layer, units)
            geometry.set_neuron_weights(layer, units, {part: scale * w for part, w in weights.items()})
    task = continuation_task(model)
    config = GridConfig(experiment="ablate", recipient="m", weights="W.npz", tasks="continuation",
                        k=(len(PLANTED),), n_random=2, outcomes=("greedy",), max_new_tokens=STEPS,
                        n_boot=500)
    table, summary = Grid(model, task, config, tmp_path, progress=False).run(planted_weights())
    assert row(table, set_kind="baseline").value == 1.0
    assert set(table.intervention) == {"none", "zero", "mean"}
    assert np.load(tmp_path / "means.npy").shape == (2, 128)
    for intervention in ("zero", "mean"):
        assert row(table, intervention=intervention, set_kind="nex-effective").value <= 0.5
        assert row(table, intervention=intervention, set_kind="nex-redundant").value == 1.0
        gaps = row(summary, intervention=intervention)
        assert gaps.effective_minus_redundant_high < 0 and gaps.effective_minus_random_high < 0


def test_the_dose_range_reaches_saturation():
    from nex_causal.intervene.grid import doses

    assert doses(planted_weights(), transfer_config(k=(4, 8))) == (4, 8)
    assert doses(planted_weights(), transfer_config(k=(4, 64), saturate=True)) == (4, 24, 64)


def nex_scores(weights: np.ndarray) -> dict:
    """The NEX scorers' (scores, ties) of key-space weights on the tiny model (2 layers x 128 units)."""
    from nex_causal.intervene.scorers import Evidence

    evidence = Evidence(2, 128, weights=weights)
    return {name: evidence.score(name) for name in ("nex-effective", "nex-redundant")}


def test_neuron_grid_kinds_sizes_and_seeds():
    grid = neuron_grid(nex_scores(planted_weights()), [4, 24], n_random=2, d_mlp=128, seed=0)
    assert [(kind, k, s) for kind, k, s, _ in grid] == [
        ("nex-effective", 4, 0), ("nex-redundant", 4, 0), ("random", 4, 0), ("random", 4, 1),
        ("nex-effective", 24, 0), ("nex-redundant", 24, 0), ("random", 24, 0), ("random", 24, 1)]
    sets = {(kind, k, s): n for kind, k, s, n in grid}
    assert sets[("nex-effective", 24, 0)].keys.tolist() == PLANTED.keys.tolist()
    assert sets[("nex-redundant", 24, 0)].keys.tolist() == DECOYS.keys.tolist()
    for s in (0, 1):
        rand = sets[("random", 24, s)]
        assert rand.per_layer_counts(2).tolist() == [8, 16] and len(rand.intersection(PLANTED)) == 0
    assert sets[("random", 24, 0)].keys.tolist() != sets[("random", 24, 1)].keys.tolist()
    again = neuron_grid(nex_scores(planted_weights()), [4, 24], n_random=2, d_mlp=128, seed=0)
    assert all(a[3].keys.tolist() == b[3].keys.tolist() for a, b in zip(grid, again))


def test_weights_from_another_model_are_refused_before_any_work(intact, corrupted, task, tmp_path):
    w = planted_weights()
    w[(5 << 16) | 3] = 0.7
    with pytest.raises(NexError, match=r"\(layer 5, unit 3\), outside this model's 2 layers"):
        Grid(corrupted, task, transfer_config(), tmp_path / "x", donor=intact).run(w)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("changes,message", [
    ({"experiment": "swap"}, "unknown experiment"),
    ({"interventions": ("zero",)}, "'zero' does not belong to transfer"),
    ({"k": (0, 8)}, "distinct positive integers"),
    ({"outcomes": ("beam",)}, "unknown outcome"),
    ({"temperature": 0.0, "outcomes": ("sampled",)}, "temperature > 0"),
    ({"level": 1.0}, "level must lie in"),
    ({"donor": None}, "needs a donor"),
])
def test_bad_configs_name_the_problem(changes, message):
    with pytest.raises(NexError, match=message):
        transfer_config(**changes)


def test_configs_from_files(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "experiment: transfer\nmodel: b\ndonor: a\nweights: W.npz\ntasks: organism:50\nk: 8,32\n"
        "interventions: [patch]\n")
    (tmp_path / "t.yaml").write_text((tmp_path / "t.yaml").read_text().replace("model: b", "recipient: b")
                                     + "out: o\n")
    config, out = command_config("transfer", str(tmp_path / "t.yaml"), {})
    assert config.k == (8, 32) and config.interventions == ("patch",) and config.n_random == 50 and out.name == "o"
    (tmp_path / "bad.yaml").write_text("experiment: transfer\nrecipient: b\nwieghts: W.npz\nout: o\n")
    with pytest.raises(NexError, match="no 'weights' given"):
        command_config("transfer", str(tmp_path / "bad.yaml"), {})
    with pytest.raises(NexError, match="unknown config key 'wieghts'"):
        command_config("transfer", str(tmp_path / "bad.yaml"), {"weights": "W.npz", "tasks": "organism:5"})
    with pytest.raises(NexError, match="does not exist"):
        read_mapping(tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(NexError, match="mapping"):
        read_mapping(tmp_path / "list.yaml")


def test_the_cli_runs_a_grid_and_a_config_file_resumes_it(tiny_qwen3_dir, tmp_path, capsys):
    import shutil

    from transformers import Qwen3ForCausalLM

    from nex_causal.cli import main
    from nex_causal.nex import save_weights

    family = tmp_path / "family"
    shutil.copytree(tiny_qwen3_dir, family / "intact")
    broken = Qwen3ForCausalLM.from_pretrained(tiny_qwen3_dir)
    with torch.no_grad():
        for layer, units in PLANTED.by_layer().items():
            broken.model.layers[layer].mlp.gate_proj.weight[units] = 1.0
    broken.save_pretrained(family / "corrupted")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_qwen3_dir / name, family / "corrupted" / name)
    save_weights(tmp_path / "W.npz", planted_weights())
    (tmp_path / "tasks.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "question": f"{i}+{i}=", "answer": str(2 * i)}) + "\n" for i in range(4)))
    args = ["--family", str(family), "--weights", str(tmp_path / "W.npz"), "--k", "24", "--n-random", "1",
            "--n-matched", "2",
            "--tasks", str(tmp_path / "tasks.jsonl"), "--out", str(tmp_path / "out"), "--outcomes",
            "greedy,answer-logprob", "--max-new-tokens", "3", "--interventions", "transplant"]
    assert main(["transfer", "--donor", "intact", "--recipient", "corrupted", *args]) == 0
    printed = capsys.readouterr().out
    assert "eff - random [95% CI]" in printed and "eff - redundant [95% CI]" in printed and "mde" in printed
    import pandas as pd

    first = pd.read_csv(tmp_path / "out" / "transfer.csv")
    assert len(first) == 24 and set(first.outcome) == {"greedy", "answer-logprob"}
    # a fixed task file leaves no prompt for an attribution split (warned): no scorer that reads one is there
    assert set(first.set_kind) == {"baseline", "donor", "nex-effective", "nex-redundant", "weight-difference",
                                   "random", "matched", "ceiling-mlp", "ceiling-attention", "ceiling-embeddings",
                                   "ceiling-norms"}

    (tmp_path / "t.yaml").write_text(
        f"experiment: transfer\nfamily: {family}\ndonor: intact\nrecipient: corrupted\n"
        f"weights: {tmp_path / 'W.npz'}\nk: [24]\nn_random: 1\nn_matched: 2\ntasks: {tmp_path / 'tasks.jsonl'}\nout: {tmp_path / 'out'}\n"
        "outcomes: greedy,answer-logprob\n"
        "max_new_tokens: 3\ninterventions: transplant\n")
    assert main(["transfer", "--config", str(tmp_path / "t.yaml")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "transfer.csv"), first)
    assert main(["ablate", "--config", str(tmp_path / "t.yaml")]) == 2
    assert "describes a 'transfer' run: use `nex-causal transfer`" in capsys.readouterr().err
    assert main(["transfer", "--config", str(tmp_path / "t.yaml"), "--recipient", "nobody"]) == 2
    assert "no variant 'nobody' in family" in capsys.readouterr().err


def test_an_empty_set_is_reported_with_its_real_size_and_the_baseline_outcome(intact, corrupted, task,
                                                                             tmp_path):
    w = planted_weights().clip(min=0)  # no neuron has negative weight: no redundant set
    config = transfer_config(n_random=0, interventions=("transplant",))
    with pytest.warns(UserWarning, match="only 0 units have a positive score"):
        table, _ = Grid(corrupted, task, config, tmp_path, donor=intact, progress=False).run(w)
    redundant = row(table, set_kind="nex-redundant")
    assert redundant.set_size == 0 and redundant.k == len(PLANTED)
    assert redundant.value == row(table, set_kind="baseline").value and redundant.delta == 0
    assert row(table, set_kind="nex-effective").value == 1.0


# --- the power to answer: continuous outcomes, null distributions, p-values ------------------------

def test_continuous_outcome_of_an_untouched_model_is_its_own_forward_pass(intact, task):
    from nex_causal.models.evaluation import continuation_logprobs

    contexts = [intact.to_tokens(p.prompt)[0] for p in task.problems]
    continuations = [torch.tensor(intact.tokenizer(p.target, add_special_tokens=False).input_ids)
                     for p in task.problems]
    totals, counts = continuation_logprobs(intact, contexts, continuations, batch_size=5)
    for context, continuation, total, n in zip(contexts, continuations, totals, counts):
        ids = torch.cat([context, continuation])[None]
        with torch.no_grad():
            logp = torch.log_softmax(intact(ids, return_type="logits")[0].float(), -1)
        expected = sum(float(logp[len(context) - 1 + j, t]) for j, t in enumerate(continuation.tolist()))
        assert total == pytest.approx(expected, abs=1e-4) and n == len(continuation)
    vocab = intact.cfg.d_vocab  # greedy continuations are likelier than uniform draws
    assert (totals < 0).all() and (totals > -counts * np.log(vocab)).all()


def test_a_planted_set_beats_the_random_null_with_a_small_p(intact, corrupted, task, tmp_path):
    config = transfer_config(outcomes=("solution-logprob",), n_random=99, n_random_accuracy=0,
                             interventions=("transplant",))
    table, summary = Grid(corrupted, task, config, tmp_path, donor=intact, progress=False).run(planted_weights())
    gaps = row(summary, intervention="transplant")
    assert gaps.n_random == 99 and gaps.outcome == "solution-logprob"
    assert gaps.p_value == pytest.approx(0.01) and gaps.p_value < 0.011  # the floor 1 / (1 + 99): beats all 99
    assert gaps.p_value_redundant < 0.01 and gaps.effective_minus_random_low > 0
    assert gaps.random_low <= gaps.random_delta <= gaps.random_high < gaps.effective_delta
    assert gaps.random_delta == 0 and gaps.mde == 0  # intact weights outside the planted set: random sets change nothing
    effective = row(table, set_kind="nex-effective")
    assert effective.value == pytest.approx(row(table, set_kind="donor").value, abs=1e-5)  # fully restored


def test_a_random_effective_set_has_a_uniform_p_value(corrupted, intact, task, tmp_path):
    """With the "effective" set itself a layer-matched random set, p is uniform on {1/20, ..., 1}:
    over 30 draws about 5% fall at or below 0.05, and the mean is near 0.5."""
    from nex_causal.intervene.neuron_sets import matched_random

    p_values = []
    for seed in range(30):
        fake = matched_random(PLANTED, 128, seed=1000 + seed, exclude=DECOYS)
        w = np.zeros(KEY_SPACE, np.float32)
        w[fake.keys] = 1.0
        w[DECOYS.keys] = -1.0
        config = transfer_config(outcomes=("solution-logprob",), n_random=19, n_random_accuracy=0,
                                 interventions=("transplant",), seed=seed)
        _, summary = Grid(corrupted, task, config, tmp_path / str(seed), donor=intact, progress=False).run(w)
        p_values.append(row(summary, intervention="transplant").p_value)
    p_values = np.array(p_values)
    assert (p_values <= 0.05).sum() <= 4 and 0.3 < p_values.mean() < 0.7


def test_the_minimum_detectable_effect_shrinks_as_prompts_grow():
    from nex_causal.intervene.cells import Cell
    from nex_causal.intervene.grid import BASELINE
    from nex_causal.intervene.tables import gap_summary

    config = transfer_config(outcomes=("solution-logprob",), n_random=40, interventions=("transplant",))
    rng = np.random.default_rng(0)
    mde = {}
    for n in (20, 80, 320):
        cells = [BASELINE, Cell("nex-effective", 24, 0, "transplant", PLANTED),
                 Cell("nex-redundant", 24, 0, "transplant", DECOYS)]
        cells += [Cell("random", 24, s, "transplant", PLANTED) for s in range(40)]
        results = {c.name: {"solution-logprob": rng.normal(0, 1, n)} for c in cells}  # noise around no effect
        mde[n] = row(gap_summary(cells, results, config, [24]), intervention="transplant").mde
    assert mde[20] > mde[80] > mde[320]
    assert mde[20] / mde[320] == pytest.approx(4, rel=0.35)  # ~ 1 / sqrt(n)


def test_pairs_run_both_ways_and_pool(tiny_family_dir, tmp_path):
    from nex_causal.intervene.pairs import pairs_of, run_pairs
    from nex_causal.nex import save_weights

    assert pairs_of(["alpha>beta", "beta>gamma"]) == [("alpha", "beta"), ("beta", "alpha"), ("beta", "gamma"),
                                                      ("gamma", "beta")]
    assert pairs_of(["alpha>beta"], both_directions=False) == [("alpha", "beta")]
    with pytest.raises(NexError, match="not 'donor>recipient'"):
        pairs_of(["alpha-beta"])
    save_weights(tmp_path / "W.npz", planted_weights())
    settings = dict(tasks="organism:6", mask_steps=10, family=str(tiny_family_dir), k=(8,), n_random=5, n_random_accuracy=1,
                    outcomes=("solution-logprob", "greedy"), interventions=("transplant",), max_new_tokens=8,
                    n_boot=200)
    table, summary, pooled, scorers = run_pairs(settings, pairs_of(["alpha>beta"]),
                                                lambda donor, recipient: {"weights": str(tmp_path / "W.npz")},
                                                tmp_path / "pairs", progress=False)
    assert set(scorers.set_kind) >= {"nex-effective", "nex-redundant", "weight-difference"}
    assert set(zip(summary.donor, summary.recipient)) == {("alpha", "beta"), ("beta", "alpha")}
    assert {"outcome", "n_prompts", "n_random", "p_value", "mde"} <= set(summary.columns)
    assert (summary.loc[summary.outcome == "greedy", "n_random"] == 1).all()
    assert (summary.loc[summary.outcome == "solution-logprob", "n_random"] == 5).all()
    pooled = pooled.set_index(["dose", "outcome"])
    assert (pooled["n_pairs"] == 2).all() and (pooled["n_prompts"] == 12).all()
    cell = pooled.loc[("8", "solution-logprob")]
    mine = summary[(summary.outcome == "solution-logprob") & (summary.dose == "8")]
    assert cell.effective_minus_random == pytest.approx(mine.effective_minus_random.mean())
    assert cell.effective_minus_random_low <= cell.effective_minus_random <= cell.effective_minus_random_high
