"""``transfer`` and ``ablate``: the causal neuron experiments as resumable grids."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from nex_causal.errors import NexError

if TYPE_CHECKING:
    import pandas as pd
from nex_causal.intervene.cells import GridConfig
from nex_causal.io import read_mapping
from nex_causal.settings import add_options, from_mapping, given_options, split_lists


def add(sub: argparse._SubParsersAction) -> None:
    for experiment, help_text, description in (
        ("transfer", "transplant/patch effective vs redundant neurons from donor to recipient",
         "Give the recipient the donor's top-k effective, bottom-k redundant and layer-matched random neurons "
         "(weight transplant and activation patching), measure accuracy and teacher-forced log-probabilities on "
         "held-out prompts, and report deltas, gaps with bootstrap intervals, p-values against the random sets "
         "and the minimum detectable effect."),
        ("ablate", "zero/mean-ablate effective vs redundant neurons inside one model",
         "Ablate the top-k effective, bottom-k redundant and layer-matched random neurons of one model (zero "
         "and mean ablation) and report accuracy deltas and gaps."),
    ):
        p = sub.add_parser(experiment, help=help_text, description=description)
        p.add_argument("--config", help="YAML/JSON file of settings (keys as the options below, with "
                       "underscores); options given here override it")
        p.add_argument("--out", help="run directory (resumable: finished cells are kept)")
        add_options(p, GridConfig, exclude=("experiment",))
        p.set_defaults(handler=run, experiment=experiment)


def command_config(experiment: str, config_file: str | None, options: dict) -> tuple[GridConfig, Path]:
    """The config and output directory of a grid command: the file's settings (if any) with
    the command line's ``options`` on top."""
    values = split_lists(GridConfig, read_mapping(config_file)) if config_file else {}
    values.update(options)
    if values.setdefault("experiment", experiment) != experiment:
        raise NexError(f"the config describes a {values['experiment']!r} run: use `nex-causal "
                       f"{values['experiment']}`, or change its experiment to {experiment!r}")
    out = values.pop("out", None)
    if not out:
        raise NexError("no output directory: pass --out or give 'out' in the config file")
    missing = [f for f in ("recipient", "weights", "tasks") if not values.get(f)]
    if missing:
        raise NexError(f"no {missing[0]!r} given: pass --{missing[0]} or give it in the config file")
    return from_mapping(GridConfig, values), Path(out)


def format_report(table: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The outcome table and the gap summary as plain text, for the terminal."""
    from nex_causal.run.report import gap_table

    outcomes = table[["intervention", "set_kind", "dose", "seed", "set_size", "outcome", "value"]].copy()
    outcomes["delta [95% CI]"] = table.apply(lambda r: f"{r['delta']:+.3f} [{r['delta_low']:+.3f}, "
                                                       f"{r['delta_high']:+.3f}]", axis=1)
    shown = outcomes[outcomes["set_kind"] != "random"]  # the null's sets are summarised below
    return (shown.to_string(index=False, float_format="{:.3f}".format) + "\n\n"
            + gap_table(summary).to_string(index=False, float_format="{:+.3f}".format))


def check_inputs(config: GridConfig, out: Path) -> None:
    """Everything a grid can refuse without a model, before ``out`` is claimed: the user's sets, the weights'
    model (warning where it cannot be checked), and an ``out`` that holds something but no grid."""
    from nex_causal.intervene.neuron_sets import check_user_sets, check_weights_model
    from nex_causal.resume import CLAIM_FILE, check_ours

    check_user_sets(config.sets)
    for note in check_weights_model(config.weights, config.family, [m for m in (config.recipient, config.donor) if m]):
        warnings.warn(note, stacklevel=2)
    check_ours(out, CLAIM_FILE, f"{config.experiment} grid")


def run(args: argparse.Namespace) -> None:
    from nex_causal.intervene.grid import run_grid
    from nex_causal.io import locked

    options = given_options(args, GridConfig)
    options.pop("experiment", None)
    if args.out:
        options["out"] = args.out
    config, out = command_config(args.experiment, args.config, options)
    check_inputs(config, out)
    with locked(out, f"a {config.experiment} grid"):
        table, summary = run_grid(config, out)
    print(format_report(table, summary))
    print(f"tables written to {out}/{config.experiment}.csv and {out}/summary.csv")
