"""Seconds per training step: CE only, CE + batched Grad-CAM loss (both modes), full MEGL, the
peer approach (per-sample hooks + backward, as in the authors' prototype and RES), and every
visual explanation-guided baseline of params.yaml (GRADIA, HAICS, RES-G, RES-L, CDEP, RRR) as the
MEGL module trains it, with that variant's params (CDEP: ResNet only).

Prints one JSON object; every ratio is against the CE-only step measured in the same run, the
candidates' steps interleaved (timed()).

    .venv/bin/python benchmarks/train_step.py [--profiles tiny paper] [--steps 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from megl.config import VariantConfig, load_params
from megl.models.backbones import BackboneConfig, build_classifier
from megl.models.gradcam import class_scores, grad_cam, normalise
from megl.models.megl import MEGL
from megl.models.sdtg import SDTGHead, TextHeadConfig
from megl.models.tokenizer import train_tokenizer

SIZES = {"tiny": (64, 32), "paper": (224, 16)}  # image size, batch
BASELINES = ["gradia", "haics", "res_g", "res_l", "cdep", "rrr"]
ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["the red circle in the center is round", "a blue square with four equal sides", "one arm is raised high"]


def timed(candidates: dict, repeats: int, device: str) -> dict[str, float]:
    """Median seconds per step of each candidate. Each gets two warm-up steps (allocator, kernels,
    thread pools), then the steps go round-robin, one of each in turn: none is timed colder, or
    under other load on the machine, than the one it is compared with. The garbage collector runs
    between steps, never inside one (the text head's many Python objects make a full collection
    costly, and it would land in whichever step came next)."""
    for step in candidates.values():
        for _ in range(2):
            step()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, step in candidates.items():
            gc.collect()  # as timeit: the collector off while timed, so no step pays for another's garbage
            gc.disable()
            try:
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                step()
                if device == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
            finally:
                gc.enable()
    return {name: statistics.median(t) for name, t in times.items()}


def bench(backbone: str, profile: str, steps: int, device: str) -> dict:
    size, batch = SIZES[profile]
    torch.manual_seed(0)
    classifier = build_classifier(BackboneConfig(backbone, profile), 10).to(device).train()
    grid = classifier(torch.zeros(1, 3, size, size, device=device)).activations.shape[-1]
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.arange(batch, device=device) % 10
    gt = torch.rand(batch, grid, grid, device=device)
    opt = torch.optim.SGD(classifier.parameters(), lr=1e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

    def ce_only():
        opt.zero_grad()
        with autocast:
            loss = F.cross_entropy(classifier(x).logits, y)
        loss.backward()
        opt.step()

    def cam_step(mode):
        def step():
            opt.zero_grad()
            with autocast:
                out = classifier(x)
                cam = normalise(grad_cam(out.activations, class_scores(out.logits, y), mode))
                loss = F.cross_entropy(out.logits, y) + (cam - gt).abs().mean()
            loss.backward()
            opt.step()
        return step

    def peer_per_sample():
        """Per sample: forward with hooks, backward of its logit for the weights, CAM loss backward."""
        opt.zero_grad()
        F.cross_entropy(classifier(x).logits, y).backward()
        store = {}
        h1 = classifier.cam_layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
        for i in range(batch):
            out = classifier(x[i : i + 1])
            a = store["a"]
            (g,) = torch.autograd.grad(out.logits[0, y[i]], a, retain_graph=True)
            cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
            cam = cam / (cam.max() + 1e-8)
            ((cam - gt[i : i + 1]).abs().mean() / batch).backward()
        h1.remove()
        opt.step()

    tokenizer = train_tokenizer(TEXTS * 10, 128)
    head = SDTGHead(TextHeadConfig(), classifier.feature_dim, tokenizer).to(device)
    megl = MEGL(classifier, head, VariantConfig(visual=True, text=True, consistency=True), gt.mean(0), lambda_visual=1.0,
                lambda_textual=0.5, cam_mode="create_graph", cam_eps=1e-8).to(device)
    full = torch.zeros(batch, size, size, device=device)
    full[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
    data = {"pixels": x, "label": y, "gt_map": gt, "input_map": full, "has_map": torch.arange(batch, device=device) % 4 == 0,
            "explanation": [TEXTS[i % 3] for i in range(batch)]}

    def train_step(model):
        model_opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step():
            model_opt.zero_grad()
            with autocast:
                out = model(data)
            out.loss.backward()
            model_opt.step()
        return step

    megl_full = train_step(megl)
    params = load_params(ROOT / "params.yaml")
    baselines = {}
    for name in BASELINES:
        if name == "cdep" and backbone != "resnet18":
            baselines[name] = None  # no faithful contextual decomposition for ViT
            continue
        model = MEGL(classifier, None, params.variant(name), gt.mean(0), lambda_visual=1.0, lambda_textual=0.0,
                     cam_mode=params.train.cam_mode, cam_eps=1e-8, image_size=size).to(device)
        baselines[name] = train_step(model)

    r = {"backbone": backbone, "profile": profile, "image_size": size, "batch": batch, "cam_grid": grid, "repeats": steps}
    candidates = {"ce_only_s": ce_only, "cam_create_graph_s": cam_step("create_graph"), "cam_detached_s": cam_step("detached"),
                  "megl_full_tiny_text_head_s": megl_full, "peer_per_sample_s": peer_per_sample}
    candidates |= {f"{name}_s": step for name, step in baselines.items() if step}
    # the A/A control: CE timed again as a candidate of its own, so its ratio to CE is the noise floor
    # that every other ratio is read against (a ratio within it is no measured cost)
    candidates["ce_only_again_s"] = ce_only
    r |= timed(candidates, steps, device)
    r["ratio_ce_again_vs_ce"] = r["ce_only_again_s"] / r["ce_only_s"]
    for name, step in baselines.items():
        r.setdefault(f"{name}_s", None)
        r[f"ratio_{name}_vs_ce"] = r[f"{name}_s"] / r["ce_only_s"] if step else None
    r["ratio_create_graph_vs_ce"] = r["cam_create_graph_s"] / r["ce_only_s"]
    r["ratio_detached_vs_ce"] = r["cam_detached_s"] / r["ce_only_s"]
    r["speedup_detached_vs_peer"] = r["peer_per_sample_s"] / r["cam_detached_s"]
    r["speedup_create_graph_vs_peer"] = r["peer_per_sample_s"] / r["cam_create_graph_s"]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="+", default=["tiny", "paper"], choices=sorted(SIZES))
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "vit_b16"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each candidate (median), after 2 warm-up steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    results = [bench(b, p, args.steps, args.device) for p in args.profiles for b in args.backbones]
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(json.dumps({
        "benchmark": "train_step", "device": args.device, "device_name": device,
        "dtype": "bf16 autocast" if args.device == "cuda" else "fp32",
        "torch_threads": torch.get_num_threads(), "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
