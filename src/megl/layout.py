"""Where a run's files live: the one place that knows the output layout.

A run is one cell of the training grid, (dataset, backbone, variant, seed). Each kind of output
gets one folder per run, named by the run:

    data/<d>/                          the extracted dataset (manifest, images, saliency/)
    models/<d>/<b>/<v>/s<seed>/        exported best model (model.safetensors, config.json, tokenizer/)
    checkpoints/<d>/<b>/<v>/s<seed>/   per-epoch Accelerate states (not tracked)
    results/<d>/<b>/<v>/s<seed>/       predictions.parquet, cams.npy, gallery.{png,html}
    metrics/<d>/<b>/<v>/s<seed>/       train.json (training summary), test.json (test metrics,
                                       gated), val.json, efficiency.json (timings, not gated);
                                       DVC-cached outputs (summary/runs.json commits the gated ones)
    plots/<d>/<b>/<v>/s<seed>/         history.json, per_class_f1.json, confusion.json (plot data;
                                       `dvc plots show <file>`, docs/dvc.md)

dvc.yaml spells the same paths with ${item.*}; tests/test_layout.py checks that the two agree.
Paths are absolute under `root` (the params file's folder); `relative()` gives the repo-relative
form for messages. Only pathlib here: tables and the stages import this without torch.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Iterable

METRICS = "metrics"


@dataclasses.dataclass(frozen=True, order=True)
class RunKey:
    """One run of the grid. Ordered as the grid is: dataset, backbone, variant, seed."""

    dataset: str
    backbone: str
    variant: str
    seed: int

    def __post_init__(self) -> None:
        for name in ("dataset", "backbone", "variant"):
            value = getattr(self, name)
            if not value or "/" in value or value in (".", ".."):
                raise ValueError(f"run {name} must be a plain name, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"run seed must be a non-negative integer, got {self.seed!r}")

    @property
    def parts(self) -> Path:
        """`<d>/<b>/<v>/s<seed>`: the run's folder under every output kind."""
        return Path(self.dataset, self.backbone, self.variant, f"s{self.seed}")

    @property
    def name(self) -> str:
        """Readable id, e.g. `object_me/resnet18/megl/s0`."""
        return self.parts.as_posix()

    def stage(self, kind: str) -> str:
        """The DVC stage that makes this run's `kind` (train | evaluate) outputs, as dvc.yaml's matrix
        names it: `train@object_me-resnet18-megl-0`."""
        return f"{kind}@{self.dataset}-{self.backbone}-{self.variant}-{self.seed}"


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Every path of one run, absolute under the project root."""

    key: RunKey
    root: Path
    model_dir: Path
    checkpoint_dir: Path
    results_dir: Path
    metrics_dir: Path
    train_metrics: Path  # training summary: per-epoch history, best epoch (not gated)
    test_metrics: Path  # test-split metrics (gated: summary/runs.json)
    val_metrics: Path  # val-split accuracy and localisation: what model selection may read (docs/study.md)
    efficiency: Path  # parameters, latency, FPS (machine-dependent, not gated)
    plots_dir: Path
    history: Path  # per-epoch rows (the summary stage overlays them)
    per_class_f1: Path  # plot data
    confusion: Path  # plot data

    def relative(self, path: Path) -> str:
        """`path` relative to the root, POSIX separators (for messages)."""
        return path.relative_to(self.root).as_posix()


def run_layout(root: str | Path, key: RunKey) -> RunLayout:
    root = Path(root)
    metrics, plots = root / METRICS / key.parts, root / "plots" / key.parts
    return RunLayout(
        key=key,
        root=root,
        model_dir=root / "models" / key.parts,
        checkpoint_dir=root / "checkpoints" / key.parts,
        results_dir=root / "results" / key.parts,
        metrics_dir=metrics,
        train_metrics=metrics / "train.json",
        test_metrics=metrics / "test.json",
        val_metrics=metrics / "val.json",
        efficiency=metrics / "efficiency.json",
        plots_dir=plots,
        history=plots / "history.json",
        per_class_f1=plots / "per_class_f1.json",
        confusion=plots / "confusion.json",
    )


def data_dir(root: str | Path, dataset: str) -> Path:
    """An extracted dataset: manifest.parquet, classes.json, images.npy, saliency/ (extract and
    saliency stages)."""
    return Path(root) / "data" / dataset


def dataset_report(root: str | Path, dataset: str) -> Path:
    """The extraction report (Table 1 numbers) of one dataset."""
    return Path(root) / METRICS / dataset / "dataset.json"


def grid_runs(datasets: Iterable[str], backbones: Iterable[str], variants: Iterable[str], seeds: Iterable[int]) -> list[RunKey]:
    """Every run of a grid, in the given orders (dataset, then backbone, variant, seed)."""
    return [RunKey(d, b, v, s) for d, b, v, s in itertools.product(datasets, backbones, variants, seeds)]
