"""The model organisms: their tasks, tokenizer, deterministic training, merges and cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nex_causal.errors import NexError
from nex_causal.models.tasks import Problem
from nex_causal.models.variants import load_family
from nex_causal.zoo import build, find_variant, organism_tasks, train_models
from nex_causal.models.files import weights_hash
from nex_causal.zoo.build import checkpoints_of, read_meta, zoo_organism
from nex_causal.zoo.family import default_family
from nex_causal.zoo.recipe import recipe_for
from nex_causal.zoo.task import SeekCompute, Trek, check, extract, sample_problems
from nex_causal.zoo.tokenizer import EOS_ID, encode

TRAINED = recipe_for("trek").trained


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as the zoo builds with: on this shared 2-core machine two OpenMP
    threads competing with other processes make generation up to 10x slower."""
    from nex_causal.zoo.train import deterministic_cpu

    with deterministic_cpu(1):
        yield


# --- the task -----------------------------------------------------------------------------------

def test_chain_of_thought_by_hand():
    # round 1: 3x + 4 = 5 (mod 7) -> x = 5; round 2 (b = 5): 3x + 5 = 5 -> x = 0; y = 0*6 + 2
    problem = SeekCompute(p=7, a=3, b=4, c=5, r=2, d=6, e=2)
    assert problem.prompt == "p=7 a=3 b=4 c=5 r=2 d=6 e=2|"
    assert problem.chain_of_thought() == "x0:4 x1:0 x2:3 x3:6 x4:2 x5:5! b=5 x0:5! 0*6=0 0+2=2 #2"
    # a two-digit d is split into tens and units: 4*37 = 120 + 28
    problem = SeekCompute(p=5, a=2, b=1, c=0, r=2, d=37, e=15)
    assert problem.chain_of_thought() == ("x0:1 x1:3 x2:0! b=2 x0:2 x1:4 x2:1 x3:3 x4:0! "
                                          "4*37=120+28=148 148+15=163 #163")
    assert problem.answer() == 163


@pytest.mark.parametrize("skill", ["search", "compute", "mixed"])
def test_every_round_has_exactly_one_root_and_the_trace_finds_it(skill):
    rng = np.random.default_rng(0)
    directions = set()
    for problem in sample_problems(150, seed=3, skill=skill, split="train", task="seek"):
        b = problem.b
        for round_b, x in problem.offsets_and_roots():
            assert round_b == b
            roots = [v for v in range(problem.p) if (problem.a * v + b) % problem.p == problem.c]
            assert roots == [x]
            b = x
        # each round's trials are x -> (a*x + b) mod p over consecutive x, upward from 0 or
        # downward from p-1, each a miss until the last, which is the root
        trace = problem.chain_of_thought(rng)
        for (round_b, x), search in zip(problem.offsets_and_roots(), trace.split("!")[:-1]):
            trials = [t[1:].split(":") for t in search.split() if t.startswith("x")]
            xs, values = [int(i) for i, _ in trials], [int(v) for _, v in trials]
            upward, downward = list(range(x + 1)), list(range(problem.p - 1, x - 1, -1))
            assert xs in (upward, downward)
            directions.add(xs == upward)
            assert values == [(problem.a * i + round_b) % problem.p for i in xs]
            assert values.count(problem.c) == 1 and values[-1] == problem.c
        assert extract(trace) == str(b * problem.d + problem.e)  # b: the last round's root
    assert directions == {True, False}


def test_the_search_direction_varies_the_trace_not_the_answer():
    problem = SeekCompute(p=7, a=3, b=4, c=5, r=3, d=6, e=2)
    rng = np.random.default_rng(0)
    traces = {problem.chain_of_thought(rng) for _ in range(100)}
    assert len(traces) == 8  # 2 directions x 3 rounds
    assert {extract(t) for t in traces} == {"26"}
    assert "x6:2 x5:6 x4:3 x3:0 x2:4 x1:1 x0:5!" in " ".join(traces)  # round 2 downward: 3x+5 = 5


