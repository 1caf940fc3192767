"""Synthetic Object-ME: a large coloured shape, written in the VQA-X Park et al. layout.

Class = (colour, shape) of the large target (near the centre, or anywhere: scene.py geometries). Each sample is a VQA question with ten
annotators' answers (mostly the class name in varied surface forms, so answer normalisation and
the majority vote are exercised), one explanation in train and three in val/test, and, in the
source val/test splits only, three annotators' heatmaps as an .npz file. A share of questions do
not ask for the object's identity; extraction's question patterns must filter them out.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import ImageDraw

from megl.atomic import atomic_dir, npz_bytes, write_bytes, write_json
from megl.config import ConfigError, SplitConfig, SyntheticConfig
from megl.data.synthetic import scene
from megl.data.synthetic.plan import PlannedSample, plan_samples, sample_rng, summarise, truth_record

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {"red": (225, 40, 40), "blue": (50, 90, 235), "green": (40, 190, 60), "yellow": (235, 215, 40)}
SHAPE_WORDS = {
    "circle": "is perfectly round",
    "square": "has four equal sides",
    "triangle": "has three corners",
    "diamond": "looks like a tilted square",
    "cross": "looks like a plus sign",
}
CLASSES = [(colour, shape) for colour in COLOURS for shape in SHAPES]  # red first, then blue, ...

QUESTIONS = (
    "What is the object in the center?",
    "What object is in the middle of the picture?",
    "What kind of shape is shown in the center?",
    "What is this object?",
)
# varied geometry: the target is not in the centre, so the questions do not say it is
QUESTIONS_VARIED = (
    "What is the object in the picture?",
    "What object is in the picture?",
    "What kind of shape is the big one?",
    "What is this object?",
)
OFF_TOPIC = (
    ("How many small shapes are there?", None),
    ("Is there a grey square in a corner?", "yes"),
    ("Is the background bright?", "no"),
)
EXPLANATIONS = (
    "there is a {colour} {shape} {where}",
    "the big object {where} is {colour} and {shape_words}",
    "it is a {colour} shape that {shape_words}",
    "a large {colour} {shape} is shown {where}",
    "the shape {where} {shape_words} and is painted {colour}",
    "the {colour} object {where} {shape_words}",
)
ANSWER_FORMS = ("{c} {s}", "{C} {s}", "a {c} {s}", "the {c} {s}", "{c} {s}.", "{c} {s}s")


def class_names(num_classes: int) -> list[str]:
    return [f"{c} {s}" for c, s in CLASSES[:num_classes]]


def _answers(rng: np.random.Generator, colour: str, shape: str) -> list[dict]:
    """Ten answers: at least six name the class (in varied forms), the rest are plausible mistakes."""
    n_right = max(6, int(rng.binomial(10, 0.85)))
    right_forms = [0, 0, 0, 1, 2, 3, 4]  # mostly the plain form; plural "...s" never wins a vote
    out = []
    for k in range(10):
        if k < n_right:
            form = ANSWER_FORMS[right_forms[rng.integers(len(right_forms))]]
        else:
            form = ANSWER_FORMS[5] if rng.random() < 0.3 else "{s}" if rng.random() < 0.5 else "{o} {s}"
        text = form.format(c=colour, C=colour.capitalize(), s=shape, o=[c for c in COLOURS if c != colour][k % 3])
        out.append({"answer": text, "answer_confidence": "yes", "answer_id": k + 1})
    rng.shuffle(out)
    return out


def _off_topic_answers(rng: np.random.Generator, answer: str | None) -> list[dict]:
    value = answer or str(int(rng.integers(2, 5)))
    return [{"answer": value, "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)]


def named_hues(num_classes: int) -> tuple[float, ...]:
    """Hues (degrees) of the colours the class names and explanations use."""
    used = sorted({colour for colour, _ in CLASSES[:num_classes]})
    return tuple(colorsys.rgb_to_hsv(*(c / 255 for c in COLOURS[name]))[0] * 360 for name in used)


def _render(cfg: SyntheticConfig, p: PlannedSample, colour: str, shape: str):
    rng = sample_rng(cfg.seed, p.index)
    s = cfg.image_size
    varied = cfg.geometry == "varied"
    size = rng.uniform(0.2, 0.34) * s if varied else rng.uniform(0.28, 0.36) * s
    cx, cy = scene.varied_centre(rng, s, size / 2) if varied else tuple(rng.uniform(0.38, 0.62, size=2) * s)
    box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)

    def draw_target(d: ImageDraw.ImageDraw, scale: float, fill) -> None:
        scene.draw_shape(d, shape, cx * scale, cy * scale, size * scale, fill)

    if not varied:
        jpeg, maps = scene.compose(rng, cfg, p.decoy_class, p.has_visual, draw_target, COLOURS[colour], box)
        return jpeg, maps, box, None, scene.position_phrase(cx, cy, s), rng
    decoy_rgb = scene.varied_decoy_fill(p.decoy_class, cfg.num_classes, cfg.decoy_style, named_hues(cfg.num_classes))
    jpeg, maps, decoy_box = scene.compose_varied(rng, cfg, decoy_rgb, p.has_visual, draw_target, COLOURS[colour], box)
    return jpeg, maps, box, decoy_box, scene.varied_position_phrase(cx, cy, s), rng


def generate(cfg: SyntheticConfig, split_cfg: SplitConfig, out_dir: Path) -> dict:
    if cfg.num_classes > len(CLASSES):
        raise ConfigError(f"synthetic objects: num_classes must be <= {len(CLASSES)}, got {cfg.num_classes}")
    names = class_names(cfg.num_classes)
    n = cfg.num_samples
    rng = np.random.default_rng([cfg.seed, 0])
    labels = rng.permutation(np.arange(n) % cfg.num_classes)
    off_topic = rng.random(n) < cfg.off_topic_fraction
    class_index = [-1 if off_topic[i] else int(labels[i]) for i in range(n)]
    qids = [str(5_000_000 + 10 * i + 1) for i in range(n)]
    plan = plan_samples(cfg, split_cfg, class_index, names, qids)

    exp = {"train": {}, "val": {}, "test": {}}
    questions = {"train2014": [], "val2014": []}
    annotations = {"train2014": [], "val2014": []}
    truth = {}
    with atomic_dir(out_dir) as tmp:
        for p in plan:
            colour, shape = CLASSES[int(labels[p.index])]
            jpeg, maps, box, decoy_box, where, rng_s = _render(cfg, p, colour, shape)
            coco = "train2014" if p.source_split == "train" else "val2014"
            image_id = 1_000_000 + p.index
            write_bytes(tmp / "images" / f"COCO_{coco}_{image_id:012d}.jpg", jpeg)
            if off_topic[p.index]:
                question, answer = OFF_TOPIC[int(rng_s.integers(len(OFF_TOPIC)))]
                answers = _off_topic_answers(rng_s, answer)
            else:
                asked = QUESTIONS_VARIED if cfg.geometry == "varied" else QUESTIONS
                question = asked[int(rng_s.integers(len(asked)))]
                answers = _answers(rng_s, colour, shape)
            questions[coco].append({"image_id": image_id, "question": question, "question_id": int(p.sample_id)})
            annotations[coco].append(
                {
                    "question_id": int(p.sample_id),
                    "image_id": image_id,
                    "answers": answers,
                    "multiple_choice_answer": answers[0]["answer"],
                    "answer_type": "other",
                    "question_type": "what",
                }
            )
            n_exp = 1 if p.source_split == "train" else 3
            templates = rng_s.choice(len(EXPLANATIONS), size=n_exp, replace=False)
            words = {"colour": colour, "shape": shape, "shape_words": SHAPE_WORDS[shape], "where": where}
            exp[p.source_split][p.sample_id] = [EXPLANATIONS[t].format(**words) for t in templates]
            if maps is not None:
                write_bytes(tmp / "Annotations" / "visual" / p.source_split / f"{p.sample_id}.npz", npz_bytes({"heatmaps": maps}))
            truth[p.sample_id] = truth_record(p, f"{colour} {shape}" if p.class_index >= 0 else "", box, decoy_box)

        for split, entries in exp.items():
            write_json(tmp / "Annotations" / f"{split}_exp_anno.json", entries)
        for coco in ("train2014", "val2014"):
            write_json(tmp / "Questions" / f"v2_OpenEnded_mscoco_{coco}_questions.json", {"questions": questions[coco]})
            write_json(tmp / "Annotations" / f"v2_mscoco_{coco}_annotations.json", {"annotations": annotations[coco]})
        summary = summarise(cfg, names, plan)
        write_json(tmp / "synthetic_truth.json", {"summary": summary, "samples": truth})
    return summary

