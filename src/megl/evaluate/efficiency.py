"""Paper Table 5: parameters, latency and FPS at batch size 1 after warm-up.

Two measurements: classification only (as the paper measures, no post-processing or decoding) and
with the explanation (Grad-CAM of the predicted class + the textual explanation when the model has
a text head). Timings are machine-dependent, so they go to their own file, apart from the
deterministic metrics.
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import torch

from megl.numerics import describe


def median_seconds(fn, warmup: int, iters: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_name() -> str:
    """The CPU's model name: float kernels (and so a model trained from scratch) differ between CPUs."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def efficiency_metrics(model, image: torch.Tensor, *, warmup: int, iters: int) -> dict:
    """image: (1, 3, H, W) on the model's device."""
    device = image.device
    classifier = model.classifier

    def classify():
        with torch.no_grad():
            classifier(image)

    def classify_and_explain():
        logits, cam, features = model.explain(image)
        if model.text_head is not None:
            model.text_head.generate(image, cam, features)

    cls_s = median_seconds(classify, warmup, iters, device)
    full_s = median_seconds(classify_and_explain, warmup, iters, device)
    params = sum(p.numel() for p in classifier.parameters())
    total = params + (sum(p.numel() for p in model.text_head.parameters()) if model.text_head is not None else 0)
    return {
        "parameters_classifier": params,
        "parameters_total": total,
        "latency_ms": round(cls_s * 1000, 3),
        "fps": round(1 / cls_s, 2),
        "latency_explained_ms": round(full_s * 1000, 3),
        "fps_explained": round(1 / full_s, 2),
    } | runtime_fields(device, next(classifier.parameters()).dtype)


def runtime_fields(device: torch.device, dtype: torch.dtype) -> dict:
    """Where a timing was taken: it means nothing without the device, dtype and threads."""
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpu_kernels": describe()["cpu_capability"],
        "batch_size": 1,
    }