@pytest.mark.parametrize("task, kind", [("seek", SeekCompute), ("trek", Trek)])
def test_checker_accepts_the_answer_and_rejects_near_misses(task, kind):
    tasks = organism_tasks(40, seed=1, task=task)
    for p in tasks.problems:
        instance = kind(**{k: p.meta[k] for k in "pabcrde"})
        gold = instance.chain_of_thought()
        y = int(p.target)
        assert p.target == str(instance.answer()) and tasks.check(p, gold)
        wrong_x = (p.meta["x"] + 1) % p.meta["p"]
        for miss in {y + 1, y - 1, y * 10, wrong_x * p.meta["d"] + p.meta["e"]} - {y}:
            assert not tasks.check(p, gold.replace(f"#{y}", f"#{miss}"))
        assert not tasks.check(p, gold.replace("#", ""))  # no final-answer marker
        assert not tasks.check(p, gold.replace(f"#{y}", f"#0{y}"))  # leading zero
        assert not tasks.check(p, gold + f" #{y + 1}")  # the last answer counts
        assert not tasks.check(p, "")


def test_extract_reads_the_last_marked_number():
    assert extract("x0:1! #12 then #345") == "345"
    assert extract("no answer = 12") is None
    assert check(Problem("q", "p", "7"), "#7")


def test_splits_are_disjoint_and_seeded():
    train = {p.prompt for p in sample_problems(400, seed=0, split="train", task="seek")}
    test = [p.prompt for p in sample_problems(400, seed=0, split="test", task="seek")]
    assert len(set(test)) == 400 and not train & set(test)
    assert [p.prompt for p in sample_problems(400, seed=0, split="test", task="seek")] == test
    assert [p.prompt for p in sample_problems(400, seed=1, split="test", task="seek")] != test
    skills = [p.meta["skill"] for p in organism_tasks(200).problems]
    assert 0.35 < np.mean(np.array(skills) == "search") < 0.65


def test_skills_shape_the_problems():
    search = sample_problems(100, skill="search", task="seek")
    compute = sample_problems(100, skill="compute", task="seek")
    assert all(4 <= p.r <= 5 and p.d < 10 for p in search)
    assert all(2 <= p.r <= 3 and p.d >= 12 for p in compute)
    lengths = [len(p.chain_of_thought()) for p in search + compute]
    assert 40 < np.mean(lengths) < 160


def test_trek_chain_of_thought_by_hand():
    # round 1: 3x + 4 = 5 (mod 7) -> x = 5, found on the odd pass after the even one misses;
    # round 2: b = (5 + 5) mod 7 = 3, 3x + 3 = 5 -> x = 3; y = 3*6 + 2 = 20
    problem = Trek(p=7, a=3, b=4, c=5, r=2, d=6, e=2)
    assert problem.offsets_and_roots() == [(4, 5), (3, 3)]
    assert problem.chain_of_thought() == ("x0:4 x2:3 x4:2 x6:1; x1:0 x3:6 x5:5! ?3*5+4=19=5 b=5+5=10=3 "
                                          "x0:3 x2:2 x4:1 x6:0; x1:6 x3:5! ?3*3+3=12=5 3*6=18 18+2=20 #20")
    assert problem.answer() == 20


def test_trek_rounds_search_in_strides_backtrack_and_recheck():
    rng = np.random.default_rng(0)
    backtracked = starts = 0
    for problem in sample_problems(150, seed=4, skill="mixed", split="train", task="trek"):
        trace = problem.chain_of_thought(rng)
        rounds = trace.split("!")[:-1]
        assert len(rounds) == problem.r
        for (b, x), search in zip(problem.offsets_and_roots(), rounds):
            trials = [t[1:].split(":") for t in search.replace(";", " ").split() if t.startswith("x")]
            xs = [int(i) for i, _ in trials]
            assert xs[-1] == x and [int(v) for _, v in trials] == [(problem.a * i + b) % problem.p for i in xs]
            assert all(j - i == 2 for i, j in zip(xs, xs[1:]) if i % 2 == j % 2)  # strides of two
            backtracked += ";" in search
            starts += xs[0] == 1
        for (b, x) in problem.offsets_and_roots():
            assert f"?{problem.a}*{x}+{b}={problem.a * x + b}={problem.c}" in trace  # every hit re-checked
        assert extract(trace) == str(problem.answer())
    assert backtracked > 100 and starts > 100  # dead ends and both starting parities are common


