import textwrap

import pytest
import yaml

from megl.config import ConfigError, load_params


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def default_params(repo):
    return yaml.safe_load((repo / "params.yaml").read_text())


def test_repository_params_load(repo):
    params = load_params(repo / "params.yaml")
    assert set(params.datasets) == {"object_me", "action_me"}
    assert params.dataset("object_me").task == "objects"
    assert params.dataset("action_me").labels.coarsen is True
    assert params.synthetic_source("object_me").decoy_agreement == 1.0
    assert params.synthetic_source("object_me").decoy_style == "colour"
    assert params.grid.seeds == (0,) and params.train.seed == 0


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p["datasets"]["object_me"].update(colour="red"), "datasets.object_me: unknown key(s) ['colour']"),
        (lambda p: p["datasets"]["object_me"]["labels"].update(min_samples_per_class="ten"),
         "datasets.object_me.labels.min_samples_per_class: expected an integer, got 'ten'"),
        (lambda p: p["datasets"]["action_me"].update(layout="coco"), "datasets.action_me.layout: expected one of"),
        (lambda p: p["datasets"]["object_me"]["labels"].update(question_patterns=["(unclosed"]),
         "datasets.object_me.labels.question_patterns[0]: invalid regex"),
        (lambda p: p["split"].update(val=0.6, test=0.5), "split: val + test must leave room for train"),
        (lambda p: p["datasets"]["action_me"].pop("raw_dir"), "datasets.action_me.raw_dir: missing required key"),
        (lambda p: p["datasets"]["action_me"]["labels"].update(question_patterns=["^what"]),
         "datasets.action_me.labels.question_patterns: applies to VQA-X layouts only"),
        (lambda p: p["saliency"].update(grid_sizes=[8, 8]), "saliency.grid_sizes: sizes must be distinct"),
        (lambda p: p["grid"].update(seeds=[]), "grid.seeds: need at least one seed"),
        (lambda p: p["grid"].update(seeds=[0, 1, 1]), "grid.seeds: seeds must be unique, [1] repeated"),
        (lambda p: p["grid"].update(seeds=[0, -2]), "grid.seeds: seeds must be >= 0, got [-2]"),
        (lambda p: p["grid"].update(seeds=[0, "one"]), "grid.seeds[1]: expected an integer, got 'one'"),
        (lambda p: p["grid"].update(seeds=1), "grid.seeds: expected a list, got int"),
        (lambda p: p["grid"].pop("seeds"), "grid.seeds: missing required key"),
    ],
)
def test_bad_params_name_the_key(repo, tmp_path, mutate, message):
    params = default_params(repo)
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_unparsable_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "split: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)
