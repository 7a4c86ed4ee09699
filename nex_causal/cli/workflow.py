"""``run``, ``demo``, ``figures``, ``annotate``: experiments end to end."""

from __future__ import annotations

import argparse
import sys

from nex_causal.errors import NexError

DEGENERATE = 3  # exit status of a run whose results are degenerate (report.degenerate_findings)


def add(sub: argparse._SubParsersAction) -> None:
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