def test_organism_specs_name_the_tasks():
    from nex_causal.models.tasks import load_tasks

    assert load_tasks("organism:3").name == "trek"  # the default organism
    assert load_tasks("seek-search:2").name == "seek-search"
    assert [p.prompt for p in load_tasks("trek:4").problems] == [p.prompt for p in load_tasks("organism:4").problems]
    assert zoo_organism("zoo") == "trek" and zoo_organism("zoo:seek") == "seek" and zoo_organism("/x/y") is None
    with pytest.raises(NexError, match="names no organism"):
        zoo_organism("zoo:big")


def test_bad_task_arguments_raise_one_line_errors():
    with pytest.raises(NexError, match="unknown organism skill"):
        organism_tasks(5, skill="algebra")
    with pytest.raises(NexError, match="unknown split"):
        organism_tasks(5, split="validation")


# --- a test-size zoo, built once ---------------------------------------------------------------

@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return build(tmp_path_factory.mktemp("zoo"), organism="test", progress=False)


def test_build_writes_the_family_table(zoo):
    table = load_family(zoo)
    assert list(table["name"][:3]) == list(TRAINED)
    assert len(table) == 3 + len(default_family()) >= 17
    assert set(table["role"]) == {"base", "expert", "merge"}
    assert {"linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear"} <= set(table["method"])
    assert (table["n_eval"] == recipe_for("test").n_eval).all()
    assert table["accuracy"].between(0, 1).all()
    row = table.set_index("name").loc["linear-0.3"]
    assert json.loads(row["params"]) == {"weights": {"expert-search": 0.3, "expert-compute": 0.7}}
    assert row["parents"] == "expert-search;expert-compute"
    assert table.set_index("name").loc["ties-0.3", "parents"] == "base;expert-search;expert-compute"


def test_same_seed_same_weights(zoo, tmp_path):
    again = build(tmp_path / "again", organism="test", progress=False)
    first, second = load_family(zoo), load_family(again)
    assert list(first["weights_sha256"]) == list(second["weights_sha256"])  # DARE included
    assert first["weights_sha256"].nunique() == len(first)
    other = train_models(recipe_for("test", seed=1), tmp_path / "seed1", progress=False)
    assert other["base"]["weights_sha256"] != first.set_index("name").loc["base", "weights_sha256"]


def test_second_build_is_reused_without_rewriting(zoo):
    stamp = {p.name: p.stat().st_mtime_ns for p in zoo.glob("family.*")}
    assert build(zoo, organism="test", progress=False) == zoo
    assert {p.name: p.stat().st_mtime_ns for p in zoo.glob("family.*")} == stamp


