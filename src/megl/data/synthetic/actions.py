"""Synthetic Action-ME: a stick figure's pose, written in the ACT-X Park et al. layout (the figure
near the centre or anywhere: scene.py geometries).

Class = the activity the pose shows. Activity strings follow MPII's "coarse, fine" form
("waving, one hand") so the reader's coarsening option has something to act on; each coarse
activity has one fine form, so coarsening never changes which samples share a class. A few samples
of one extra, rare activity are written for the class-size filter to remove.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import ImageDraw

from megl.atomic import atomic_dir, save_npy, write_bytes, write_json
from megl.config import ConfigError, SplitConfig, SyntheticConfig
from megl.data.synthetic import scene
from megl.data.synthetic.plan import PlannedSample, plan_samples, sample_rng, summarise, truth_record

# Limb angles in degrees from straight down; positive turns toward the image's right.
# (left upper arm, left forearm, right upper arm, right forearm,
#  left thigh, left shin, right thigh, right shin, torso tilt)
NEUTRAL_LEGS = (-12, -6, 12, 6)
ACTIVITIES = [
    ("waving, one hand", (-140, -175, 20, 10, *NEUTRAL_LEGS, 0),
     "one arm is raised high above the head while the other hangs down"),
    ("cheering, arms up", (-150, -160, 150, 160, *NEUTRAL_LEGS, 0),
     "both arms are stretched up above the head in a v shape"),
    ("pointing, to the side", (-90, -90, 20, 10, *NEUTRAL_LEGS, 0),
     "one arm is held straight out to the side at shoulder height"),
    ("stretching, arms out", (-90, -90, 90, 90, -35, -35, 35, 35, 0),
     "both arms are spread out sideways and the legs stand wide apart"),
    ("squatting, knees bent", (-60, -100, 60, 100, -75, 5, 75, -5, 0),
     "the knees are bent out to the sides so the body sits low"),
    ("running, fast", (-50, -110, 45, 0, -45, -10, 35, 80, 12),
     "the legs are in a long stride and the arms swing in opposite directions"),
    ("kicking, one leg", (-70, -50, 70, 50, -100, -95, 6, 2, 0),
     "one leg is lifted straight out to the side as if kicking"),
    ("bowing, deep", (55, 55, 65, 65, -8, -4, 8, 4, 65),
     "the upper body is bent far forward from the hips"),
    ("sitting, cross-legged", (-30, 30, 30, -30, -95, 60, 95, -60, 0),
     "the legs are folded out to both sides as if sitting on the floor"),
    ("dancing, arm curved", (-160, -130, 55, 130, 15, -15, -15, 15, 0),
     "one arm curves over the head and the legs are crossed"),
]
RARE_ACTIVITY = ("juggling, three balls", (-60, -150, 60, 150, *NEUTRAL_LEGS, 0),
                 "both forearms point up in front of the body to catch the balls")
EXPLANATIONS = (
    "because {desc}",
    "{desc} {where}",
    "the person {where} is {gerund} since {desc}",
    "you can tell they are {gerund} because {desc}",
    "the figure {where} shows that {desc}",
)
FIGURE_COLOURS = [(240, 240, 240), (240, 200, 60), (90, 200, 255), (255, 140, 90), (170, 255, 140)]


def _direction(angle_deg: float) -> tuple[float, float]:
    a = math.radians(angle_deg)
    return math.sin(a), math.cos(a)


def figure_drawer(pose, cx: float, cy: float, height: float, jitter: np.ndarray):
    """A function drawing the stick figure at a scale (image or heatmap resolution)."""
    angles = np.asarray(pose, dtype=float) + jitter
    la_u, la_l, ra_u, ra_l, ll_u, ll_l, rl_u, rl_l, tilt = angles
    torso, upper, lower, thigh, shin, head = (0.34, 0.19, 0.17, 0.22, 0.22, 0.09)

    def draw(d: ImageDraw.ImageDraw, scale: float, fill) -> None:
        h = height * scale
        width = max(2, round(0.055 * h))
        hip = (cx * scale, (cy + 0.12 * height) * scale)
        tx, ty = _direction(180 + tilt)
        neck = (hip[0] + tx * torso * h, hip[1] + ty * torso * h)

        def limb(start, a1, a2, l1, l2) -> None:
            dx, dy = _direction(a1)
            mid = (start[0] + dx * l1 * h, start[1] + dy * l1 * h)
            dx, dy = _direction(a2)
            end = (mid[0] + dx * l2 * h, mid[1] + dy * l2 * h)
            d.line([start, mid, end], fill=fill, width=width, joint="curve")

        d.line([hip, neck], fill=fill, width=width)
        limb(neck, la_u + tilt, la_l + tilt, upper, lower)
        limb(neck, ra_u + tilt, ra_l + tilt, upper, lower)
        limb(hip, ll_u, ll_l, thigh, shin)
        limb(hip, rl_u, rl_l, thigh, shin)
        r = head * h
        hx, hy = neck[0] + tx * r * 1.2, neck[1] + ty * r * 1.2
        d.ellipse((hx - r, hy - r, hx + r, hy + r), fill=fill)

    return draw


def _render(cfg: SyntheticConfig, p: PlannedSample, pose):
    rng = sample_rng(cfg.seed, p.index)
    s = cfg.image_size
    varied = cfg.geometry == "varied"
    height = rng.uniform(0.32, 0.48) * s if varied else rng.uniform(0.5, 0.6) * s
    cx, cy = scene.varied_centre(rng, s, height / 2) if varied else tuple(rng.uniform(0.42, 0.58, size=2) * s)
    draw_target = figure_drawer(pose, cx, cy, height, rng.normal(0, 6, size=9))
    box = (cx - height / 2, cy - height / 2, cx + height / 2, cy + height / 2)
    colour = FIGURE_COLOURS[int(rng.integers(len(FIGURE_COLOURS)))]
    if not varied:
        jpeg, maps = scene.compose(rng, cfg, p.decoy_class, p.has_visual, draw_target, colour, box)
        return jpeg, maps, box, None, scene.position_phrase(cx, cy, s), rng
    # the explanations name no colour (the figure's colour is random): decoy hues need avoid none
    decoy_rgb = scene.varied_decoy_fill(p.decoy_class, cfg.num_classes, cfg.decoy_style, ())
    jpeg, maps, decoy_box = scene.compose_varied(rng, cfg, decoy_rgb, p.has_visual, draw_target, colour, box)
    return jpeg, maps, box, decoy_box, scene.varied_position_phrase(cx, cy, s), rng


def generate(cfg: SyntheticConfig, split_cfg: SplitConfig, out_dir: Path) -> dict:
    if cfg.num_classes > len(ACTIVITIES):
        raise ConfigError(f"synthetic actions: num_classes must be <= {len(ACTIVITIES)}, got {cfg.num_classes}")
    activities = ACTIVITIES[: cfg.num_classes]
    names = [a[0] for a in activities]
    n_main, n = cfg.num_samples, cfg.num_samples + cfg.rare_class_samples
    rng = np.random.default_rng([cfg.seed, 0])
    labels = list(rng.permutation(np.arange(n_main) % cfg.num_classes)) + [-1] * cfg.rare_class_samples
    keys = [f"{i:06d}" for i in range(n)]
    plan = plan_samples(cfg, split_cfg, [int(x) for x in labels], names, keys)

    exp = {"train": {}, "val": {}, "test": {}}
    truth = {}
    with atomic_dir(out_dir) as tmp:
        for p in plan:
            activity, pose, desc = activities[p.class_index] if p.class_index >= 0 else RARE_ACTIVITY
            jpeg, maps, box, decoy_box, where, rng_s = _render(cfg, p, pose)
            iid = f"synth_{p.index:06d}"
            write_bytes(tmp / "images" / f"{iid}.jpg", jpeg)
            n_exp = 1 if p.source_split == "train" else 3
            templates = rng_s.choice(len(EXPLANATIONS), size=n_exp, replace=False)
            gerund = activity.split(",")[0]
            texts = [EXPLANATIONS[t].format(desc=desc, where=where, gerund=gerund) for t in templates]
            exp[p.source_split][p.sample_id] = {"iid": iid, "ans": activity, "exp": texts[0] if n_exp == 1 else texts}
            if maps is not None:
                # ACT-X maps as (H, W, K) .npy, the other accepted layout (objects use (K, H, W) .npz)
                save_npy(tmp / "visual" / p.source_split / f"{p.sample_id}.npy", np.moveaxis(maps, 0, 2))
            truth[p.sample_id] = truth_record(p, activity, box, decoy_box)
        for split, entries in exp.items():
            write_json(tmp / "textual" / f"exp_{split}_split.json", entries)
        summary = summarise(cfg, names, plan)
        summary["rare_activity_samples"] = cfg.rare_class_samples
        write_json(tmp / "synthetic_truth.json", {"summary": summary, "samples": truth})
    return summary
