"""HINT and RRR-G (megl.methods.xil), added through the registry alone: each loss against a
hand-computed example, each term in the MEGL module on the right class's Grad-CAM, and both in the
tables from their registry entries."""

import pytest
import torch

from megl import methods
from megl.config import VariantConfig
from megl.losses import annotated_mean
from megl.methods import xil
from megl.models.backbones import BackboneConfig, build_classifier
from megl.models.gradcam import class_scores, normalise, raw_map
from megl.models.megl import MEGL

CAM = torch.tensor([[[0.0, 1.0], [0.5, 0.0]]])  # a min-max normalised Grad-CAM, one sample
RELEVANT = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])


def test_hint_is_the_summed_squared_error_to_the_relevant_mask():
    # (0-0)² + (1-1)² + (0.5-1)² + (0-0)² = 0.25
    assert xil.hint_loss(CAM, RELEVANT).tolist() == [0.25]


def test_rrr_g_is_the_summed_squared_map_inside_the_irrelevant_mask():
    irrelevant = 1 - RELEVANT  # cells (0,0) and (1,1): the map is 0 there -> 0; then a map inside
    assert xil.rrr_g_loss(CAM, irrelevant).tolist() == [0.0]
    assert xil.rrr_g_loss(CAM, torch.ones_like(CAM)).tolist() == [1.0 + 0.25]


def test_the_mask_is_the_positive_region_area_resized_to_the_grid():
    full = torch.zeros(1, 4, 4)
    full[0, :2, :2] = 0.3  # any positive value is in the region
    full[0, 2, 2] = 1.0  # one pixel of the bottom-right cell's four
    assert xil.relevant_at_grid(full, 2).tolist() == [[[1.0, 0.0], [0.0, 0.25]]]


def _batch(n=4, size=64):
    torch.manual_seed(0)
    input_map = torch.zeros(n, size, size)
    input_map[:, 16:40, 20:44] = 1.0
    return {"pixels": torch.rand(n, 3, size, size), "label": torch.arange(n) % 3, "input_map": input_map,
            "gt_map": torch.zeros(n, 8, 8), "has_map": torch.tensor([True, False, True, True]), "explanation": [""] * n}


@pytest.mark.parametrize("name, loss, whose", [("hint", xil.hint_loss, "label"), ("rrr_g", xil.rrr_g_loss, "predicted")])
def test_each_term_reads_its_class_cam_on_the_annotated_samples(name, loss, whose):
    torch.manual_seed(0)
    classifier = build_classifier(BackboneConfig("resnet18"), 3)
    model = MEGL(classifier, None, VariantConfig(method=name, weight=0.5), torch.ones(8, 8), lambda_visual=1.0,
                 lambda_textual=0.0, cam_mode="create_graph", cam_eps=1e-8, image_size=64)
    assert model.cam_mode == "detached"  # Captum's plain gradients: constant channel weights
    batch = _batch()
    out = model(batch)
    assert set(out.terms) == {"pred", name}
    # by hand: the same forward (train mode, the same batch), the class the method names, no ReLU
    torch.manual_seed(0)
    again = classifier(batch["pixels"])
    classes = batch["label"] if whose == "label" else again.logits.argmax(1)
    cam = normalise(raw_map(again, class_scores(again.logits, classes), "detached"), 1e-8)
    mask = xil.relevant_at_grid(batch["input_map"], 8)
    per_sample = loss(cam, mask if name == "hint" else 1 - mask)
    torch.testing.assert_close(out.terms[name], 0.5 * annotated_mean(per_sample, batch["has_map"]))
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in classifier.parameters() if p.grad is not None)


def test_registry_entries_name_them_in_the_tables(tmp_path):
    import json

    from megl.layout import RunKey, run_layout
    from megl.tables import build_tables, load_runs

    assert methods.get("hint").display == "HINT" and methods.get("rrr_g").cam_class == "predicted"
    assert set(methods.get("hint").search_space()) == {"train.lr", "variant.weight"}
    configs = {"baseline": VariantConfig(), "hint": VariantConfig(method="hint", weight=0.1),
               "rrr_g": VariantConfig(method="rrr_g", weight=0.1)}
    for i, v in enumerate(configs):
        lay = run_layout(tmp_path, RunKey("object_me", "resnet18", v, 0))
        lay.test_metrics.parent.mkdir(parents=True)
        lay.test_metrics.write_text(json.dumps({"accuracy": 0.5 + 0.1 * i, "miou": 0.3, "backbone_profile": "tiny"}))
    (table2,) = [t for t in build_tables(load_runs(tmp_path, ["object_me"], ["resnet18"], list(configs), [0], configs))
                 if t.name == "table2"]
    assert [row[1].text() for row in table2.rows] == ["-", "HINT", "RRR-G"]
