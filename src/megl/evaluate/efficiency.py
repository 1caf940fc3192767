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


def efficiency_metrics(model, batch: dict, *, warmup: int, iters: int) -> dict:
    """Table 5 for any model of the contract (megl.models.contract) on a one-sample batch on its
    device: the median seconds of its classification call and of its call with the explanation,
    and its parameter counts."""
    image = batch["pixels"]
    classify, classify_and_explain = model.timed_calls(batch)
    cls_s = median_seconds(classify, warmup, iters, image.device)
    full_s = median_seconds(classify_and_explain, warmup, iters, image.device)
    params, total, dtype = model.size()
    return {
        "parameters_classifier": params,
        "parameters_total": total,
        "latency_ms": round(cls_s * 1000, 3),
        "fps": round(1 / cls_s, 2),
        "latency_explained_ms": round(full_s * 1000, 3),
        "fps_explained": round(1 / full_s, 2),
    } | runtime_fields(image.device, dtype)


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
