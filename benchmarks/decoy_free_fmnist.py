"""What does DecoyFMNIST's shortcut cost the tiny ResNet? The decoy-free control of study fair-1.

fair-1's prediction (2) says the plain backbone scores "well below its clean accuracy on
DecoyFMNIST"; the study itself never measures that clean accuracy. This control does, the way the
synthetic benchmarks' control did (`decoy_agreement: 0.0`): the same data with the train patch's grey
drawn as on test (a random class's code), so the patch no longer names the label on train.

- Data: `megl.data.decoy_fmnist.write_generic` with `decoys.decoy_fmnist`'s block of
  configs/study.yaml. The control set is written by the same function with one change: after the
  published decoy is drawn (so the generator's stream, every patch's corner, the train subset, the
  maps and the *test split* stay byte for byte those of the decoyed set), each train patch is
  repainted with the grey of a class drawn from its own generator. Both sets are scored on the
  same 10,000 test images.
- Training: the pipeline's loop (benchmarks/method_seeds.py's `run_one`: megl.train.train and the
  evaluation's functions) with configs/study.yaml over params.yaml (10 epochs, the last epoch's
  model), the plain backbone at the learning rate fair-1 selected for it on DecoyFMNIST, seeds 1-5
  (fair-1's final seeds), on the decoyed and on the control set: paired by seed.

Prints JSON: every run, each set's mean test accuracy with its 95 % t interval, and control −
decoyed paired by seed with its interval.

    nice -n 19 .venv/bin/python benchmarks/decoy_free_fmnist.py --threads 1 --out benchmarks/results/decoy_free_fmnist.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import method_seeds  # noqa: E402
from megl.atomic import write_json  # noqa: E402
from megl.config import load_params  # noqa: E402
from megl.data import decoy_fmnist  # noqa: E402
from megl.study.stats import mean_ci, paired_ci  # noqa: E402

STUDY = REPO / "configs" / "study.yaml"
DECOYED, CONTROL = "decoy_fmnist", "decoy_fmnist_free"


def random_train_patch(seed: int):
    """add_decoy as published, then on train each patch repainted with a random class's grey."""
    published = decoy_fmnist.add_decoy
    repaint = np.random.default_rng([seed, 2])

    def add(images, labels, rng, *, train):
        out, masks = published(images, labels, rng, train=train)
        if train:
            classes = repaint.integers(0, decoy_fmnist.N_CLASSES, size=len(labels))
            out[masks] = np.repeat(decoy_fmnist.patch_grey(classes), decoy_fmnist.PATCH ** 2)
        return out, masks

    return add


def write_sets(block: dict) -> dict:
    """Both raw sets under the repository's data/raw (skipped when there), and their summaries."""
    source, seed = Path(block["source_dir"]), block["seed"]
    args = (seed, block["visual_fraction"], block["train_samples"])
    summaries = {}
    for name, out in ((DECOYED, REPO / block["out_dir"]), (CONTROL, REPO / "data" / "raw" / CONTROL)):
        if (out / "manifest.jsonl").is_file():
            continue
        print(f"writing {out} ...", file=sys.stderr, flush=True)
        if name == CONTROL:
            with mock.patch.object(decoy_fmnist, "add_decoy", random_train_patch(seed)):
                summaries[name] = decoy_fmnist.write_generic(source, out, *args)
        else:
            summaries[name] = decoy_fmnist.write_generic(source, out, *args)
    return summaries


def selected_lr() -> float:
    chosen = json.loads((REPO / "studies" / "fair-1" / "selection.json").read_text())
    return chosen[DECOYED]["resnet18"]["baseline"]["hyperparameters"]["train.lr"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--lr", type=float, help="default: what fair-1 selected for the plain backbone on DecoyFMNIST")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    study = yaml.safe_load(STUDY.read_text())
    block = study["decoys"][DECOYED]
    lr = args.lr or selected_lr()
    control = dict(study["datasets"][DECOYED], raw_dir=f"data/raw/{CONTROL}")
    method_seeds.OVERLAY.update(method_seeds.merged({k: v for k, v in study.items() if k != "study"},
                                                    {"datasets": {CONTROL: control}}))
    summaries = write_sets(block)
    rows = []
    with tempfile.TemporaryDirectory(prefix="megl-bench-") as tmp:
        work = Path(tmp)
        (work / "data").symlink_to(REPO / "data")
        # also into params.yaml's baseline block, whose own train.lr (the default grid's) would win
        params_file = method_seeds.scoped_params(work, {"lr": lr}, "baseline", "baseline")
        assert load_params(params_file).for_run("baseline", 0).train.lr == lr
        for seed in args.seeds:
            for dataset in (DECOYED, CONTROL):
                method_seeds.ensure_extracted(params_file, dataset, work)
                rows.append(method_seeds.run_one(params_file, dataset, "resnet18", "baseline", seed, "baseline"))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                if args.out:
                    write_json(args.out, {"lr": lr, "runs": rows, "complete": False})
    accuracy = {d: {r["seed"]: r["test_accuracy"] for r in rows if r["dataset"] == d} for d in (DECOYED, CONTROL)}
    result = {
        "lr": lr, "seeds": args.seeds, "torch_threads": torch.get_num_threads(), "written": summaries, "runs": rows,
        "test_accuracy": {d: vars(mean_ci(list(v.values()))) for d, v in accuracy.items()},
        "control_minus_decoyed": vars(paired_ci(accuracy[CONTROL], accuracy[DECOYED])),
        "complete": True,
    }
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