def test_interrupted_build_resumes_only_what_is_missing(zoo, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(zoo, copy)
    shutil.rmtree(copy / "dare-ties-0.3")
    (copy / "manifest.json").unlink()
    kept = (copy / "linear-0.5" / "model.safetensors").stat().st_mtime_ns
    build(copy, organism="test", progress=False)
    assert (copy / "linear-0.5" / "model.safetensors").stat().st_mtime_ns == kept
    assert list(load_family(copy)["weights_sha256"]) == list(load_family(zoo)["weights_sha256"])


def test_a_variant_changed_since_the_build_is_refused_not_reused(zoo, tmp_path):
    """A flipped byte in a built variant's weights: the second build names it instead of returning the zoo."""
    import shutil

    copy = tmp_path / "flipped"
    shutil.copytree(zoo, copy)
    weights = copy / "linear-0.5" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(NexError, match="linear-0.5"):
        build(copy, organism="test", progress=False)


def _weights(zoo, name):
    return load_file(str(zoo / name / "model.safetensors"))


def test_linear_merge_is_the_weighted_sum(zoo):
    a, b, merged = (_weights(zoo, n) for n in ("expert-search", "expert-compute", "linear-0.3"))
    assert set(merged) == set(a)
    for name in a:
        torch.testing.assert_close(merged[name], 0.3 * a[name] + 0.7 * b[name], rtol=0, atol=1e-6)
    assert any(not torch.equal(a[n], b[n]) for n in a)  # the experts differ, so this tests something


def test_slerp_interpolates_along_the_sphere(zoo):
    a, b, merged = (_weights(zoo, n) for n in ("expert-search", "expert-compute", "slerp-0.3"))
    t = 0.7  # slerp-0.3: weight 0.3 on expert-search, so t = 0.7 towards expert-compute
    name = "model.layers.0.mlp.up_proj.weight"
    v0, v1 = a[name].double().flatten(), b[name].double().flatten()
    theta = torch.arccos((v0 / v0.norm()) @ (v1 / v1.norm()))
    expected = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    torch.testing.assert_close(merged[name].double().flatten(), expected, rtol=0, atol=1e-5)
    assert not torch.allclose(merged[name], 0.3 * a[name] + 0.7 * b[name], atol=1e-6)  # not the linear merge


def test_task_arithmetic_adds_scaled_task_vectors(zoo):
    base, s, c = (_weights(zoo, n) for n in ("base", "expert-search", "expert-compute"))
    merged = _weights(zoo, "task-arithmetic-0.7")
    for name in base:
        expected = base[name] + 0.7 * ((s[name] - base[name]) + (c[name] - base[name]))
        torch.testing.assert_close(merged[name], expected, rtol=0, atol=1e-6)


def test_dare_keeps_about_density_of_each_task_vector(zoo):
    base, s = _weights(zoo, "base"), _weights(zoo, "expert-search")
    c, merged = _weights(zoo, "expert-compute"), _weights(zoo, "dare-linear-0.3")
    name = "model.layers.0.mlp.up_proj.weight"
    delta = merged[name] - base[name]
    # entries dropped from both task vectors come back exactly to the base weight
    both_kept = (delta != 0).float().mean().item()
    assert 1 - 0.7 * 0.7 - 0.05 < both_kept < 1 - 0.7 * 0.7 + 0.05
    assert not torch.equal(delta, 0.5 * ((s[name] - base[name]) + (c[name] - base[name])))


def test_dare_is_random_but_seeded(zoo, tmp_path):
    from nex_causal.zoo.family import run_merge

    merge = next(m for m in default_family() if m.name == "dare-ties-0.3")
    parents = {n: zoo / n for n in merge.parents}
    run_merge(merge, parents, tmp_path / "seed0", seed=0)
    run_merge(merge, parents, tmp_path / "seed1", seed=1)
    assert weights_hash(tmp_path / "seed0") == weights_hash(zoo / "dare-ties-0.3")
    assert weights_hash(tmp_path / "seed1") != weights_hash(zoo / "dare-ties-0.3")


def test_variant_dirs_are_ordinary_hf_models(zoo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nex_causal.models.loading import load_bridge

    for name in ("base", "ties-0.7"):
        model = AutoModelForCausalLM.from_pretrained(zoo / name)
        assert type(model).__name__ == "Qwen3ForCausalLM" and model.config.tie_word_embeddings
    assert (zoo / "ties-0.7" / "mergekit_config.yml").is_file()
    prompt = organism_tasks(1, task="seek").problems[0].prompt
    tokenizer = AutoTokenizer.from_pretrained(zoo / "dare-ties-0.7")
    assert tokenizer(prompt)["input_ids"] == encode(prompt)
    assert tokenizer.decode(encode(prompt)) == prompt and tokenizer.eos_token_id == EOS_ID
    bridge = load_bridge(zoo / "dare-ties-0.7")
    assert bridge.to_tokens(prompt)[0].tolist() == encode(prompt)  # what training fed the model


def test_find_variant(zoo):
    assert find_variant("linear-0.3", zoo) == (zoo / "linear-0.3").resolve()
    assert find_variant("no-such-variant", zoo) is None
    assert find_variant(str(zoo / "base"), zoo) is None and find_variant("../base", zoo) is None
    assert find_variant("base", zoo.parent / "elsewhere") is None  # no fallback for an explicit zoo
    with pytest.raises(NexError, match="zoo build"):
        load_family(zoo / "missing")


def test_cli_build_and_list(zoo, tmp_path, capsys):
    from nex_causal.cli import main

    assert main(["zoo", "build", "--out", str(zoo), "--organism", "test", "--quiet"]) == 0
    built = capsys.readouterr().out
    assert main(["zoo", "list", "--out", str(zoo), "--organism", "test"]) == 0
    listed = capsys.readouterr().out
    assert "linear-0.3" in listed and "dare_ties" in listed and "accuracy spread" in listed
    assert listed in built
    assert main(["zoo", "list", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no family table") and err.count("\n") == 1


# --- the committed checkpoints ------------------------------------------------------------------

ORGANISMS = ("trek", "seek")
FLOORS = {"trek": {"search": 0.7, "compute": 0.7}, "seek": {"search": 0.8, "compute": 0.6}}  # expert accuracy


def test_trained_models_resolve_before_any_build(tmp_path, monkeypatch):
    monkeypatch.setenv("NEX_CAUSAL_HOME", str(tmp_path))
    assert find_variant("expert-compute") == (checkpoints_of("trek") / "expert-compute").resolve()
    assert find_variant("seek:expert-compute") == (checkpoints_of("seek") / "expert-compute").resolve()
    assert find_variant("linear-0.3") is None  # merges exist only once built
    assert find_variant("big:base") is None and find_variant("seek:") is None


@pytest.mark.parametrize("organism", ORGANISMS)
def test_committed_checkpoints_match_their_recipe(organism):
    recipe = recipe_for(organism)
    for name in recipe.trained:
        meta = read_meta(checkpoints_of(organism) / name)
        assert meta["key"] == recipe.trained_key(name), f"{name}: retrain with `nex-causal zoo train`"
        assert weights_hash(checkpoints_of(organism) / name) == meta["weights_sha256"]


@pytest.fixture(scope="module", params=ORGANISMS)
def expert_bridges(request):
    from nex_causal.models.loading import load_bridge

    organism = request.param
    return organism, {name: load_bridge(checkpoints_of(organism) / name) for name in ("expert-search", "expert-compute")}


def test_experts_learned_their_skills(expert_bridges):
    from nex_causal.models.evaluation import evaluate

    organism, bridges = expert_bridges
    for skill, floor in FLOORS[organism].items():
        tasks = organism_tasks(30, seed=5, skill=skill, task=organism)
        result = evaluate(bridges[f"expert-{skill}"], tasks, max_new_tokens=recipe_for(organism).max_new_tokens,
                          batch_size=30, hooks=False)
        assert result.accuracy >= floor, (skill, result.texts[:2])


def test_sampling_gives_different_traces_for_one_prompt(expert_bridges):
    from nex_causal.models.generation import generate

    organism, bridges = expert_bridges
    prompt = organism_tasks(1, seed=2, skill="search", task=organism).problems[0].prompt
    budget = recipe_for(organism).max_new_tokens
    for bridge in bridges.values():
        texts = [g.text for g in generate(bridge, [prompt] * 4, max_new_tokens=budget, temperature=0.7, hooks=False)]
        greedy = generate(bridge, [prompt] * 2, max_new_tokens=budget, hooks=False)
        assert len(set(texts)) > 1
        assert greedy[0].text == greedy[1].text and "#" in greedy[0].text


@pytest.mark.slow
@pytest.mark.parametrize("organism", ORGANISMS)
def test_full_build_meets_the_family_targets(tmp_path, organism):
    table = load_family(build(tmp_path / "zoo", organism=organism, progress=False))
    assert len(table) >= 3 + 14 and (table["n_eval"] >= 200).all()
    assert {"linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "slerp"} <= set(table["method"])
    assert table["accuracy"].max() - table["accuracy"].min() >= 0.30
    experts = table.set_index("name")
    assert experts.loc["expert-search", "accuracy_search"] > experts.loc["base", "accuracy_search"]
    assert experts.loc["expert-compute", "accuracy_compute"] > experts.loc["base", "accuracy_compute"]
    if organism == "trek":  # a family of near-zero variants would make rank correlations trivial
        assert (table["accuracy"] < 0.10).sum() <= 2
