"""Runs: an experiment config becomes a run directory, stage by stage, with its report.

    experiment        the experiment config and the run directory, resumable and locked
    layout            RunDir: where a run keeps its caches, weights, tables and figures
    family            FamilySpec: the family a run works on (a zoo, named models, a directory)
    stages            the runner's stages (STAGES), each one registered definition
    positive_control  the stage that measures NEX against a planted organism's ground truth
    report            report.md and the degenerate-result findings
    doctor            ``nex-causal doctor``: versions and self-checks of the stack

Names are imported on first use.
"""

from nex_causal.registry import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "ExperimentConfig": "experiment", "load_config": "experiment", "run_experiment": "experiment",
    "STAGES": "stages", "write_report": "report", "doctor_report": "doctor",
})
