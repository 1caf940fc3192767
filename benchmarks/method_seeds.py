"""Does explanation guidance show on the synthetic benchmark? The Table 4 analogue over seeds.

For every dataset x backbone x variant x seed: train with the pipeline's own loop (megl.train.train,
the code the DVC stage runs) and score the test split with the evaluation's own functions (test
accuracy; mIoU of the predicted-class CAM; on a synthetic benchmark also the CAM's mass inside the
target's and the decoy's box on every test sample, from synthetic_truth.json). Prints JSON: every
run, then mean / sample std per (dataset, backbone, variant), and each variant's change against
`baseline`.

Extra rows show a training parameter's effect with everything else fixed, e.g. the paper-literal
min-max KL input that made MEGL train worse than no guidance:
    --extra megl_minmax=megl:consistency_input=minmax

    .venv/bin/python benchmarks/method_seeds.py --seeds 0 1 2 --out metrics/benchmarks/method_seeds.json

A probe (not a pipeline option): `probe_no_image_tokens=true` in an --extra row trains with the SDTG
prefix's full-image tokens v_I made constant (the backbone features fed to W_I zeroed), so the text
head sees the image only through I ⊙ Â; e.g. --extra text_noimg=text:probe_no_image_tokens=true.

Needs the extracted datasets (`make run` or `dvc repro saliency@object_me saliency@action_me`);
`--datasets NAME ...` for datasets added to params.yaml (e.g. a synthetic block with `geometry: varied`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from megl.atomic import write_json  # noqa: E402
from megl.config import load_params  # noqa: E402
from megl.data.dataset import ExplanationDataset  # noqa: E402
from megl.data.decoy_fmnist import SIDE as FMNIST_SIDE  # noqa: E402
from megl.data.extracted import read_manifest  # noqa: E402
from megl.evaluate.grounding import grounding_metrics, synthetic_truth, target_centres  # noqa: E402
from megl.evaluate.localisation import localisation_metrics, relevance_mass, upsample  # noqa: E402
from megl.evaluate.run import gt_maps_at_image_size, saliency_metrics, text_metrics  # noqa: E402
from megl.models.load import explainer_name, load_exported  # noqa: E402
from megl.models.multilayer_cam import MultiLayerCAM  # noqa: E402
from megl.models.sdtg import SDTGHead  # noqa: E402
from megl.layout import RunKey, data_dir, run_layout  # noqa: E402
from megl.train import train  # noqa: E402


def parse_extra(spec: str) -> tuple[str, str, dict]:
    """name=variant:key=value[,key=value] -> (name, variant, train overrides)."""
    name, rest = spec.split("=", 1)
    variant, _, assignments = rest.partition(":")
    overrides = {}
    for item in filter(None, assignments.split(",")):
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    return name, variant, overrides


@contextlib.contextmanager
def without_image_tokens(active: bool):
    """While active, SDTGHead.prefix gets zero backbone features: v_I = W_I(0), a constant."""
    if not active:
        yield
        return
    original = SDTGHead.prefix

    def prefix(self, images, cam, features):
        return original(self, images, cam, torch.zeros_like(features))

    SDTGHead.prefix = prefix
    try:
        yield
    finally:
        SDTGHead.prefix = original


def merged(base: dict, overlay: dict) -> dict:
    """base updated with overlay, nested dicts merged (as megl.dvc_overlay's experiment has them)."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


OVERLAY: dict = {}  # --overlay's blocks (e.g. configs/decoy_fmnist.yaml)


def scoped_params(work: Path, train_overrides: dict, tag: str, variant: str | None = None) -> Path:
    """A params file in `work` (outputs go there) that reads the repository's extracted data. The
    overrides also go into `variant`'s own train block, which a run lays over `train` (Params.for_run)."""
    raw = merged(yaml.safe_load((REPO / "params.yaml").read_text()), OVERLAY)
    raw["tracking"]["enabled"] = False
    raw["train"].update(train_overrides)
    own = (raw["variants"].get(variant) or {}).get("train") if variant else None
    if own is not None:
        own.update(train_overrides)
    path = work / f"params_{tag}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def box_masses(cams: np.ndarray, sample_ids: list[str], truth: dict, size: int, drawn_size: int) -> dict:
    """Mean share of each CAM (at image size, min-maxed as the evaluation does) inside the target's
    box and inside the decoy's box (per-sample truth in the drawn image's pixels; the decoy box
    only for `varied` and DecoyFMNIST)."""
    scale = size / drawn_size
    cams_up = upsample(torch.from_numpy(cams), size)
    out = {}
    for key, name in (("target_box", "target_mass"), ("decoy_box", "decoy_mass")):
        if not all(key in truth[s] for s in sample_ids):
            continue
        masks = torch.zeros_like(cams_up)
        for i, s in enumerate(sample_ids):
            x0, y0, x1, y1 = (v * scale for v in truth[s][key])
            masks[i, max(0, int(y0)) : int(np.ceil(y1)) + 1, max(0, int(x0)) : int(np.ceil(x1)) + 1] = 1
        out[name] = round(float(relevance_mass(cams_up, masks).mean()), 6)
    return out


def score_test_split(model, config: dict, data_dir: Path, params, seed: int, dataset: str) -> dict:
    """Test accuracy, mIoU of the predicted-class CAM and, on a synthetic benchmark, its mass on the
    target and on the decoy, with the evaluation stage's functions."""
    test = ExplanationDataset(data_dir, "test", config["grid"], seed=seed)
    pred = model.predict_split(test, params.train.eval_batch_size, torch.device("cpu"))
    accuracy = round(float((pred.labels == pred.preds).mean()), 6)
    if not model.has_cam:  # an MLLM baseline: classes parsed from its greedy answers, no CAM to score
        return {"test_accuracy": accuracy, "answers_without_class": pred.unparsed}
    raw_dir = params.dataset(dataset).raw_path
    size = test.images.shape[1]
    has, gt = gt_maps_at_image_size(data_dir, pred.rows, size, len(test.manifest))
    loc = localisation_metrics(torch.from_numpy(pred.cams[has]), torch.from_numpy(gt), size, params.evaluate.cam_threshold)
    scores = {
        "test_accuracy": accuracy,
        "miou": round(float(loc["miou"]), 6),
        "relevance_mass": round(float(loc["relevance_mass"]), 6),  # on the GT maps (test samples with one)
    }
    ids = read_manifest(data_dir, columns=["sample_id"])["sample_id"].to_numpy()[pred.rows].tolist()
    if model.text_head is not None:
        scores |= explanation_scores(test, pred, size, params, dataset, ids)
    found = synthetic_truth(params, dataset)
    if found is None and (raw_dir / "decoy_truth.json").is_file():  # DecoyFMNIST: the patch's box
        found = json.loads((raw_dir / "decoy_truth.json").read_text()), FMNIST_SIDE
    if found is not None:
        scores |= box_masses(pred.cams, ids, found[0], size, found[1])
    return scores


TEXT_METRICS = ("bleu_4", "meteor", "rouge_l", "cider", "grounding_cam", "grounding_cam_chance", "grounding_target",
                "grounding_named", "grounding_attributes", "grounding_attributes_named")


def explanation_scores(test, pred: dict, size: int, params, dataset: str, ids: list[str]) -> dict:
    """The evaluation stage's text metrics (pycocoevalcap, PTB-tokenised and lower-cased) and
    grounding of the greedy explanations, and two of them as written, to read."""
    generated = pred.generated
    references = {str(i): test.explanations(i) for i in range(len(test))}
    text = text_metrics(test, generated, references, params.evaluate, torch.device("cpu"), meteor=None)
    text |= grounding_metrics(generated, pred.cams, size, [test.classes[i] for i in pred.labels],
                              target_centres(params, dataset, ids))
    return {k: round(float(text[k]), 6) for k in TEXT_METRICS if text.get(k) is not None} | {"examples": generated[:2]}


def ensure_extracted(params_file: Path, dataset: str, work: Path) -> None:
    """An overlay's dataset that the repository has not extracted yet (e.g. configs/pretrained.yaml's
    112 px Object-ME): extract it and build its saliency maps with the stages' own functions, into
    the repository's data/ (where `dvc repro` would put them), reports into the work folder."""
    if (data_dir(REPO, dataset) / "manifest.parquet").is_file():
        return
    from megl.data.extract import extract_dataset
    from megl.data.saliency import build_saliency

    params = load_params(params_file)
    ds, out = params.dataset(dataset), data_dir(REPO, dataset)
    print(f"extracting {dataset} (not in data/ yet) ...", file=sys.stderr, flush=True)
    extract_dataset(dataset, ds, params.split, out, work / "reports" / dataset / "dataset.json")
    build_saliency(dataset, ds, params.saliency, out, out / "saliency", work / "reports" / dataset / "saliency.json")


def run_one(params_file: Path, dataset: str, backbone: str, variant: str, seed: int, name: str, probe: bool = False,
            explainers: tuple[str, ...] = ()) -> dict:
    params = load_params(params_file).for_run(variant, seed)
    paths = run_layout(params.root, RunKey(dataset, backbone, name, seed))
    t0 = time.perf_counter()
    with without_image_tokens(probe):
        summary = train(params, dataset, backbone, variant, paths)
    if "not_applicable" in summary:
        return {"dataset": dataset, "backbone": backbone, "variant": name, "seed": seed, "not_applicable": summary["not_applicable"]}
    model, config = load_exported(paths.model_dir)
    row = {
        "dataset": dataset, "backbone": backbone, "variant": name, "seed": seed,
        "text_head": text_head_name(config), "explainer": explainer_name(config),
        **score_test_split(model, config, data_dir(REPO, dataset), params, seed, dataset),
        "best_val_accuracy": summary["best_val_accuracy"], "best_epoch": summary["best_epoch"],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if explainers and model.has_cam:
        row["explainers"] = {e: explainer_scores(model, data_dir(REPO, dataset), params, seed, e) for e in explainers}
    return row


SALIENCY_METRICS = ("miou", "pointing_game", "relevance_mass", "deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence")


def explainer_scores(model, data_dir: Path, params, seed: int, explainer: str) -> dict:
    """The evaluation's localisation and faithfulness metrics of one trained model's test split with
    the named explainer: the model's own when it was trained with that one (its learned layer
    weights), else Grad-CAM, or the multi-layer mix with uniform weights."""
    trained = model.explainer
    if explainer == "gradcam":
        chosen = None
    elif trained is not None:
        chosen = trained
    else:
        chosen = MultiLayerCAM(min(params.train.explainer_layers, model.classifier.max_cam_depths), model.cam_eps)
    test = ExplanationDataset(data_dir, "test", model.mean_map.shape[-1], seed=seed)
    model.explainer = chosen  # what model.explain uses; None: Grad-CAM
    try:
        pred = model.predict_split(test, params.train.eval_batch_size, torch.device("cpu"), text=False)
    finally:
        model.explainer = trained
    maps = gt_maps_at_image_size(data_dir, pred.rows, test.images.shape[1], len(test.manifest))
    scores = saliency_metrics(model, test, pred, maps, params.evaluate, params.train.eval_batch_size, torch.device("cpu"))
    weights = None if chosen is None else [round(float(w), 4) for w in chosen.layer_weights()]
    return {k: round(float(scores[k]), 6) for k in SALIENCY_METRICS} | {"layer_weights": weights}


def text_head_name(config: dict) -> str | None:
    """Which text head wrote the explanations: its profile, and the LLM folder for a real one."""
    head = config.get("text_head")
    if not head or not config["variant_terms"].get("text"):
        return None
    path = head.get("llm_path")
    return f"{head.get('profile')}: {Path(path).name}" if path else head.get("profile")


def aggregate(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "not_applicable" not in r:
            groups.setdefault((r["dataset"], r["backbone"], r["variant"]), []).append(r)
    out = []
    for (d, b, v), rs in groups.items():
        entry = {"dataset": d, "backbone": b, "variant": v, "seeds": len(rs)}
        for metric in ("test_accuracy", "miou", "relevance_mass", "target_mass", "decoy_mass", *TEXT_METRICS):
            if not all(metric in r for r in rs):
                continue
            values = [r[metric] for r in rs]
            entry[metric] = round(statistics.fmean(values), 4)
            entry[f"{metric}_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
        out.append(entry)
    base = {(e["dataset"], e["backbone"]): e for e in out if e["variant"] == "baseline"}
    for e in out:
        b = base.get((e["dataset"], e["backbone"]))
        if b is not None:
            e["accuracy_vs_baseline"] = round(e["test_accuracy"] - b["test_accuracy"], 4)
            for metric in ("miou", "relevance_mass", "target_mass", "decoy_mass"):
                if metric in e and metric in b:
                    e[f"{metric}_vs_baseline"] = round(e[metric] - b[metric], 4)
    return out


def aggregate_explainers(rows: list[dict]) -> list[dict]:
    """Mean / sample std over seeds of each explainer's metrics per (dataset, backbone, variant),
    and the multi-layer mix minus Grad-CAM paired by seed."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "explainers" in r:
            groups.setdefault((r["dataset"], r["backbone"], r["variant"]), []).append(r)
    out = []
    for (d, b, v), rs in groups.items():
        for e in rs[0]["explainers"]:
            entry = {"dataset": d, "backbone": b, "variant": v, "explainer": e, "seeds": len(rs)}
            for metric in SALIENCY_METRICS:
                values = [r["explainers"][e][metric] for r in rs]
                entry[metric] = round(statistics.fmean(values), 4)
                entry[f"{metric}_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
                if e != "gradcam" and "gradcam" in rs[0]["explainers"]:
                    diffs = [r["explainers"][e][metric] - r["explainers"]["gradcam"][metric] for r in rs]
                    entry[f"{metric}_vs_gradcam"] = round(statistics.fmean(diffs), 4)
                    entry[f"{metric}_vs_gradcam_std"] = round(statistics.stdev(diffs), 4) if len(diffs) > 1 else 0.0
            out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+")
    parser.add_argument("--backbones", nargs="+")
    parser.add_argument("--variants", nargs="*", help="none: only the --extra rows")
    parser.add_argument("--extra", action="append", default=[], help="name=variant:train_key=value,... (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--explainers", nargs="*", default=[], choices=["gradcam", "multilayer"],
                        help="also score every trained model's test split with each (the multi-layer mix uniform unless trained)")
    parser.add_argument("--overlay", type=Path, action="append", default=[],
                        help="YAML blocks merged into params.yaml (e.g. configs/decoy_fmnist.yaml); repeatable, later ones win")
    args = parser.parse_args()
    for overlay in args.overlay:
        OVERLAY.update(merged(OVERLAY, yaml.safe_load(overlay.read_text())))
    grid = load_params(REPO / "params.yaml").grid
    datasets = args.datasets or list(grid.datasets)
    backbones = args.backbones or list(grid.backbones)
    variants = [(v, v, {}) for v in (grid.variants if args.variants is None else args.variants)] + [parse_extra(e) for e in args.extra]

    rows = []
    with tempfile.TemporaryDirectory(prefix="megl-bench-") as tmp:
        work = Path(tmp)
        (work / "data").symlink_to(REPO / "data")  # train() reads <params folder>/data
        (work / "weights").symlink_to(REPO / "weights")  # and an overlay's local weights (make weights)
        for seed in args.seeds:
            for dataset in datasets:
                for backbone in backbones:
                    for name, variant, overrides in variants:
                        overrides = dict(overrides)
                        probe = bool(overrides.pop("probe_no_image_tokens", False))
                        params_file = scoped_params(work, overrides, name, variant)
                        ensure_extracted(params_file, dataset, work)
                        rows.append(run_one(params_file, dataset, backbone, variant, seed, name, probe, tuple(args.explainers)))
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                        if args.out:  # the runs so far survive a stopped study
                            write_json(args.out, {"runs": rows, "summary": aggregate(rows), "explainers": aggregate_explainers(rows), "complete": False})
    result = {"runs": rows, "summary": aggregate(rows), "explainers": aggregate_explainers(rows),
              "torch_threads": torch.get_num_threads(), "complete": True}
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
