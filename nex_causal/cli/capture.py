"""``sample``, ``capture`` and ``cache rewindow``: traces by the fastest engine, caches of sparse MLP activations,
and caches of other settings derived from a token-level one."""

from __future__ import annotations

import argparse
import dataclasses

from nex_causal.capture.cluster import RayOptions
from nex_causal.capture.config import CaptureConfig, ReplayConfig, SampleConfig
from nex_causal.errors import NexError
from nex_causal.nex.config import NexConfig
from nex_causal.selectors.config import StopSettings
from nex_causal.settings import add_options, from_mapping, given_options


def add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distributed (needs the ray extra: pip install 'nex-causal[ray]')")
    g.add_argument("--ray", action="store_true", help="shard the prompts over workers of a local Ray cluster")
    g.add_argument("--ray-address", metavar="ADDR", help="shard over the Ray cluster at ADDR (e.g. ray://head:10001)")
    g.add_argument("--ray-workers", type=int, metavar="N",
                   help="Ray workers (default: one per GPU when there are GPUs, else one per CPU core)")
    g.add_argument("--ray-retries", type=int, default=RayOptions.retries, metavar="N",
                   help=f"times a shard is given to a fresh worker when its worker dies or stalls "
                   f"(default {RayOptions.retries})")
    g.add_argument("--ray-timeout", type=float, default=RayOptions.timeout, metavar="SECONDS",
                   help=f"a shard running longer than this is taken from its worker (default {RayOptions.timeout:g})")


def add_stop_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stopping early: a stop rule applied while each response is written (docs/stopping.md)")
    g.add_argument("--stop", metavar="RULE", help="nex-detour | nex-gmf | prune-agreement | prune-gmf | "
                   "prune-random | deepconf-online | deer | budget (rules reading activations need --backend bridge)")
    g.add_argument("--stop-threshold", type=float, metavar="X", help="the rule's cutoff in its own unit: exploit "
                   "tokens (nex-detour), GMF (nex-gmf), rows before pruning (prune-*), group confidence "
                   "(deepconf-online), trial-answer confidence (deer), tokens (budget)")
    g.add_argument("--stop-calibration", metavar="CACHE", help="a cache of the same model on calibration prompts "
                   "(rules reading NEX): weights and online phases come from it, rows are recorded as it was")
    add_options(g, StopSettings)
    add_options(g, NexConfig, exclude=[f.name for f in dataclasses.fields(NexConfig) if f.name not in
                                       ("rho", "min_run")])


def stop_plan_of(args: argparse.Namespace):
    """The stop plan the options name, or None without --stop."""
    if args.stop is None:
        if args.stop_threshold is not None or args.stop_calibration is not None:
            raise NexError("--stop-threshold and --stop-calibration need --stop RULE")
        return None
    if args.stop_threshold is None:
        raise NexError(f"--stop {args.stop} needs --stop-threshold (its cutoff)")
    from nex_causal.selectors.stopping import stop_plan

    return stop_plan(args.stop, args.stop_threshold, from_mapping(StopSettings, given_options(args, StopSettings)),
                     from_mapping(NexConfig, given_options(args, NexConfig)), args.stop_calibration)


