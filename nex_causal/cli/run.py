"""``run``, ``demo``, ``figures``, ``doctor`` and ``config``: experiments end to end, and the stack they run on."""

from __future__ import annotations

import argparse
import sys

DEGENERATE = 3  # exit status of a run whose results are degenerate (run.report.degenerate_findings)


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
        p.set_defaults(handler=do_run)

    figures = sub.add_parser("figures", help="draw the paper's figures from a run directory's tables",
                             description="Render every figure whose table exists under RUN_DIR/tables "
                             "into RUN_DIR/figures (PDF + PNG + JSON sidecar) and name the ones skipped.")
    figures.add_argument("run_dir", metavar="RUN_DIR", help="run directory (holds tables/)")
    figures.add_argument("--out", help="folder for the figures (default RUN_DIR/figures)")
    figures.add_argument("--readme", action="store_true",
                         help="regenerate only the figures the README shows, into the repository's figures/ "
                         "(or --out)")
    figures.set_defaults(handler=do_figures)

    doctor = sub.add_parser("doctor", help="check that this software stack computes right numbers",
                            description="Print the versions that determine results and the device, then run the "
                            "self-checks (verified transformers, KV cache, bridge = HF logits, NEX on the "
                            "reference example); exit 0 only when all of them pass.")
    doctor.set_defaults(handler=do_doctor)

    config = sub.add_parser("config", help="the schema of an experiment config, or a config checked",
                            description="With --schema, print every key an experiment YAML may hold, with its "
                            "default and what it means; with a file, check it and print it resolved.")
    config.add_argument("file", nargs="?", metavar="CONFIG.yaml", help="a config to check and print resolved")
    config.add_argument("--schema", action="store_true", help="print the schema with every default")
    config.set_defaults(handler=do_config)


def do_run(args: argparse.Namespace) -> int:
    import json

    from nex_causal.run.experiment import DEMO_CONFIG, run_experiment

    report = run_experiment(getattr(args, "config", DEMO_CONFIG), args.run_dir)
    manifest = json.loads((report.parent / "manifest.json").read_text())
    if manifest["config"].get("figures") and report.is_file():
        print(f"report: {report.resolve()}")
    else:
        print(f"run finished in {report.parent.resolve()} (no report: figures are off in this config)")
    for warning in manifest.get("warnings", []):
        print(f"warning: degenerate result: {warning}", file=sys.stderr)
    return DEGENERATE if manifest.get("warnings") else 0


def do_figures(args: argparse.Namespace) -> None:
    from nex_causal.figures import (
        README_FIGURES,
        REPO_FIGURES,
        make_figures,
        missing_tables,
    )

    names = README_FIGURES if args.readme else None
    out = args.out or (REPO_FIGURES if args.readme else None)
    for path in make_figures(args.run_dir, out, names):
        print(path)
    for name, tables in missing_tables(args.run_dir, names).items():
        print(f"skipped {name}: no table {', '.join(tables)}")


def do_doctor(args: argparse.Namespace) -> int:
    from nex_causal.run.doctor import doctor_report

    text, ok = doctor_report()
    print(text)
    return 0 if ok else 1


def do_config(args: argparse.Namespace) -> None:
    import dataclasses

    from nex_causal.errors import NexError
    from nex_causal.run.experiment import ExperimentConfig, load_config
    from nex_causal.settings import schema

    if args.schema:
        print("\n".join(schema(ExperimentConfig)))
    elif args.file:
        import yaml

        print(yaml.safe_dump(dataclasses.asdict(load_config(args.file)), sort_keys=False).rstrip())
    else:
        raise NexError("give a config file to check, or --schema to print every key with its default")
