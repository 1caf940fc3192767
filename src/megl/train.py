"""Train one (dataset, backbone, variant): an explicit Accelerate loop, read top to bottom.

Single CPU: `python stages/train.py ...`. Several processes / GPUs, with or without DeepSpeed:
`accelerate launch --config_file configs/accelerate/<name>.yaml stages/train.py ...`.
Every epoch ends with a checkpoint (Accelerate `save_state`) so `--resume` continues where a
killed run stopped and reaches the same final weights. The best epoch by validation accuracy is
exported (safetensors plus the resolved config) into the checkpoint folder, and the run's outputs
(model folder, training summary, history) replace the previous run's only when the run has
finished: a failed or killed run leaves the previous outputs as they were.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Sampler

from megl.atomic import atomic_dir, write_json
from megl.model_card import model_card
from megl.config import Params
from megl.data.dataset import ExplanationDataset, collate
from megl import methods
from megl.layout import RunLayout, data_dir
from megl.methods.applicability import not_applicable
from megl.models.build import build_model
from megl.progress import phase, progress
from megl.tracking import (MODEL_DIGEST_TAG, DatasetSplits, model_digest, registered_model_name, run_name, run_tags,
                           start_run)

StepLogger = Callable[[int, dict[str, float]], None]


class EpochShuffle(Sampler[int]):
    """A permutation per epoch from (seed, epoch) alone, so a resumed run sees the same order."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def make_accelerator(grad_accum: int) -> Accelerator:
    kwargs = []
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false") == "true" and not torch.cuda.is_available():
        # Without an explicit gloo group every CPU rank believes it is alone and trains on the
        # whole dataset, silently (docs/reference.md).
        kwargs.append(InitProcessGroupKwargs(backend="gloo"))
    return Accelerator(gradient_accumulation_steps=grad_accum, kwargs_handlers=kwargs)


