"""The command line the train and evaluate stages share: which run (dataset, backbone, variant,
seed) and which params file. --seed defaults to params train.seed and becomes train.seed for
the whole run, so a stage, its exported config and its tracked params agree on it. The process
computes with params compute.threads torch threads, whoever launched it (DVC, the Prefect sweep,
a shell): the thread count changes float sums, so it belongs to the run's params."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from megl.config import ConfigError, Params, load_params
from megl.layout import RunKey


def add_run_arguments(parser: argparse.ArgumentParser, seed_help: str) -> None:
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--seed", type=int, help=f"{seed_help} (default: params train.seed)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="outputs go under its folder")


def resolve_run(args: argparse.Namespace, stage: str) -> tuple[Params, RunKey]:
    """The params (train.seed set) and the run key, or exit naming the stage and the problem."""
    try:
        params = load_params(args.params)
        params.backbone(args.backbone)
        params.variant(args.variant)
        from megl.pipeline_checks import variant_problems

        own = [p for p in variant_problems(params) if p.startswith((f"variants.{args.variant}.", f"variants.{args.variant}:"))]
        if own:
            raise ConfigError("; ".join(own))
        seed = params.train.seed if args.seed is None else args.seed
        key = RunKey(args.dataset, args.backbone, args.variant, seed)
    except (ConfigError, ValueError) as exc:
        sys.exit(f"{stage}: {exc}")
    from megl.numerics import pin

    try:
        pin(params.compute.cpu_kernels, params.compute.threads)
    except RuntimeError as exc:
        sys.exit(f"{stage}: {exc}")
    # SIGTERM (kill, a cancelled Prefect task) unwinds like Ctrl-C: the MLflow run ends KILLED and
    # no half-written output replaces the previous run's
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return params.for_run(args.variant, seed), key
