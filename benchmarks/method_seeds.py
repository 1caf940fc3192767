"""Does explanation guidance show on the synthetic benchmark? The Table 4 analogue over seeds.

For every dataset x backbone x variant x seed: train with the pipeline's own loop (megl.train.train,
the code the DVC stage runs) and score the test split with the evaluation's own functions (test
accuracy; mIoU of the predicted-class CAM). Prints JSON: every run, then mean / sample std per
(dataset, backbone, variant), and each variant's change against `baseline`.

Extra rows show a training parameter's effect with everything else fixed, e.g. the paper-literal
min-max KL input that made MEGL train worse than no guidance:
    --extra megl_minmax=megl:consistency_input=minmax

    .venv/bin/python benchmarks/method_seeds.py --seeds 0 1 2 --out metrics/benchmarks/method_seeds.json

Needs the extracted datasets (`make run` or `dvc repro saliency@object_me saliency@action_me`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from megl.atomic import write_json  # noqa: E402
from megl.config import load_params  # noqa: E402
from megl.data.dataset import ExplanationDataset  # noqa: E402
from megl.evaluate.localisation import localisation_metrics  # noqa: E402
from megl.evaluate.run import gt_maps_at_image_size, predict_test_split  # noqa: E402
from megl.models.load import load_exported  # noqa: E402
from megl.train import RunPaths, train  # noqa: E402


def parse_extra(spec: str) -> tuple[str, str, dict]:
    """name=variant:key=value[,key=value] -> (name, variant, train overrides)."""
    name, rest = spec.split("=", 1)
    variant, _, assignments = rest.partition(":")
    overrides = {}
    for item in filter(None, assignments.split(",")):
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    return name, variant, overrides


def scoped_params(work: Path, train_overrides: dict, tag: str) -> Path:
    """A params file in `work` (outputs go there) that reads the repository's extracted data."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["tracking"]["enabled"] = False
    raw["train"].update(train_overrides)
    path = work / f"params_{tag}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def score_test_split(model, config: dict, data_dir: Path, params, seed: int) -> dict:
    """Test accuracy and mIoU of the predicted-class CAM, with the evaluation stage's functions."""
    test = ExplanationDataset(data_dir, "test", config["grid"], seed=seed)
    pred = predict_test_split(model, test, params.train.eval_batch_size, torch.device("cpu"))
    size = test.images.shape[1]
    has, gt = gt_maps_at_image_size(data_dir, pred["rows"], size)
    loc = localisation_metrics(torch.from_numpy(pred["cams"][has]), torch.from_numpy(gt), size, params.evaluate.cam_threshold)
    return {
        "test_accuracy": round(float((pred["labels"] == pred["preds"]).mean()), 6),
        "miou": round(float(loc["miou"]), 6),
    }


def run_one(params_file: Path, dataset: str, backbone: str, variant: str, seed: int, name: str) -> dict:
    params = load_params(params_file).with_seed(seed)
    run = Path(dataset) / backbone / name / f"s{seed}"
    paths = RunPaths(params.root / "models" / run, params.root / "checkpoints" / run, params.root / "metrics" / run / "train.json")
    t0 = time.perf_counter()
    summary = train(params, dataset, backbone, variant, paths)
    model, config = load_exported(paths.model_dir)
    return {
        "dataset": dataset, "backbone": backbone, "variant": name, "seed": seed,
        **score_test_split(model, config, REPO / "data" / dataset, params, seed),
        "best_val_accuracy": summary["best_val_accuracy"], "best_epoch": summary["best_epoch"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def aggregate(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["backbone"], r["variant"]), []).append(r)
    out = []
    for (d, b, v), rs in groups.items():
        entry = {"dataset": d, "backbone": b, "variant": v, "seeds": len(rs)}
        for metric in ("test_accuracy", "miou"):
            values = [r[metric] for r in rs]
            entry[metric] = round(statistics.fmean(values), 4)
            entry[f"{metric}_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
        out.append(entry)
    base = {(e["dataset"], e["backbone"]): e for e in out if e["variant"] == "baseline"}
    for e in out:
        b = base.get((e["dataset"], e["backbone"]))
        if b is not None:
            e["accuracy_vs_baseline"] = round(e["test_accuracy"] - b["test_accuracy"], 4)
            e["miou_vs_baseline"] = round(e["miou"] - b["miou"], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+")
    parser.add_argument("--backbones", nargs="+")
    parser.add_argument("--variants", nargs="+")
    parser.add_argument("--extra", action="append", default=[], help="name=variant:train_key=value,... (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    grid = load_params(REPO / "params.yaml").grid
    datasets = args.datasets or list(grid.datasets)
    backbones = args.backbones or list(grid.backbones)
    variants = [(v, v, {}) for v in (args.variants or list(grid.variants))] + [parse_extra(e) for e in args.extra]

    rows = []
    with tempfile.TemporaryDirectory(prefix="megl-bench-") as tmp:
        work = Path(tmp)
        (work / "data").symlink_to(REPO / "data")  # train() reads <params folder>/data
        for seed in args.seeds:
            for dataset in datasets:
                for backbone in backbones:
                    for name, variant, overrides in variants:
                        params_file = scoped_params(work, overrides, name)
                        rows.append(run_one(params_file, dataset, backbone, variant, seed, name))
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"runs": rows, "summary": aggregate(rows), "torch_threads": torch.get_num_threads()}
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
