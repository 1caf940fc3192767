"""REX-style grounding (megl.evaluate.grounding) on hand-made explanations and CAMs, and against
the synthetic benchmark's own position phrases and truth."""

import numpy as np
import pytest

from megl.data.dataset import ExplanationDataset
from megl.data.synthetic import scene
from megl.data.synthetic.actions import ACTIVITIES
from megl.data.synthetic.objects import EXPLANATIONS, SHAPE_WORDS
from megl.evaluate.grounding import Region, grounding_metrics, named_attributes, named_region, target_centres


@pytest.mark.parametrize("text, region", [
    ("there is a red circle in the top left of the image", Region(-1, -1)),
    ("the big object on the right of the image is blue", Region(1, None)),
    ("a large blue square is shown at the bottom of the image", Region(None, 1)),
    ("a large blue square is shown in the middle of the image", Region(0, 0)),
    ("the shape just left of the center has three corners", Region(-1, 0)),
    ("the red object just above the center is perfectly round", Region(0, -1)),
    ("there is a red cross in the lower right part of the center", Region(1, 1)),
    ("it is a red shape that is perfectly round", Region(None, None)),
    ("on the left of the image and on the right of the image", Region(2, None)),
])
def test_the_position_an_explanation_names(text, region):
    assert named_region(text) == region


def test_body_words_are_not_positions():
    for _, _, description in ACTIVITIES:  # "one arm is raised high above the head", "the upper body ..."
        assert not named_region(description).named


@pytest.mark.parametrize("phrase", [scene.position_phrase, scene.varied_position_phrase])
def test_every_phrase_the_benchmark_writes_holds_at_the_target(phrase):
    size = 64
    for cx in np.linspace(1, 63, 40):
        for cy in np.linspace(1, 63, 40):
            region = named_region(f"there is a red circle {phrase(cx, cy, size)}")
            assert region.named and region.contains(cx / size, cy / size), (cx, cy, phrase(cx, cy, size))


def test_attributes_by_name_and_by_the_benchmarks_phrases():
    for shape, words in SHAPE_WORDS.items():
        for template in EXPLANATIONS:
            text = template.format(colour="blue", shape=shape, shape_words=words, where="in the middle of the image")
            colours, shapes = named_attributes(text)
            assert colours == {"blue"} and shapes <= {shape}  # "a tilted square" is a diamond, not a square
    assert named_attributes("the big object is red and looks like a tilted square") == ({"red"}, {"diamond"})


def test_grounding_on_hand_made_cams():
    left = np.zeros((3, 8, 8), dtype=np.float32)
    left[:, :, :2] = 1.0  # all the mass on the left quarter
    texts = ["a red circle on the left of the image", "a red circle on the right of the image", "a red shape"]
    classes = ["red circle", "red circle", "blue circle"]
    centres = np.array([[0.2, 0.5], [0.2, 0.5], [0.2, 0.5]])
    m = grounding_metrics(texts, left, 64, classes, centres)
    # the CAM is bilinear-upsampled, so a little of its mass spills over the edge of its two columns
    assert m["grounding_named"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["grounding_cam"] == pytest.approx(0.5, abs=1e-6)  # mean of 1.0 (left) and 0.0 (right)
    assert m["grounding_cam_chance"] == pytest.approx(0.5)
    assert m["grounding_target"] == pytest.approx(0.5)  # the true centre is on the left
    assert m["grounding_attributes"] == pytest.approx(2 / 3, abs=1e-6)  # "red" is wrong for the blue circle
    assert m["grounding_attributes_named"] == pytest.approx(1.0)


def test_no_named_position_gives_none_not_zero():
    m = grounding_metrics(["it is red"], np.ones((1, 8, 8), np.float32), 64, ["red circle"])
    assert m["grounding_cam"] is None and m["grounding_named"] == 0.0 and "grounding_target" not in m


def test_the_references_are_grounded_in_the_truth(small_params):
    """The benchmark's own explanations name where its targets are: grounding_target 1.0."""
    root = small_params.root
    test = ExplanationDataset(root / "data/object_me", "test", 8, seed=0)
    ids = [test.manifest["sample_id"].iat[r] for r in test.rows]
    references = [test.explanations(i)[0] for i in range(len(test))]
    labels = [test.classes[c] for c in test.manifest["class_id"].to_numpy()[test.rows]]
    centres = target_centres(small_params, "object_me", ids)
    m = grounding_metrics(references, np.ones((len(ids), 8, 8), np.float32), 64, labels, centres)
    assert m["grounding_target"] == 1.0 and m["grounding_attributes"] == 1.0
    assert m["grounding_cam"] == pytest.approx(m["grounding_cam_chance"], abs=1e-6)  # a uniform CAM is chance