def evaluate_accuracy(accelerator: Accelerator, model, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            pred = accelerator.unwrap_model(model).predict_batch(batch)
            pred, label = accelerator.gather_for_metrics((pred, batch["label"]))
            correct += int((pred == label).sum())
            total += len(label)
    model.train()
    return correct / total


def train(
    params: Params,
    dataset: str,
    backbone: str,
    variant: str,
    paths: RunLayout,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    log_step: StepLogger | None = None,
) -> dict:
    """Train and export into the run's folders (megl.layout); returns the run summary (also written to paths.train_metrics)."""
    cfg = params.train
    reason = not_applicable(params, backbone, variant)  # the method's registry entry says where it applies
    if reason is not None:
        return publish_not_applicable(params, dataset, backbone, variant, paths, reason)
    set_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    accelerator = make_accelerator(cfg.grad_accum)

    # --- data -----------------------------------------------------------------------------------
    grid = params.backbone(backbone).grid
    train_set = ExplanationDataset(data_dir(params.root, dataset), "train", grid, seed=cfg.seed)
    val_set = ExplanationDataset(data_dir(params.root, dataset), "val", grid, seed=cfg.seed)
    texts = sorted({t for i in range(len(train_set)) for t in train_set.explanations(i)})
    train_loader = DataLoader(
        train_set, batch_size=cfg.batch_size, sampler=EpochShuffle(len(train_set), cfg.seed), collate_fn=collate, drop_last=True
    )
    val_loader = DataLoader(val_set, batch_size=cfg.eval_batch_size, collate_fn=collate)

    # --- model and optimiser ------------------------------------------------------------------
    with phase(f"train {dataset}/{backbone}/{variant}/s{cfg.seed}: building the model", enabled=accelerator.is_main_process):
        model = build_model(params, train_set, backbone, variant, texts)
    optimizer = torch.optim.AdamW(model.param_groups(cfg.lr, cfg.text_lr), weight_decay=cfg.weight_decay)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    core = accelerator.unwrap_model(model)
    state = {"epoch": -1, "history": [], "best_epoch": -1, "best_val_accuracy": -1.0, "step": 0,
             "samples_per_rank": [0] * accelerator.num_processes, "mlflow_run_id": None}
    latest, best_dir = paths.checkpoint_dir / "latest", paths.checkpoint_dir / "best"
    resuming = resume and (latest / "progress.json").is_file()
    if resuming:
        state |= json.loads((latest / "progress.json").read_text())
    with start_run(
        params.tracking.enabled and accelerator.is_main_process, params.root,
        params.tracking.experiment, run_name(dataset, backbone, variant, cfg.seed),
        {"backbone": dataclasses.asdict(params.backbone(backbone)), "variant": dataclasses.asdict(params.variant(variant)),
         "train": dataclasses.asdict(cfg), "text_head": dataclasses.asdict(params.text_head), "compute": dataclasses.asdict(params.compute),
         "world_size": accelerator.num_processes},
        run_tags(dataset, backbone, variant, cfg.seed), resume_run_id=state["mlflow_run_id"],
    ) as tracker:

        # --- resume ---------------------------------------------------------------------------------
        if resuming:
            accelerator.load_state(str(latest))
            accelerator.print(f"resumed after epoch {state['epoch']}")
        elif paths.checkpoint_dir.exists() and accelerator.is_main_process:
            shutil.rmtree(paths.checkpoint_dir)  # a fresh run must not mix with an old one's states
        state["mlflow_run_id"] = tracker.run_id
        tracker.log_datasets(DatasetSplits(params.root, dataset, {"train": "train", "val": "validation"}))

        # --- the loop -------------------------------------------------------------------------------
        model.train()
        # samples this rank trained on, over the whole run (a resumed run goes on counting): proves
        # the data is sharded across processes
        seen = state["samples_per_rank"][accelerator.process_index]
        for epoch in range(state["epoch"] + 1, cfg.epochs):
            # through the prepared loader: Accelerate otherwise sets the sampler's epoch from its own
            # iteration count, which restarts at 0 after a resume and would replay epoch 0's order
            train_loader.set_epoch(epoch)
            train_set.set_epoch(epoch)
            sums: dict[str, float] = {}
            batches = 0
            epoch_desc = f"train {dataset}/{backbone}/{variant}/s{cfg.seed}: epoch {epoch + 1}/{cfg.epochs}"
            for step, batch in enumerate(progress(train_loader, len(train_loader), epoch_desc, enabled=accelerator.is_main_process)):
                with accelerator.accumulate(model):
                    out = model(batch)
                    for name, value in out.terms.items():
                        if not torch.isfinite(value):
                            raise FloatingPointError(
                                f"{dataset}/{backbone}/{variant}: loss term '{name}' is {value.item()} "
                                f"at epoch {epoch}, step {step} (global step {state['step']})"
                            )
                    accelerator.backward(out.loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                values = {k: float(v.detach()) for k, v in out.terms.items()} | {"loss": float(out.loss.detach())}
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                batches += 1
                seen += len(batch["label"])
                state["step"] += 1
                if accelerator.is_main_process:
                    tracker.log_step(state["step"], values)
                    if log_step is not None:
                        log_step(state["step"], values)
                if max_steps is not None and state["step"] >= max_steps:
                    break

            val_accuracy = evaluate_accuracy(accelerator, model, val_loader)
            state["history"].append(
                {"epoch": epoch, "val_accuracy": round(val_accuracy, 6)} | {f"train_{k}": round(v / max(1, batches), 6) for k, v in sums.items()}
            )
            accelerator.print(json.dumps(state["history"][-1]))
            tracker.log_epoch(epoch, {k: v for k, v in state["history"][-1].items() if k != "epoch"})
            improved = val_accuracy > state["best_val_accuracy"]
            if improved:
                state["best_val_accuracy"], state["best_epoch"] = val_accuracy, epoch
            # train.checkpoint: the best val epoch's model, or the last epoch's (a fixed schedule)
            if improved if cfg.checkpoint == "best_val" else epoch == cfg.epochs - 1 or _stopping(state, max_steps):
                state["exported_epoch"] = epoch
                if accelerator.is_main_process:
                    export(core, params, dataset, backbone, variant, train_set.classes, epoch, best_dir)
            state["epoch"] = epoch
            state["samples_per_rank"] = accelerator.gather(torch.tensor([seen], device=accelerator.device)).tolist()
            save_checkpoint(accelerator, paths.checkpoint_dir, state)
            if max_steps is not None and state["step"] >= max_steps:
                break

        summary = {
            "dataset": dataset, "backbone": backbone, "variant": variant, "seed": cfg.seed,
            "best_epoch": state["best_epoch"], "best_val_accuracy": round(state["best_val_accuracy"], 6),
            "checkpoint": cfg.checkpoint, "exported_epoch": state.get("exported_epoch", state["best_epoch"]),
            "epochs": len(state["history"]), "steps": state["step"], "history": state["history"],
            "world_size": accelerator.num_processes, "samples_per_rank": state["samples_per_rank"],
        }
        if accelerator.is_main_process:
            # the run has finished: its outputs replace the previous run's, the model folder first
            publish(best_dir, paths.model_dir)
            write_json(paths.train_metrics, summary)
            write_json(paths.history, state["history"])
            if params.tracking.enabled:
                # evaluation finds this run by the model's digest (the folder holds no run id)
                digest = model_digest(paths.model_dir)
                tracker.set_tags({MODEL_DIGEST_TAG: digest})
                core.load_weights(load_file(paths.model_dir / "model.safetensors"))
                image, table = core.gallery(val_set, params.tracking.gallery_samples, accelerator.device)
                if image is not None:
                    tracker.log_image(image, "cam_gallery.png")
                tracker.log_table(table, "explanations.json")
                version_tags = run_tags(dataset, backbone, variant, cfg.seed) | {MODEL_DIGEST_TAG: digest}
                track_model(tracker, core, paths.model_dir, val_set, version_tags)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def track_model(tracker, core, model_dir: Path, val_set: ExplanationDataset, tags: dict[str, str]) -> None:
    """A model with a saliency map: an MLflow model, registered (megl.models.mlflow_model), its input
    example the first validation image. An MLLM baseline (no map to serve): its folder as artifacts."""
    if not core.has_cam:
        tracker.log_artifacts(model_dir, "model")
        return
    example = np.asarray(val_set.images[val_set.rows[:1]])
    tracker.log_model(model_dir, example, registered_model_name(tags["dataset"], tags["backbone"], tags["variant"]), tags)


def publish_not_applicable(params: Params, dataset, backbone, variant, paths: RunLayout, reason: str) -> dict:
    """A run the grid names but the method cannot do: its outputs say so instead of a number."""
    fields = {"dataset": dataset, "backbone": backbone, "variant": variant, "seed": params.train.seed}
    with atomic_dir(paths.model_dir) as tmp:
        write_json(tmp / "config.json", fields | {"not_applicable": reason, "train": dataclasses.asdict(params.train)})
    summary = fields | {"not_applicable": reason, "history": []}
    write_json(paths.train_metrics, summary)
    write_json(paths.history, [])
    print(f"train: {dataset}/{backbone}/{variant}: n/a: {reason}")
    return summary


def _stopping(state: dict, max_steps: int | None) -> bool:
    """A smoke run (--max-steps) ends after this epoch: its last epoch is this one."""
    return max_steps is not None and state["step"] >= max_steps


def save_checkpoint(accelerator: Accelerator, folder: Path, state: dict) -> None:
    """Accelerate state + our progress, swapped in as `latest` only once complete."""
    tmp = folder / "incoming"
    accelerator.save_state(str(tmp))
    # every rank writes its own files (RNG state, its optimizer shard) into tmp: none may still be
    # writing when the main process moves it
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / "progress.json", state)
        old = folder / "previous"
        shutil.rmtree(old, ignore_errors=True)
        if (folder / "latest").exists():
            os.replace(folder / "latest", old)
        os.replace(tmp, folder / "latest")
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def publish(best: Path, model_dir: Path) -> None:
    """The best export, swapped in for the model folder in one rename. Nothing run-specific goes
    in (no MLflow run id): the same params give the same bytes, which DVC's cache relies on."""
    with atomic_dir(model_dir) as tmp:
        shutil.copytree(best, tmp, dirs_exist_ok=True)


def export(core, params: Params, dataset, backbone, variant, classes, epoch, out: Path) -> None:
    """model.safetensors (the model contract's export_weights), config.json, README.md (its model card,
    megl.model_card) (+ tokenizer/)."""
    config = {
        "dataset": dataset, "backbone": backbone, "variant": variant, "classes": classes, "best_epoch": epoch,
        "backbone_params": dataclasses.asdict(params.backbone(backbone)),
        "variant_terms": dataclasses.asdict(params.variant(variant)),
        "train": dataclasses.asdict(params.train), "text_head": dataclasses.asdict(params.text_head),
        "grid": params.backbone(backbone).grid, "image_size": getattr(core, "image_size", None),
        # read by the evaluate stage before anything heavy is imported (it starts METEOR's JVM early)
        "writes_explanations": methods.get(params.variant(variant).method).writes_explanations(params.variant(variant)),
    }
    with atomic_dir(out) as tmp:
        save_file(core.export_weights(), str(tmp / "model.safetensors"))
        write_json(tmp / "config.json", config)
        (tmp / "README.md").write_text(model_card(config))
        if core.tokenizer is not None:
            core.tokenizer.save_pretrained(str(tmp / "tokenizer"))