def ray_options(args: argparse.Namespace) -> RayOptions | None:
    if args.ray_workers is not None and args.ray_workers < 1:
        raise NexError(f"--ray-workers must be at least 1, got {args.ray_workers}")
    if not (args.ray or args.ray_address):
        if args.ray_workers is not None:
            raise NexError("--ray-workers needs --ray or --ray-address")
        return None
    if args.ray_retries < 0 or not args.ray_timeout > 0:
        raise NexError("--ray-retries must be >= 0 and --ray-timeout > 0")
    return RayOptions(address=args.ray_address, workers=args.ray_workers, retries=args.ray_retries,
                      timeout=args.ray_timeout)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample N responses per prompt into a traces table (no activations)",
                       description="Sample N responses per prompt with the fastest backend present (Hugging "
                       "Face generate, or vLLM on a GPU) into a parquet traces table; resumable.")
    add_options(p, SampleConfig, required=("model", "tasks"))
    p.add_argument("--out", required=True, help="traces table to write (.parquet)")
    add_stop_options(p)
    add_ray_options(p)
    p.set_defaults(handler=run_sample)

    p = sub.add_parser("capture", help="responses with sparse MLP activations, sampled here or from traces",
                       description="Sample N responses per prompt and record sparse MLP activations into a "
                       "SparseCache (by replay, or stepwise with --method stepwise), or with --from-traces "
                       "replay traces made elsewhere (this project's traces, a cache's responses.parquet, or "
                       "JSONL from any engine). Resumable.")
    add_options(p, CaptureConfig, required=("model",))
    add_options(p, ReplayConfig, exclude=[f.name for f in dataclasses.fields(CaptureConfig)] + ["traces"])
    p.add_argument("--from-traces", metavar="FILE", help="replay these traces (.parquet or .jsonl) instead of "
                   "sampling; --tasks and the sampling options do not apply")
    p.add_argument("--out", required=True, help="cache directory to write")
    add_ray_options(p)
    p.set_defaults(handler=run_capture)

    cache = sub.add_parser("cache", help="derive caches of other settings from a token-level one")
    verbs = cache.add_subparsers(dest="cache_command", required=True, metavar="{rewindow}")
    rw = verbs.add_parser("rewindow", help="a coarser window and a stricter sparsifier, without the model",
                          description="From a token-level cache (captured with --window 1), write the cache a "
                          "capture with --window W and a stricter --sparsifier would have written.")
    rw.add_argument("src", metavar="SRC", help="token-level cache directory")
    rw.add_argument("--window", type=int, required=True, help="generated tokens per row")
    rw.add_argument("--sparsifier", help="a selection at most as loose as the captured one (default: it)")
    rw.add_argument("--out", required=True, help="cache directory to write")
    rw.set_defaults(handler=run_rewindow)


def run_sample(args: argparse.Namespace) -> None:
    from nex_causal.capture.sampling import sample

    out = sample(from_mapping(SampleConfig, given_options(args, SampleConfig)), args.out, ray=ray_options(args),
                 stop=stop_plan_of(args))
    import pandas as pd

    table = pd.read_parquet(out, columns=["n_tokens", "correct", "finish_reason"])
    stopped = f", {int((table['finish_reason'] == 'stop').sum())} stopped early" if args.stop else ""
    print(f"{out}: {len(table)} responses, {int(table['n_tokens'].sum())} generated tokens, "
          f"accuracy {table['correct'].mean():.3f}{stopped}")


def run_capture(args: argparse.Namespace) -> None:
    from nex_causal.capture.record import capture, capture_traces

    given = {**given_options(args, CaptureConfig), **given_options(args, ReplayConfig)}
    given.pop("traces", None)
    if args.from_traces:
        replay_fields = {f.name for f in dataclasses.fields(ReplayConfig)}
        if extra := [k for k in given if k not in replay_fields]:
            raise NexError(f"--{extra[0].replace('_', '-')} does not apply to --from-traces (the traces are "
                           "already sampled): drop it")
        cache = capture_traces(from_mapping(ReplayConfig, {**given, "traces": args.from_traces}), args.out,
                               ray=ray_options(args))
    else:
        if "tasks" not in given:
            raise NexError("capture needs --tasks (what to sample), or --from-traces FILE")
        if extra := [k for k in given if k not in {f.name for f in dataclasses.fields(CaptureConfig)}]:
            raise NexError(f"--{extra[0].replace('_', '-')} applies to --from-traces only: drop it")
        cache = capture(from_mapping(CaptureConfig, given), args.out, ray=ray_options(args))
    table = cache.responses
    labelled = table["correct"].dropna()
    accuracy = f"accuracy {labelled.astype(bool).mean():.3f}" if len(labelled) else "no targets, so no accuracy"
    print(f"{args.out}: {cache.n_responses} responses, {cache.n_rows} rows, "
          f"{int(table['n_tokens'].sum())} generated tokens, {accuracy}")


def run_rewindow(args: argparse.Namespace) -> None:
    from nex_causal.capture.rewindow import rewindow

    cache = rewindow(args.src, args.out, window=args.window, sparsifier=args.sparsifier, progress=True)
    print(f"{args.out}: {cache.n_responses} responses, {cache.n_rows} rows of {args.window} tokens")
