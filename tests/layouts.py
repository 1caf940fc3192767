"""Small hand-made raw datasets in the four layouts the readers accept (docs/reference.md).

Each builder writes literal annotation records, tiny JPEGs and visual maps in one of the accepted
shapes, so tests can corrupt one piece at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from megl.config import DatasetConfig, LabelConfig

OBJECT_PATTERNS = ("^what (kind|type) of (animal|vehicle)\\b", "^what is (this|that) (animal|object)\\b")


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def write_jpeg(path: Path, colour=(200, 30, 30), size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG", quality=90)


def heatmaps(shape=(3, 20, 24), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    maps = np.zeros(shape, dtype=np.float32)
    maps[..., 5:12, 6:14] = rng.uniform(0.5, 1.0, size=maps[..., 5:12, 6:14].shape)
    return maps


def vqa_answers(*answers: str) -> list[dict]:
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]


DOG = vqa_answers(*(["dog"] * 7 + ["Dogs", "a dog", "puppy"]))
CAT = vqa_answers(*(["cat"] * 6 + ["the cat"] * 2 + ["kitten", "dog"]))
BUS = vqa_answers(*(["bus"] * 10))


def make_vqax_park(root: Path) -> Path:
    """4 explanation entries: 2 train, 1 val (with a .npz map, keys chosen freely), 1 test (.npy map)."""
    ann, qs = root / "Annotations", root / "Questions"
    write_json(ann / "train_exp_anno.json", {"101": ["it has floppy ears and a tail"], "102": ["it is whiskered and small"]})
    write_json(ann / "val_exp_anno.json", {"201": ["the big yellow vehicle carries people", "it is a bus", ""]})
    write_json(ann / "test_exp_anno.json", {"301": ["there is a dog on the grass"]})
    write_json(
        qs / "v2_OpenEnded_mscoco_train2014_questions.json",
        {"questions": [
            {"question_id": 101, "image_id": 11, "question": "What kind of animal is this?"},
            {"question_id": 102, "image_id": 12, "question": "What is this animal?"},
            {"question_id": 999, "image_id": 13, "question": "Is it sunny?"},  # not in any exp file
        ]},
    )
    write_json(
        qs / "v2_OpenEnded_mscoco_val2014_questions.json",
        {"questions": [
            {"question_id": 201, "image_id": 21, "question": "What type of vehicle is shown?"},
            {"question_id": 301, "image_id": 31, "question": "What kind of animal is on the grass?"},
        ]},
    )
    write_json(
        ann / "v2_mscoco_train2014_annotations.json",
        {"annotations": [
            {"question_id": 101, "image_id": 11, "answers": DOG, "multiple_choice_answer": "dog"},
            {"question_id": 102, "image_id": 12, "answers": CAT, "multiple_choice_answer": "cat"},
        ]},
    )
    write_json(
        ann / "v2_mscoco_val2014_annotations.json",
        {"annotations": [
            {"question_id": 201, "image_id": 21, "answers": BUS, "multiple_choice_answer": "bus"},
            {"question_id": 301, "image_id": 31, "answers": DOG, "multiple_choice_answer": "dog"},
        ]},
    )
    images = root / "images"
    write_jpeg(images / "COCO_train2014_000000000011.jpg")
    write_jpeg(images / "train2014" / "COCO_train2014_000000000012.jpg")  # COCO's own sub-folder
    write_jpeg(images / "COCO_val2014_000000000021.jpg", colour=(230, 200, 20))
    write_jpeg(images / "COCO_val2014_000000000031.jpg")
    (ann / "visual" / "val").mkdir(parents=True)
    (ann / "visual" / "test").mkdir(parents=True)
    np.savez(ann / "visual" / "val" / "201.npz", att_0=heatmaps()[0], att_1=heatmaps()[1], att_2=heatmaps()[2])
    np.save(ann / "visual" / "test" / "301.npy", np.moveaxis(heatmaps(), 0, 2))  # (H, W, 3)
    return root


def make_vqax_nlx(root: Path) -> Path:
    write_json(root / "vqaX_train.json", {
        "101": {"question": "What kind of animal is this?", "answers": DOG, "image_id": 11,
                "image_name": "COCO_train2014_000000000011.jpg", "explanation": ["it has floppy ears"]},
    })
    write_json(root / "vqaX_val.json", {
        "201": {"question": "What type of vehicle is shown?", "answers": BUS, "image_id": 21,
                "image_name": "COCO_val2014_000000000021.jpg", "explanation": ["it is long and yellow", "a bus"]},
    })
    write_json(root / "vqaX_test.json", {
        "301": {"question": "What is this animal?", "answers": CAT, "image_id": 31,
                "image_name": "COCO_val2014_000000000031.jpg", "explanation": ["it has whiskers"]},
    })
    write_jpeg(root / "images" / "train2014" / "COCO_train2014_000000000011.jpg")
    write_jpeg(root / "images" / "val2014" / "COCO_val2014_000000000021.jpg")
    write_jpeg(root / "images" / "val2014" / "COCO_val2014_000000000031.jpg")
    return root


def make_actx_park(root: Path) -> Path:
    """Maps named by key in val (.npz, one (3,H,W) array) and by image name in test (.npy (H,W))."""
    write_json(root / "textual" / "exp_train_split.json", {
        "a1": {"iid": "015601864", "ans": "bicycling, mountain", "exp": "he rides a bike on a trail"},
        "a2": {"iid": "015601865", "ans": "bicycling, road", "exp": ["she pedals on the road"]},
    })
    write_json(root / "textual" / "exp_val_split.json", {
        "a3": {"iid": "015601866", "ans": "running", "exp": ["he jogs", "legs in a stride"]},
    })
    write_json(root / "textual" / "exp_test_split.json", {
        "a4": {"iid": "015601867", "ans": "bicycling, mountain", "exp": ["a mountain bike"]},
    })
    for iid in ("015601864", "015601865", "015601866", "015601867"):
        write_jpeg(root / "images" / f"{iid}.jpg", size=(32, 48))
    (root / "visual" / "val").mkdir(parents=True)
    (root / "visual" / "test").mkdir(parents=True)
    np.savez(root / "visual" / "val" / "a3.npz", heatmaps())
    np.save(root / "visual" / "test" / "015601867.npy", heatmaps()[0])  # (H, W): one annotator
    return root


def make_actx_nlx(root: Path) -> Path:
    write_json(root / "actX_train.json", {
        "k1": {"answers": "dancing, ballet", "image_id": "1", "image_name": "001.jpg", "explanation": ["on her toes"]},
    })
    write_json(root / "actX_val.json", {
        "k2": {"answers": "dancing, salsa", "image_id": "2", "image_name": "002.jpg", "explanation": ["a couple spins"]},
    })
    write_json(root / "actX_test.json", {
        "k3": {"answers": "fishing", "image_id": "3", "image_name": "003.jpg", "explanation": ["holds a rod", "at a lake"]},
    })
    for name in ("001", "002", "003"):
        write_jpeg(root / "images" / f"{name}.jpg")
    return root


def write_png_mask(path: Path, box=(4, 4, 12, 10), size=(20, 16)) -> None:
    mask = np.zeros(size[::-1], dtype=np.uint8)
    mask[box[1]:box[3], box[0]:box[2]] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)


GENERIC_RECORDS = [
    # a PNG mask; one explanation as a string
    {"id": "s1", "image": "cats/1.png", "label": "cat", "split": "train", "explanations": "pointed ears", "visual": "masks/1.png"},
    # two annotators in two files of different formats; several explanations
    {"id": "s2", "image": "cats/2.png", "label": "cat", "split": "test",
     "explanations": ["whiskers", "a cat's tail"], "visual": ["masks/2a.png", "masks/2b.npy"]},
    # no id (the image path is the id), no split, no map; `explanation` as the key
    {"image": "dogs/3.jpg", "label": "dog", "explanation": ["floppy ears"]},
    {"id": 4, "image": "dogs/4.jpg", "label": "Golden  retriever", "split": "val", "explanations": ["golden coat"]},
]


def make_generic(root: Path, records=None, fmt: str = "jsonl") -> Path:
    """The generic layout (megl.data.readers.generic): a manifest, images in sub-folders, masks."""
    records = GENERIC_RECORDS if records is None else records
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        import csv

        with (root / "manifest.csv").open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["id", "image", "label", "split", "explanation", "explanation_2", "visual", "visual_2"])
            for r in records:
                exps = [r.get("explanations", r.get("explanation"))]
                exps = exps[0] if isinstance(exps[0], list) else exps
                vis = r.get("visual") or []
                vis = [vis] if isinstance(vis, str) else vis
                out.writerow([r.get("id", ""), r["image"], r["label"], r.get("split", ""),
                              *(exps + ["", ""])[:2], *(list(vis) + ["", ""])[:2]])
    for name in ("cats/1.png", "cats/2.png"):
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 16), (90, 90, 90)).save(path)
    write_jpeg(root / "images" / "dogs" / "3.jpg")
    write_jpeg(root / "images" / "dogs" / "4.jpg")
    write_png_mask(root / "masks" / "1.png")
    write_png_mask(root / "masks" / "2a.png")
    np.save(root / "masks" / "2b.npy", heatmaps((16, 20)))
    return root


BUILDERS = {"vqax_park": make_vqax_park, "vqax_nlx": make_vqax_nlx, "actx_park": make_actx_park, "actx_nlx": make_actx_nlx,
            "generic": make_generic}


def dataset_cfg(layout: str, raw_dir: Path, **overrides) -> DatasetConfig:
    objects = layout.startswith("vqax")
    labels = LabelConfig(
        min_samples_per_class=overrides.pop("min_samples_per_class", 1),
        max_classes=overrides.pop("max_classes", 40),
        question_patterns=OBJECT_PATTERNS if objects else (),
        exclude_answers=("yes", "no"),
        aliases=overrides.pop("aliases", {}),
        coarsen=overrides.pop("coarsen", False),
    )
    base = dict(layout=layout, raw_dir=str(raw_dir), image_size=16, on_bad_sample="skip", labels=labels, decode_workers=1)
    base.update(overrides)
    return DatasetConfig(**base)
