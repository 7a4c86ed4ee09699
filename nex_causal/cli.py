"""The ``nex-causal`` command: thin argument parsing over the library.

Each command group lives in its own ``_add_<group>`` function, which declares the
arguments and a handler that calls library code. Errors the user can fix (``NexError``)
print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nex_causal import __version__
from nex_causal.errors import NexError

DEGENERATE = 3  # exit status of a run whose results are degenerate (report.degenerate_findings)


def _add_nex(sub: argparse._SubParsersAction) -> None:
    """``nex train|score|run``: learn neuron weights and score a cache (NEX_METHOD 2-6)."""
    nex = sub.add_parser("nex", help="learn NEX neuron weights and score a cache",
                         description="Learn NEX neuron weights from an unlabeled cache and score "
                         "responses by Good-Mass Fraction.")
    verbs = nex.add_subparsers(dest="nex_command", required=True, metavar="{train,score,run}")
    train = verbs.add_parser("train", help="learn weights from a cache")
    score = verbs.add_parser("score", help="score a cache with given weights")
    run = verbs.add_parser("run", help="learn weights from a cache and score that same cache")
    for p in (train, score, run):
        p.add_argument("--cache-dir", required=True, help="SparseCache directory")
    for p in (train, run):
        p.add_argument("--rho", type=float, default=0.95, help="sticky HMM self-transition (default 0.95)")
        p.add_argument("--min-run", type=int, default=2, help="shortest E/X run in rows (default 2)")
        p.add_argument("--max-responses", type=int, default=0,
                       help="learn from the first N responses only (default 0: all)")
        p.add_argument("--positive-only", action="store_true",
                       help="introduce only neurons with positive mass (the reference counts zero-mass entries too)")
        p.add_argument("--mad-rounding", action="store_true",
                       help="treat a MAD within float rounding of 0 as 0 (the reference tests mad <= 0)")
        p.add_argument("--workers", type=int, default=None, help="worker processes (default: every core)")
    train.add_argument("--weights-out", required=True, help="weights .npz to write")
    score.add_argument("--weights", required=True, help="weights .npz (from `nex train` or the reference)")
    for p in (score, run):
        p.add_argument("--output-dir", required=True,
                       help="directory for response_scores.npy and summary.json (and weights.npz for run)")
        p.add_argument("--log-gap-output", action="store_true",
                       help="write -log10(1 - NEX) as nex_score, as the reference does (the mean GMF goes to gmf_mean)")

    def learned(args: argparse.Namespace):
        from nex_causal.cache import SparseCache
        from nex_causal.nex import NexConfig, learn

        cache = SparseCache.open(args.cache_dir)
        config = NexConfig(rho=args.rho, min_run=args.min_run, positive_only=args.positive_only,
                           mad_rounding=args.mad_rounding)
        cal = learn(cache, config, max_responses=args.max_responses, workers=args.workers)
        print(f"{args.cache_dir}: learned weights on {cal.n_responses} of {cache.n_responses} responses "
              f"(rho {args.rho}, min_run {args.min_run}): {int((cal.weights > 0).sum())} effective and "
              f"{int((cal.weights < 0).sum())} redundant neurons")
        return cache, cal

    def scored(args: argparse.Namespace, cache, weights, **fields) -> None:
        from nex_causal.nex import log_gap, score_responses, write_scores

        s = write_scores(args.output_dir, score_responses(cache, weights), log_gap_output=args.log_gap_output,
                         **fields)
        nex = s["gmf_mean"] if args.log_gap_output else s["nex_score"]
        print(f"{args.cache_dir}: scored {s['n_scored_responses']} of {s['n_responses']} responses; "
              f"NEX = {nex:.6f} (log-gap {log_gap(nex):.4f}) -> {args.output_dir}")

    def do_train(args: argparse.Namespace) -> None:
        from nex_causal.nex import save_weights

        _, cal = learned(args)
        save_weights(args.weights_out, cal.weights)
        print(f"weights -> {args.weights_out}")

    def do_score(args: argparse.Namespace) -> None:
        from nex_causal.cache import SparseCache
        from nex_causal.nex import load_weights

        cache = SparseCache.open(args.cache_dir)
        scored(args, cache, load_weights(args.weights), weights_file=str(args.weights))

    def do_run(args: argparse.Namespace) -> None:
        from pathlib import Path

        from nex_causal.nex import save_weights

        cache, cal = learned(args)
        save_weights(Path(args.output_dir) / "weights.npz", cal.weights)
        scored(args, cache, cal.weights, rho=args.rho, min_run=args.min_run,
               n_calibration_responses=cal.n_responses)

    train.set_defaults(handler=do_train)
    score.set_defaults(handler=do_score)
    run.set_defaults(handler=do_run)


def _add_zoo(sub: argparse._SubParsersAction) -> None:
    """``zoo build|list``: the embedded model organism and its merge family."""
    zoo = sub.add_parser("zoo", help="build or list the embedded model organism and its merge family",
                         description="The model organism: small Qwen3 models trained here on "
                         "seek-and-compute problems, two experts, and a mergekit merge family.")
    verbs = zoo.add_subparsers(dest="zoo_command", required=True, metavar="{build,list,train}")
    build_cmd = verbs.add_parser("build", help="build or reuse the family and its accuracy table",
                                 description="Copy (or train) base and experts, run the merges, "
                                 "measure greedy accuracy, write DIR/family.csv. Cached by content: "
                                 "a second call with the same recipe returns at once.")
    list_cmd = verbs.add_parser("list", help="print the family table of a built zoo")
    train_cmd = verbs.add_parser("train", help="train base and experts from scratch into a directory",
                                 description="Train base and experts into --out (to regenerate the "
                                 "committed weights: --out nex_causal/zoo/checkpoints).")
    for p in (build_cmd, list_cmd):
        p.add_argument("--out", default=None, help="zoo directory (default $NEX_CAUSAL_HOME/zoo)")
    train_cmd.add_argument("--out", required=True, help="directory for base/ and the expert-*/ models")
    for p in (build_cmd, train_cmd):
        p.add_argument("--seed", type=int, default=0, help="training and merge seed (default 0)")
        p.add_argument("--size", choices=["full", "test"], default="full",
                       help="full: the organism; test: a seconds-long toy recipe for tests")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    build_cmd.add_argument("--retrain", action="store_true", help="train base and experts from scratch "
                           "and check them against the committed weights")

    def do_build(args: argparse.Namespace) -> None:
        import time

        from nex_causal.zoo.build import build, describe

        start = time.perf_counter()
        out = build(args.out, seed=args.seed, size=args.size, retrain=args.retrain,
                    progress=not args.quiet)
        print(describe(out))
        print(f"done in {time.perf_counter() - start:.1f} s")

    def do_list(args: argparse.Namespace) -> None:
        from nex_causal.zoo.build import describe

        print(describe(args.out))

    def do_train(args: argparse.Namespace) -> None:
        import shutil
        from pathlib import Path

        from nex_causal.zoo.build import TRAINED, recipe_for, record_accuracy, train_models

        for name in TRAINED:
            shutil.rmtree(Path(args.out) / name, ignore_errors=True)
        recipe = recipe_for(args.size, args.seed)
        metas = train_models(recipe, args.out, progress=not args.quiet)
        for name, meta in metas.items():
            recorded = record_accuracy(Path(args.out) / name, recipe)["recorded_eval"]
            print(f"{name}: {meta['train_seconds']} s, weights sha256 {meta['weights_sha256']}, "
                  f"greedy accuracy {recorded['accuracy']:.3f} (recorded with the weights)")

    build_cmd.set_defaults(handler=do_build)
    list_cmd.set_defaults(handler=do_list)
    train_cmd.set_defaults(handler=do_train)


def _add_capture(sub: argparse._SubParsersAction) -> None:
    """``capture``: sample responses while recording sparse MLP activations."""
    p = sub.add_parser("capture", help="sample N responses per prompt, recording sparse MLP activations",
                       description="Sample N responses per prompt through the TransformerBridge and "
                       "record sparse MLP activations into a SparseCache (resumable).")
    p.add_argument("--model", required=True,
                   help="zoo variant name, smollm2-135m, a local HF directory, or a cached HF id")
    p.add_argument("--tasks", required=True,
                   help="task spec: organism:200, rg:<dataset>:100, or a .jsonl file")
    p.add_argument("--n-samples", type=int, default=4, help="responses per prompt (default 4)")
    p.add_argument("--out", required=True, help="cache directory to write")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    p.add_argument("--sparsifier", default="topk:500",
                   help="topk:K | layer-topk:K | threshold:T | mui:K (default topk:500)")
    p.add_argument("--window", type=int, default=32, help="generated tokens per cache row")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the tokenizer's chat template")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", help="float32 or bfloat16")

    def run(args: argparse.Namespace) -> None:
        from nex_causal.capture import CaptureConfig, capture

        config = CaptureConfig(
            model=args.model, tasks=args.tasks, n_samples=args.n_samples,
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
            seed=args.seed, batch_size=args.batch_size, sparsifier=args.sparsifier,
            window=args.window, chat=args.chat, device=args.device, dtype=args.dtype)
        cache = capture(config, args.out)
        table = cache.responses
        print(f"{args.out}: {cache.n_responses} responses, {cache.n_rows} rows, "
              f"{int(table['n_tokens'].sum())} generated tokens, "
              f"accuracy {table['correct'].mean():.3f}")

    p.set_defaults(handler=run)


def _add_selection(sub: argparse._SubParsersAction) -> None:
    """``select`` and ``rank``: Best-of-N selection and model ranking against baselines."""
    select = sub.add_parser("select", help="Best-of-N selection: every selector's accuracy on one or more caches",
                            description="Pick one of the N responses per prompt with each label-free selector "
                            "(NEX, NAD, output-based, majority vote) and report its accuracy against random, "
                            "Avg@N and oracle, with bootstrap intervals over prompts.")
    select.add_argument("--cache-dir", nargs="+", required=True, help="one or more capture cache directories")
    select.add_argument("--selectors", help="comma-separated subset (default: all)")
    select.add_argument("--early-tokens", type=int, default=32, help="NAD early-decision prefix (default 32)")
    select.add_argument("--deepconf-window", type=int, default=2048, help="DeepConf group size (default 2048)")
    select.add_argument("--knn-k", type=int, default=3, help="neighbours of the kNN-medoid (default 3)")
    select.add_argument("--random-seeds", type=int, default=100, help="draws averaged by `random` (default 100)")
    rank = sub.add_parser("rank", help="model ranking: label-free scores of a merge family against accuracy",
                          description="Score every variant of a family on its own unlabeled cache (NEX, "
                          "entropy, self-certainty, MUI, activated neurons, perplexity) and report Spearman, "
                          "Kendall, top-1 hit and regret against accuracy, plus the inverted-U analysis.")
    rank.add_argument("--family", required=True, help="the zoo's family directory (or its family.csv)")
    rank.add_argument("--caches", nargs="+", required=True,
                      help="one or more directories holding a cache per variant, as <dir>/<variant name>/")
    rank.add_argument("--scores", help="comma-separated subset (default: all)")
    rank.add_argument("--accuracy", choices=("cache", "family"), default="cache",
                      help="cache: each cache's mean `correct` (default); family: the table's accuracy column")
    rank.add_argument("--n-neurons", type=int, help="MLP neurons (n_layers * d_mlp) for MUI; "
                      "default: from each cache's capture.json")
    rank.add_argument("--n-bins", type=int, default=10, help="proxy bins of the inverted-U (default 10)")
    for p in (select, rank):
        p.add_argument("--out", required=True, help="directory for the result tables (parquet + csv)")
        p.add_argument("--weights", help="NEX weights learned elsewhere: a .npz from `nex train` or a cache "
                       "directory to learn them on (select: the nex-cross row; rank: replaces self-calibration)")
        p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of prompts (default 1000)")
        p.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
        p.add_argument("--seed", type=int, default=0)

    def weights(args: argparse.Namespace):
        from pathlib import Path

        from nex_causal.cache import SparseCache
        from nex_causal.nex import learn_weights, load_weights

        if args.weights is None:
            return None
        if Path(args.weights).is_dir():
            return learn_weights(SparseCache.open(args.weights))
        return load_weights(args.weights)

    def names(text: str | None) -> list[str] | None:
        return None if text is None else [n.strip() for n in text.split(",") if n.strip()]

    def config(args: argparse.Namespace) -> dict:
        return {k: v for k, v in vars(args).items() if k != "handler"}

    def report(table, skipped_from: str) -> None:
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(table.drop(columns=["status"]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        for _, row in table[table.status != "ok"].iterrows():
            print(f"could not run {row[skipped_from]}: {row.status.removeprefix('skipped: ')}")

    def do_select(args: argparse.Namespace) -> None:
        from pathlib import Path

        from nex_causal.io import write_table
        from nex_causal.selectors import SelectionConfig, selection_table

        cfg = SelectionConfig(early_tokens=args.early_tokens, deepconf_window=args.deepconf_window,
                              knn_k=args.knn_k, n_random_seeds=args.random_seeds, seed=args.seed,
                              weights=weights(args), progress=True)
        table = selection_table(args.cache_dir, cfg, names(args.selectors), n_boot=args.n_boot,
                                level=args.level, seed=args.seed, progress=True)
        write_table(table, Path(args.out) / "selection", config=config(args))
        report(table, "selector")
        print(f"-> {Path(args.out) / 'selection'}.{{parquet,csv}}")

    def do_rank(args: argparse.Namespace) -> None:
        from pathlib import Path

        from nex_causal.io import write_table
        from nex_causal.ranking import RankingConfig, load_family, ranking_tables

        family = load_family(args.family)
        accuracy = None
        if args.accuracy == "family":
            if "accuracy" not in family:
                raise NexError(f"{args.family} has no accuracy column; use --accuracy cache")
            accuracy = dict(zip(family["name"].astype(str), family["accuracy"]))
        cfg = RankingConfig(weights=weights(args), n_neurons=args.n_neurons, progress=True)
        tables, notes = ranking_tables(family, args.caches, accuracy=accuracy, config=cfg,
                                       scores=names(args.scores), n_boot=args.n_boot, level=args.level,
                                       seed=args.seed, n_bins=args.n_bins, progress=True)
        for note in notes:
            print(f"note: {note}")
        for key, table in tables.items():
            write_table(table, Path(args.out) / key, config=config(args))
        report(tables["ranking"], "score")
        print(tables["inverted_u"].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
        print(f"-> {args.out}/{{ranking,ranking_scores,inverted_u,inverted_u_bins}}.{{parquet,csv}}")

    select.set_defaults(handler=do_select)
    rank.set_defaults(handler=do_rank)


def _add_intervene(sub: argparse._SubParsersAction) -> None:
    """``transfer`` and ``ablate``: the causal neuron experiments."""
    def grid_arguments(p: argparse.ArgumentParser, interventions: str) -> None:
        p.add_argument("--config", help="YAML/JSON file of settings (keys as the options below, with "
                       "underscores); options given here override it")
        p.add_argument("--family", help="directory of the merge family whose variants are named here")
        p.add_argument("--weights", help="NEX weights (.npz from `nex-causal nex train`)")
        p.add_argument("--k", help="set sizes, comma-separated (default 8,32,128,512)")
        p.add_argument("--seeds", type=int, help="matched random sets per k (default 5)")
        p.add_argument("--tasks", help="held-out prompts: organism:200, rg:<dataset>:100, or a .jsonl file")
        p.add_argument("--out", help="run directory (resumable: finished cells are kept)")
        p.add_argument("--interventions", help=f"comma-separated subset of {interventions} (default all)")
        p.add_argument("--sets", help="your own neuron sets to run beside the grid: comma-separated "
                       "CSV/parquet files with columns layer, unit")
        p.add_argument("--decodings", help="comma-separated subset of greedy,sampled (default both)")
        p.add_argument("--temperature", type=float, help="temperature of sampled decoding (default 0.7)")
        p.add_argument("--top-p", dest="top_p", type=float, help="nucleus mass of sampled decoding (default 1)")
        p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, help="default 256")
        p.add_argument("--chat", action="store_true", default=None,
                       help="wrap prompts in the tokenizer's chat template")
        p.add_argument("--seed", type=int, help="seed of random sets, sampling and bootstrap (default 0)")
        p.add_argument("--task-seed", dest="task_seed", type=int, help="seed drawing the prompts (default 1)")
        p.add_argument("--n-boot", dest="n_boot", type=int, help="bootstrap resamples (default 1000)")
        p.add_argument("--batch-size", dest="batch_size", type=int, help="sequences per forward pass (default 32)")
        p.add_argument("--device", help="cpu or cuda (default cpu)")
        p.add_argument("--dtype", help="float32 or bfloat16 (default float32)")

    def run(args: argparse.Namespace) -> None:
        from nex_causal.intervene.transfer import command_config, format_report, run_grid

        options = {k: v for k, v in vars(args).items() if k not in ("command", "handler", "config")}
        config, out = command_config(args.command, args.config, options)
        table, summary = run_grid(config, out)
        print(format_report(table, summary))
        print(f"tables written to {out}/{config.experiment}.csv and {out}/summary.csv")

    p = sub.add_parser("transfer", help="transplant/patch effective vs redundant neurons from donor to recipient",
                       description="Give the recipient the donor's top-k effective, bottom-k redundant and "
                       "layer-matched random neurons (weight transplant and activation patching), measure "
                       "accuracy on held-out prompts, and report deltas and gaps with bootstrap intervals.")
    p.add_argument("--donor", help="variant whose neurons are given")
    p.add_argument("--recipient", help="variant that receives them")
    grid_arguments(p, "transplant,patch")
    p.set_defaults(handler=run)

    p = sub.add_parser("ablate", help="zero/mean-ablate effective vs redundant neurons inside one model",
                       description="Ablate the top-k effective, bottom-k redundant and layer-matched random "
                       "neurons of one model (zero and mean ablation) and report accuracy deltas and gaps.")
    p.add_argument("--model", help="variant to ablate")
    grid_arguments(p, "zero,mean")
    p.set_defaults(handler=run)


def _add_workflow(sub: argparse._SubParsersAction) -> None:
    """``run``, ``figures``, ``demo``, ``annotate``: experiments end to end."""
    run = sub.add_parser("run", help="run (or resume) an experiment config end to end",
                         description="Run every stage of an experiment YAML (zoo, capture, NEX, selection, "
                         "ranking, transfer, ablation, figures) into a run directory; stages whose outputs "
                         "match the config are skipped, so an interrupted run resumes.")
    run.add_argument("config", metavar="CONFIG.yaml", help="experiment config (see experiments/)")
    demo = sub.add_parser("demo", help="the demo experiment on the embedded model organism",
                          description="Build the zoo, capture, score, select, rank, transfer and draw "
                          "the figures on the embedded default; prints where the report is.")
    for p in (run, demo):
        p.add_argument("--run-dir", help="run directory (default runs/<experiment name>)")

    def do_run(args: argparse.Namespace) -> int:
        import json

        from nex_causal.experiment import DEMO_CONFIG, run_experiment

        report = run_experiment(getattr(args, "config", DEMO_CONFIG), args.run_dir)
        print(f"report: {report.resolve()}")
        warnings = json.loads((report.parent / "manifest.json").read_text()).get("warnings", [])
        for warning in warnings:
            print(f"warning: degenerate result: {warning}", file=sys.stderr)
        return DEGENERATE if warnings else 0

    run.set_defaults(handler=do_run)
    demo.set_defaults(handler=do_run)

    figures = sub.add_parser("figures", help="draw the paper's figures from a run directory's tables",
                             description="Render every figure whose table exists under RUN_DIR/tables "
                             "into RUN_DIR/figures (PDF + PNG + JSON sidecar) and name the ones skipped.")
    figures.add_argument("run_dir", metavar="RUN_DIR", help="run directory (holds tables/)")
    figures.add_argument("--out", help="folder for the figures (default RUN_DIR/figures)")
    figures.add_argument("--readme", action="store_true",
                         help="regenerate only the figures the README shows, into the repository's figures/ "
                         "(or --out)")

    def draw(args: argparse.Namespace) -> None:
        from nex_causal.figures import README_FIGURES, REPO_FIGURES, make_figures, missing_tables

        names = README_FIGURES if args.readme else None
        out = args.out or (REPO_FIGURES if args.readme else None)
        for path in make_figures(args.run_dir, out, names):
            print(path)
        for name, tables in missing_tables(args.run_dir, names).items():
            print(f"skipped {name}: no table {', '.join(tables)}")

    figures.set_defaults(handler=draw)

    annotate = sub.add_parser("annotate", help="human E/X labels for validating the HMM phases",
                              description="Export windows of chosen responses for a person to label E "
                              "(explore) or X (exploit), as CSV and a self-contained HTML page, and score "
                              "the filled labels against the HMM phases.")
    verbs = annotate.add_subparsers(dest="annotate_command", required=True, metavar="{export,score}")
    export = verbs.add_parser("export", help="write OUT.csv and OUT.html with the windows to label")
    export.add_argument("--cache-dir", required=True, help="SparseCache directory written by `capture`")
    export.add_argument("--responses", required=True, help="comma-separated response indices, e.g. 0,3,5")
    export.add_argument("--out", required=True, help="output stem: writes OUT.csv and OUT.html")
    export.add_argument("--tokenizer", help="model name or directory whose tokenizer splits the text "
                        "(default: the model in CACHE_DIR/capture.json)")
    score = verbs.add_parser("score", help="agreement of filled labels with the HMM phases")
    score.add_argument("--cache-dir", required=True, help="the cache the windows were exported from")
    score.add_argument("--labels", required=True, help="the filled CSV")
    score.add_argument("--rho", type=float, default=0.95, help="sticky HMM self-transition (default 0.95)")
    score.add_argument("--min-run", type=int, default=2, help="shortest E/X run in rows (default 2)")
    score.add_argument("--out", help="also write the per-window comparison table here (parquet + CSV)")

    def do_export(args: argparse.Namespace) -> None:
        from nex_causal.annotate import export_annotation

        try:
            responses = [int(r) for r in args.responses.split(",") if r.strip()]
        except ValueError:
            raise NexError(f"--responses {args.responses!r} is not a comma-separated list of integers, "
                           "e.g. 0,3,5") from None
        for path in export_annotation(args.cache_dir, responses, args.out, tokenizer=args.tokenizer):
            print(path)

    def do_score(args: argparse.Namespace) -> None:
        from nex_causal.annotate import score_annotation
        from nex_causal.io import write_table

        result, table = score_annotation(args.cache_dir, args.labels, rho=args.rho, min_run=args.min_run)
        print(f"{result.n} windows ({len(table) - result.n} without an HMM phase): Cohen's kappa "
              f"{result.kappa:.3f}, F1 explore {result.f1_explore:.3f}, F1 exploit {result.f1_exploit:.3f}, "
              f"agreement {result.accuracy:.3f}")
        if args.out:
            write_table(table, args.out, config={"cache_dir": args.cache_dir, "labels": args.labels,
                                                 "rho": args.rho, "min_run": args.min_run})

    export.set_defaults(handler=do_export)
    score.set_defaults(handler=do_score)


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    """``doctor``: the versions that determine results, the device, and the self-checks."""
    p = sub.add_parser("doctor", help="check that this software stack computes right numbers",
                       description="Print the versions that determine results and the device, then run the "
                       "self-checks (verified transformers, KV cache, bridge = HF logits, NEX on the reference "
                       "example); exit 0 only when all of them pass.")

    def run(args: argparse.Namespace) -> int:
        from nex_causal.doctor import doctor_report

        text, ok = doctor_report()
        print(text)
        return 0 if ok else 1

    p.set_defaults(handler=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nex-causal", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"nex-causal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_doctor, _add_nex, _add_zoo, _add_capture, _add_selection, _add_intervene, _add_workflow):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except NexError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
