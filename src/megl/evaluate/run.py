"""Evaluate one trained model on the test split: every number of the paper's Tables 2, 3 and 5,
plus localisation extras and faithfulness (MMEL / REX seeds).

Outputs (paths chosen by the stage):
  metrics JSON      flat name -> value, deterministic (the regression gate reads it)
  efficiency JSON   parameters, latency, FPS (machine-dependent, kept apart)
  per-class F1 and confusion JSON   lists for DVC plots
  results dir       predictions.parquet, cams.npy, gallery.png, gallery.html
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from megl.atomic import atomic_dir, write_json
from megl.config import EvaluateConfig, Params
from megl.data.dataset import ExplanationDataset, collate
from megl.data.extracted import Saliency
from megl.evaluate.classification import NO_CLASS, classification_metrics
from megl.evaluate.efficiency import efficiency_metrics
from megl.evaluate.faithfulness import faithfulness_metrics
from megl.evaluate.grounding import grounding_metrics, target_centres
from megl.evaluate.localisation import localisation_metrics, upsample
from megl.layout import RunLayout, data_dir
from megl.models.contract import Predictions
from megl.models.load import load_exported
from megl.progress import phase
from megl.visualize import overlay_grid


def _round(metrics: dict) -> dict:
    """Fixed precision, so the same predictions always serialise to the same bytes."""
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}


def saliency_metrics(model, test_set: ExplanationDataset, pred: Predictions, gt_maps: tuple[np.ndarray, np.ndarray],
                     cfg: EvaluateConfig, batch_size: int, device) -> dict:
    """The maps in pred (the model's predict_split) against the GT maps where a sample has one
    (localisation), and faithfulness on a fixed prefix of the test split (cost grows with steps x
    samples)."""
    size = test_set.images.shape[1]
    has, gt = gt_maps
    metrics = localisation_metrics(torch.from_numpy(pred.cams[has]), torch.from_numpy(gt), size, cfg.cam_threshold)
    n = min(cfg.faithfulness_samples, len(test_set))
    images = torch.stack([test_set[i]["pixels"] for i in range(n)]).to(device)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.classifier(x).logits.softmax(1)

    saliency = upsample(torch.from_numpy(pred.cams[:n]).to(device), size)
    return metrics | faithfulness_metrics(predict, images, saliency, torch.from_numpy(pred.preds[:n]).to(device),
                                          steps=cfg.faithfulness_steps, batch_size=batch_size)


def gt_maps_at_image_size(data_dir: Path, rows: np.ndarray, size: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask of rows with a GT map, their maps at image size), checked (megl.data.extracted)."""
    return Saliency(data_dir, size, n_rows, need_mean=False).maps_for(rows)


def evaluate(params: Params, dataset: str, backbone: str, variant: str, paths: RunLayout, meteor=None) -> dict:
    """`meteor`: a scorer from megl.evaluate.text.start_meteor(), started by the caller before its
    imports so that its JVM loads on the otherwise idle core (else one starts here); closed here."""
    try:
        reason = _not_applicable(paths.model_dir)
        if reason is not None:
            return publish_not_applicable(params, dataset, backbone, variant, paths, reason)
        torch.manual_seed(params.train.seed)
        torch.use_deterministic_algorithms(True)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, config = load_exported(paths.model_dir)
        model.to(device)
        writes_text = writes_explanations(config)
        if not writes_text and meteor is not None:
            meteor.close()
            meteor = None
        elif writes_text and meteor is None:
            from megl.evaluate.text import start_meteor

            meteor = start_meteor()  # its JVM loads while the test split is predicted
        return score(params, dataset, backbone, variant, paths, model, config, device, meteor)
    finally:
        if meteor is not None:
            meteor.close()


def writes_explanations(config: dict) -> bool:
    """Whether an exported model generates explanations (its method's registry entry said so at export)."""
    return bool(config.get("writes_explanations"))


def _not_applicable(model_dir: Path) -> str | None:
    config = model_dir / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("not_applicable")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None  # load_exported reports the damaged file


def publish_not_applicable(params: Params, dataset, backbone, variant, paths: RunLayout, reason: str) -> dict:
    """The run the grid names but the method cannot do (megl.methods.applicability): every output
    exists and says n/a, so DVC, the tables and the gate see a run without numbers, not a gap."""
    fields = {"dataset": dataset, "backbone": backbone, "variant": variant, "seed": params.train.seed, "not_applicable": reason}
    write_json(paths.test_metrics, fields)
    write_json(paths.val_metrics, fields)
    write_json(paths.efficiency, fields)
    write_json(paths.per_class_f1, [])
    write_json(paths.confusion, [])
    with atomic_dir(paths.results_dir) as tmp:
        (tmp / "NOT_APPLICABLE.txt").write_text(reason + "\n")
    return fields


def score(params: Params, dataset, backbone, variant, paths: RunLayout, model, config, device, meteor) -> dict:
    """Every metric the model allows (megl.models.contract): classification always; localisation and
    faithfulness with a saliency map; text metrics and grounding when it writes explanations. A
    metric the model cannot have is absent (the tables show n/a), never made up."""
    cfg: EvaluateConfig = params.evaluate
    folder = data_dir(params.root, dataset)
    test_set = ExplanationDataset(folder, "test", config["grid"], seed=params.train.seed)
    size = test_set.images.shape[1]

    run = f"evaluate {dataset}/{backbone}/{variant}/s{params.train.seed}"
    with phase(f"{run}: test split predictions ({len(test_set)} images)"):
        pred = model.predict_split(test_set, params.train.eval_batch_size, device)
    run_fields = {"dataset": dataset, "backbone": backbone, "variant": variant, "seed": params.train.seed}
    metrics = dict(run_fields) | model.describe(config, len(test_set.classes))
    flat, f1_rows, confusion = classification_metrics(pred.labels, pred.preds, test_set.classes)
    metrics |= flat
    if pred.unparsed is not None:
        metrics["answers_without_class"] = pred.unparsed

    has = gt = None
    if model.has_cam:
        has, gt = gt_maps_at_image_size(folder, pred.rows, size, len(test_set.manifest))
        with phase(f"{run}: localisation and faithfulness ({cfg.faithfulness_samples} faithfulness samples)"):
            metrics |= saliency_metrics(model, test_set, pred, (has, gt), cfg, params.train.eval_batch_size, device)

    references = {str(i): test_set.explanations(i) for i in range(len(test_set))}
    if pred.generated is not None:
        with phase(f"{run}: text metrics ({len(pred.generated)} explanations)"):
            metrics |= text_metrics(test_set, pred.generated, references, cfg, device, meteor, lower_hypotheses=model.lower_hypotheses)
        ids = test_set.manifest["sample_id"].to_numpy()[pred.rows].tolist()
        metrics |= grounding_metrics(pred.generated, pred.cams, size, [test_set.classes[i] for i in pred.labels],
                                     target_centres(params, dataset, ids))

    metrics = _round(metrics)
    with phase(f"{run}: validation split"):
        val = _round(run_fields | validation_metrics(model, folder, config["grid"], params, device, size))
    with phase(f"{run}: efficiency ({cfg.efficiency_iters} timed calls)"):
        efficiency = efficiency_metrics(model, _on(collate([test_set[0]]), device), warmup=cfg.efficiency_warmup,
                                        iters=cfg.efficiency_iters)
    # everything is computed: only now do this run's outputs replace the previous run's
    write_json(paths.test_metrics, metrics)
    write_json(paths.val_metrics, val)
    write_json(paths.per_class_f1, f1_rows)
    write_json(paths.confusion, confusion)
    write_json(paths.efficiency, run_fields | efficiency)
    write_results(paths.results_dir, test_set, pred, references, has, gt, cfg.gallery_samples)
    log_to_run(params, dataset, backbone, variant, metrics, efficiency, paths)
    return metrics


def validation_metrics(model, folder: Path, grid: int, params: Params, device, size: int) -> dict:
    """What model selection may read (megl.study.selection): accuracy and macro-F1 on the val split,
    and, with a saliency map, its localisation against the val split's GT maps (annotations are
    training-time data). Nothing of the test split."""
    val_set = ExplanationDataset(folder, "val", grid, seed=params.train.seed)
    pred = model.predict_split(val_set, params.train.eval_batch_size, device)
    flat, _, _ = classification_metrics(pred.labels, pred.preds, val_set.classes)
    out = {"split": "val", "accuracy": flat["accuracy"], "f1": flat["f1"], "chance_accuracy": flat["chance_accuracy"],
           "val_samples": len(val_set)}
    if model.has_cam and pred.cams is not None:
        has, gt = gt_maps_at_image_size(folder, pred.rows, size, len(val_set.manifest))
        if has.any():
            loc = localisation_metrics(torch.from_numpy(pred.cams[has]), torch.from_numpy(gt), size,
                                       params.evaluate.cam_threshold)
            out |= {"miou": loc["miou"], "val_maps": int(has.sum())}
    return out


def _on(batch: dict, device) -> dict:
    return batch | {"pixels": batch["pixels"].to(device)}


def text_metrics(test_set, generated: list[str], references: dict[str, list[str]], cfg: EvaluateConfig, device, meteor,
                 lower_hypotheses: bool = False) -> dict:
    """Table 3's metrics of generated explanations against every reference, lower-cased (the tiny
    tokenizers lower-case what they write), and CLIPScore of the generations as written."""
    from megl.evaluate.text import score_explanations

    hypotheses = {str(i): g.lower() if lower_hypotheses else g for i, g in enumerate(generated)}
    refs_lower = {k: [r.lower() for r in v] for k, v in references.items()}
    text = score_explanations(hypotheses, refs_lower, timeout_s=cfg.java_timeout_s, spice=cfg.spice, meteor=meteor)
    metrics = {k: v for k, v in text.items() if not k.startswith("seconds_") and k != "jvm_starts"}
    return metrics | clipscore(test_set, generated, cfg, device)


def clipscore(test_set, generated: list[str], cfg: EvaluateConfig, device) -> dict:
    """CLIPScore (Hessel et al. 2021) with the CLIP in evaluate.clipscore_clip_path. Without local
    CLIP weights it cannot be computed for real (no package ships CLIP, nothing is downloaded):
    `clipscore` is then null and `clipscore_status` says why."""
    if not cfg.clipscore_clip_path:
        return {"clipscore": None, "clipscore_status": "unavailable: no local CLIP weights (evaluate.clipscore_clip_path)"}
    from transformers import CLIPModel, CLIPTokenizerFast

    from megl.evaluate.text import clip_scores

    clip = CLIPModel.from_pretrained(cfg.clipscore_clip_path, local_files_only=True).to(device).eval()
    tokenizer = CLIPTokenizerFast.from_pretrained(cfg.clipscore_clip_path, local_files_only=True)
    pixels = torch.stack([test_set[i]["pixels"] for i in range(len(test_set))])
    scores = []
    for start in range(0, len(pixels), 128):
        scores += clip_scores(clip, tokenizer, pixels[start : start + 128].to(device), generated[start : start + 128])
    return {"clipscore": float(np.mean(scores)), "clipscore_status": f"ok: {Path(cfg.clipscore_clip_path).name}"}


def write_results(out: Path, test_set, pred: Predictions, references, has, gt, n_gallery: int) -> None:
    """predictions.parquet; with a saliency map also cams.npy and the gallery (PNG and HTML)."""
    rows = pred.rows
    frame = pd.DataFrame({
        "sample_id": test_set.manifest["sample_id"].to_numpy()[rows],
        "label": [test_set.classes[i] for i in pred.labels],
        "predicted": [test_set.classes[i] if i >= 0 else NO_CLASS for i in pred.preds],
        "generated": pred.generated or [None] * len(rows),
        "references": [references[str(i)] for i in range(len(rows))],
    })
    if pred.cams is None:
        with atomic_dir(out) as tmp:
            frame.to_parquet(tmp / "predictions.parquet", index=False)
        return
    frame["has_visual"] = has
    pick = list(np.flatnonzero(has)[:n_gallery])
    images = np.stack([np.asarray(test_set.images[r]) for r in rows[pick]]) if pick else None
    with atomic_dir(out) as tmp:
        frame.to_parquet(tmp / "predictions.parquet", index=False)
        np.save(tmp / "cams.npy", pred.cams.astype(np.float32))
        if pick:
            gt_by_row = dict(zip(np.flatnonzero(has), gt))
            gt_grid = np.stack([np.asarray(Image.fromarray(gt_by_row[i]).resize(pred.cams.shape[1:][::-1], Image.Resampling.BOX)) for i in pick])
            shown = frame.iloc[pick]
            grid = overlay_grid(images, pred.cams[pick], gt_grid, np.ones(len(pick), bool),
                                list(shown["label"]), list(shown["predicted"]))
            Image.fromarray(grid).save(tmp / "gallery.png")
            _gallery_html(tmp / "gallery.html", grid, frame.iloc[pick])


def _gallery_html(path: Path, grid: np.ndarray, rows: pd.DataFrame) -> None:
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    img = base64.b64encode(buf.getvalue()).decode()
    items = "".join(
        f"<tr><td>{html.escape(r.sample_id)}</td><td>{html.escape(r.label)}</td><td>{html.escape(r.predicted)}</td>"
        f"<td>{html.escape(r.generated or '')}</td><td>{html.escape(' | '.join(r.references))}</td></tr>"
        for r in rows.itertuples()
    )
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>megl gallery</title>"
        "<p>One row per test sample with a ground-truth map; columns: the image, the CAM of the predicted "
        "class, the ground-truth map (red: salient). The table below lists the same samples in the same order.</p>"
        f"<img src='data:image/png;base64,{img}'><table border=1><tr><th>sample</th><th>label</th>"
        f"<th>predicted</th><th>generated</th><th>references</th></tr>{items}</table>\n"
    )


