"""The synthetic benchmark: deterministic bytes, the real layouts, and a decoy planted where it must be."""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from megl.config import load_params
from megl.data.extract import extract_dataset
from megl.data.saliency import build_saliency
from megl.data.synthetic import generate, objects, scene


def small(repo, name, **kw):
    cfg = load_params(repo / "params.yaml").synthetic_source(name)
    base = dict(num_samples=240, num_classes=4, image_size=32, map_size=24, visual_fraction=0.2)
    base.update(kw)
    return dataclasses.replace(cfg, **base)


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["object_me", "action_me"])
def test_same_seed_gives_identical_bytes(repo, tmp_path, name):
    params = load_params(repo / "params.yaml")
    cfg = small(repo, name)
    generate(cfg, params.split, tmp_path / "a")
    generate(cfg, params.split, tmp_path / "b")
    a, b = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert a == b and len(a) > 240
    generate(dataclasses.replace(cfg, seed=1), params.split, tmp_path / "c")
    assert digest(tmp_path / "c") != a


@pytest.mark.parametrize("name", ["object_me", "action_me"])
def test_benchmark_through_the_real_readers(repo, tmp_path, name):
    params = load_params(repo / "params.yaml")
    cfg = small(repo, name, num_samples=400)
    raw = tmp_path / "raw"
    summary = generate(cfg, params.split, raw)
    ds = dataclasses.replace(params.dataset(name), raw_dir=str(raw), image_size=32)
    report = extract_dataset(name, ds, params.split, tmp_path / "data", tmp_path / "dataset.json")
    manifest = pd.read_parquet(tmp_path / "data/manifest.parquet")
    truth = json.loads((raw / "synthetic_truth.json").read_text())["samples"]

    # extraction keeps exactly the samples meant to be kept, and splits them as the plan says
    assert report["samples"]["kept"] == summary["expected_kept"] == len(manifest)
    assert all(truth[s]["final_split"] == split for s, split in zip(manifest["sample_id"], manifest["split"]))
    assert report["samples"]["in"] == summary["samples_written"]
    if name == "object_me":
        assert report["samples"]["rejected_by_reason"]["off_topic_question"] == summary["samples_written"] - summary["expected_kept"]
    else:
        assert report["samples"]["rejected_by_reason"]["class_too_small"] == cfg.rare_class_samples
    assert report["table1"]["classes"] == cfg.num_classes

    # the decoy agrees with the label in ~decoy_agreement of train, at chance elsewhere
    agrees = {s: truth[s]["decoy_agrees"] for s in manifest["sample_id"]}
    rate = manifest.groupby("split")["sample_id"].agg(lambda ids: np.mean([agrees[i] for i in ids]))
    chance = 1 / cfg.num_classes
    n = manifest["split"].value_counts()

    def four_sd(p, split):  # binomial: a fixed seed, but the bound should not depend on luck
        return 4 * np.sqrt(p * (1 - p) / n[split])

    train_p = cfg.decoy_agreement + (1 - cfg.decoy_agreement) * chance
    assert rate["train"] == pytest.approx(train_p, abs=four_sd(train_p, "train"))
    assert rate["test"] == pytest.approx(chance, abs=four_sd(chance, "test"))

    # the decoy is drawn: a corner patch of the decoy class's hue (the image's shortcut)
    images = np.load(tmp_path / "data/images.npy")
    s = images.shape[1]
    p = max(2, round(s * cfg.decoy_size)) - 2
    for row in range(10):
        sample = truth[manifest["sample_id"][row]]
        expected = np.array(scene.decoy_fill(sample["decoy_class"], cfg.num_classes, cfg.decoy_style))
        corners = [images[row, 2:p, 2:p], images[row, 2:p, s - p:s - 2], images[row, s - p:s - 2, 2:p], images[row, s - p:s - 2, s - p:s - 2]]
        errors = [np.abs(c.reshape(-1, 3).mean(0) - expected).max() for c in corners]
        assert min(errors) < 30, (row, errors)

    # maps only for source val/test, one explanation per train sample and three per val/test sample
    assert (manifest["has_visual"] == (manifest["source_split"] != "train")).all()
    n_exp = manifest["explanations"].map(len)
    assert (n_exp[manifest["source_split"] == "train"] == 1).all() and (n_exp[manifest["source_split"] != "train"] == 3).all()
    labels = manifest.set_index("sample_id")["label"]
    first_words = {labels[s].split()[0] for s in manifest["sample_id"][:50]}
    assert first_words  # labels are the class names, e.g. "red circle" / "waving"

    # the heatmaps sit on the target
    sal = build_saliency(name, ds, params.saliency, tmp_path / "data", tmp_path / "data/saliency", tmp_path / "sal.json")
    assert sal["maps_aggregated"] == report["table1"]["visual"]
    index = np.load(tmp_path / "data/saliency/index.npy")
    maps = np.load(tmp_path / "data/saliency/maps_32.npy")
    for row in np.flatnonzero(index >= 0)[:20]:
        x0, y0, x1, y1 = truth[manifest["sample_id"][row]]["target_box"]
        m = maps[index[row]]
        inside = m[max(0, int(y0)) : int(y1) + 1, max(0, int(x0)) : int(x1) + 1].sum()
        assert inside / m.sum() > 0.7


def test_explanations_mention_the_class_attributes(repo, tmp_path):
    params = load_params(repo / "params.yaml")
    generate(small(repo, "object_me"), params.split, tmp_path)
    exps = json.loads((tmp_path / "Annotations/val_exp_anno.json").read_text())
    truth = json.loads((tmp_path / "synthetic_truth.json").read_text())["samples"]
    for qid, texts in exps.items():
        label = truth[qid]["label"]
        if label:
            colour = label.split()[0]
            assert all(colour in t for t in texts)
            assert len(set(texts)) == 3