# how a run was evaluated, not how well: MLflow params of its run, not metrics
EVALUATION_FACTS = ("batch_size", "threads", "num_classes", "device", "dtype", "cpu", "cpu_kernels", "parameters_classifier",
                    "parameters_total", "backbone_profile", "backbone_pretrained", "explainer", "text_head_profile")


def log_to_run(params: Params, dataset, backbone, variant, metrics: dict, efficiency: dict, paths: RunLayout) -> None:
    """Add the test metrics, the gallery and the splits read (validation, test) to the MLflow run
    that trained this model (the run tagged with the model folder's digest), or to a run of their
    own when that run is not in this store."""
    if not params.tracking.enabled:
        return
    from megl.tracking import DatasetSplits, log_to_training_run, model_digest, run_name, run_tags

    everything = metrics | efficiency
    numbers = {
        f"test/{k}": float(v) for k, v in everything.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in EVALUATION_FACTS and k != "seed"  # seed: a tag
    }
    facts = {f"evaluate.{k}": str(everything[k]) for k in EVALUATION_FACTS if everything.get(k) is not None}
    seed = params.train.seed
    run_id, found = log_to_training_run(
        params.root, params.tracking.experiment, run_name(dataset, backbone, variant, seed),
        run_tags(dataset, backbone, variant, seed), model_digest(paths.model_dir), numbers, paths.results_dir, "evaluation",
        facts, DatasetSplits(params.root, dataset, {"val": "validation", "test": "test"}),
    )
    if not found:
        print(f"evaluate: no run in this MLflow store exported this model (trained with tracking off, or with "
              f"another store); evaluation logged to a run of its own, {run_id}")