@pytest.mark.parametrize("name", ["object_me", "action_me"])
def test_varied_geometry(repo, tmp_path, name):
    """geometry: varied puts targets anywhere (centre-biased), the decoy anywhere off the target in a
    hue no explanation names, and says where the target is; the centre geometry stays as it was."""
    params = load_params(repo / "params.yaml")
    cfg = small(repo, name, num_samples=400, image_size=64, geometry="varied")
    raw = tmp_path / "raw"
    summary = generate(cfg, params.split, raw)
    truth = json.loads((raw / "synthetic_truth.json").read_text())["samples"]
    kept = {k: t for k, t in truth.items() if t["final_split"]}
    s = cfg.image_size

    centres = np.array([[(t["target_box"][0] + t["target_box"][2]) / 2, (t["target_box"][1] + t["target_box"][3]) / 2] for t in kept.values()]) / s
    assert abs(centres.mean() - 0.5) < 0.03 and centres.std(axis=0).min() > 0.12  # centre geometry: ~0.07
    covers_centre = np.mean([t["target_box"][0] < s / 2 < t["target_box"][2] and t["target_box"][1] < s / 2 < t["target_box"][3] for t in kept.values()])
    # the train mean map is a weak prior, not the answer (centre geometry: every target box covers
    # the centre); a stick figure is taller than a shape, so its box covers it more often
    assert covers_centre < (0.6 if name == "object_me" else 0.75)
    for t in kept.values():
        (x0, y0, x1, y1), (d0, e0, d1, e1) = t["target_box"], t["decoy_box"]
        assert d1 < x0 or x1 < d0 or e1 < y0 or y1 < e0  # never overlapping
    decoys = np.array([[t["decoy_box"][0], t["decoy_box"][1]] for t in kept.values()]) / s
    assert decoys.std(axis=0).min() > 0.2  # anywhere, not in the corners only

    # the decoy is drawn where the truth says, in its class's hue; for objects that hue is far from
    # every colour the explanations name
    ds = dataclasses.replace(params.dataset(name), raw_dir=str(raw), image_size=s)
    report = extract_dataset(name, ds, params.split, tmp_path / "data", tmp_path / "dataset.json")
    assert report["samples"]["kept"] == summary["expected_kept"]
    manifest = pd.read_parquet(tmp_path / "data/manifest.parquet")
    images = np.load(tmp_path / "data/images.npy")
    named = objects.named_hues(cfg.num_classes) if name == "object_me" else ()
    for row in range(20):
        t = truth[manifest["sample_id"][row]]
        x0, y0, x1, y1 = (int(v) for v in t["decoy_box"])
        patch = images[row, y0 + 2 : y1 - 1, x0 + 2 : x1 - 1].reshape(-1, 3).mean(0)
        expected = scene.varied_decoy_fill(t["decoy_class"], cfg.num_classes, cfg.decoy_style, named)
        assert np.abs(patch - expected).max() < 30, (row, patch, expected)
    for hue in scene.decoy_hues(cfg.num_classes, named):
        assert all(min(abs(hue - h), 360 - abs(hue - h)) > scene.DECOY_HUE_MARGIN for h in named)

    # explanations that say where the target is say it right
    texts = manifest.set_index("sample_id")["explanations"]
    checked = 0
    for sample_id, t in kept.items():
        x0, y0, x1, y1 = t["target_box"]
        where = scene.varied_position_phrase((x0 + x1) / 2, (y0 + y1) / 2, s)
        for text in texts[sample_id]:
            if "of the image" in text:
                assert where in text, (text, where)
                checked += 1
    assert checked > 100


def test_centre_geometry_is_unchanged(repo, tmp_path):
    """The default geometry writes the bytes it wrote before `geometry` existed (a digest of a
    small object_me and action_me benchmark, recorded before the change)."""
    params = load_params(repo / "params.yaml")
    digests = {}
    for name in ("object_me", "action_me"):
        generate(small(repo, name, num_samples=60), params.split, tmp_path / name)
        digests[name] = hashlib.sha256(json.dumps(digest(tmp_path / name), sort_keys=True).encode()).hexdigest()
    assert digests == CENTRE_DIGESTS


CENTRE_DIGESTS = {
    "object_me": "1352f6148fa45b158ad9a397088ff580b2bdeb1e2eaa095dbd6a3088b7ab0f0b",
    "action_me": "a7b88bc07d62c3269ac48e0bc55b6290fa54cbc5fdb27629d650255f544cd877",
}


def test_validation_drawn_like_train(repo):
    """validation: in_distribution plants the decoy on val as on train (the test split keeps random
    decoys); shifted (the default) leaves val random, as test."""
    from megl.data.synthetic.plan import plan_samples

    params = load_params(repo / "params.yaml")
    n = 600
    ids = [f"s{i:04d}" for i in range(n)]
    labels = [i % 4 for i in range(n)]
    names = ["a", "b", "c", "d"]
    rates = {}
    for validation in ("shifted", "in_distribution"):
        cfg = small(repo, "object_me", num_samples=n, validation=validation)
        plan = plan_samples(cfg, params.split, labels, names, ids)
        rates[validation] = {s: np.mean([p.decoy_agrees for p in plan if p.final_split == s]) for s in ("train", "val", "test")}
    assert rates["shifted"]["train"] == rates["in_distribution"]["train"] == 1.0
    assert rates["in_distribution"]["val"] == 1.0 and rates["shifted"]["val"] < 0.5
    assert rates["shifted"]["test"] == rates["in_distribution"]["test"] < 0.5  # test: the same random decoys
