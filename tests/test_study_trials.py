"""Trial hyperparameters: reproducible from the search seed, inside the declared space, and written
into an ordinary variant block (megl.study.sampling, megl.study.trials)."""

import pytest

from megl import methods
from megl.config import ConfigError, VariantConfig
from megl.methods.base import LogUniform
from megl.study.sampling import draw
from megl.study.trials import search_space, trial_block, trial_name, trials_of


def test_draws_are_reproducible_and_inside_the_space():
    space = methods.get("gradia").search_space()
    first = [draw(space, 0, "gradia", k) for k in range(8)]
    assert first == [draw(space, 0, "gradia", k) for k in range(8)]  # same seed, same values
    assert len({tuple(d.values()) for d in first}) == 8  # the trials differ
    assert first != [draw(space, 1, "gradia", k) for k in range(8)]  # another search seed, other values
    for d in first:
        assert 1e-4 <= d["train.lr"] <= 1e-2 and 0.01 <= d["variant.weight"] <= 100


def test_a_hyperparameter_added_to_a_space_leaves_the_others_draws():
    space = {"train.lr": LogUniform(1e-4, 1e-2)}
    wider = space | {"variant.weight": LogUniform(0.1, 10)}
    assert draw(space, 0, "x", 3)["train.lr"] == draw(wider, 0, "x", 3)["train.lr"]


def test_the_plain_backbone_draws_only_the_learning_rate():
    assert set(search_space(VariantConfig())) == {"train.lr"}
    assert set(search_space(VariantConfig(visual=True, consistency=True, text=True))) == {
        "train.lr", "train.lambda_visual", "train.lambda_textual"}
    assert set(search_space(VariantConfig(visual=True))) == {"train.lr", "train.lambda_visual"}


def test_trial_blocks_are_variant_blocks():
    block = {"method": "cdep", "weight": 1.0}
    out = trial_block(block, {"variant.weight": 250.0, "train.lr": 0.003})
    assert out == {"method": "cdep", "weight": 250.0, "train": {"lr": 0.003}} and block == {"method": "cdep", "weight": 1.0}
    trials = trials_of("megl", VariantConfig(visual=True, consistency=True, text=True),
                       {"visual": True, "text": True, "consistency": True}, 0, 3)
    assert list(trials) == ["megl_t00", "megl_t01", "megl_t02"]
    k, values, blk = trials["megl_t01"]
    assert k == 1 and blk["train"] == {key.split(".", 1)[1]: v for key, v in values.items()}
    with pytest.raises(ValueError, match="expected variant"):
        trial_block({}, {"evaluate.x": 1.0})


def test_a_variants_train_values_reach_its_runs_only(tmp_path):
    import yaml

    from conftest import REPO
    from megl.config import load_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["variants"]["gradia"]["train"] = {"lr": 0.004, "epochs": 7}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    params = load_params(path)
    run = params.for_run("gradia", 3).train
    assert (run.lr, run.epochs, run.seed) == (0.004, 7, 3) and isinstance(run.epochs, int)
    assert params.for_run("haics", 3).train.lr == raw["variants"]["haics"]["train"]["lr"]  # its own, not gradia's
    assert params.for_run("megl", 3).train.lr == raw["train"]["lr"]  # no train: block: the global one
    for bad, message in (({"lr": -1}, "variants.gradia.train.lr: must be > 0"),
                         ({"lrr": 0.1}, r"variants.gradia.train: unknown key\(s\) \['lrr'\]"),
                         ({"seed": 2}, "variants.gradia.train.seed: a run's seed comes from grid.seeds"),
                         ({"epochs": "ten"}, "variants.gradia.train.epochs: expected an integer")):
        raw["variants"]["gradia"]["train"] = bad
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match=message):
            load_params(path)


def test_the_runs_params_of_one_dataset_of_the_study_are_valid(tmp_path):
    """configs/study.yaml over params.yaml, narrowed to one dataset's search: what the validate stage
    of the study's worktree checks."""
    import sys

    import yaml

    from conftest import REPO
    from megl.config import load_params

    sys.path.insert(0, str(REPO / "pipeline"))
    import scratch
    import study

    overlay = yaml.safe_load((REPO / "configs" / "study.yaml").read_text())
    base = (REPO / "params.yaml").read_text()
    params = study.load_study(study.study_params_text(base, overlay), REPO / "configs" / "study.yaml")
    plan = study.search_plan(params, yaml.safe_load(study.study_params_text(base, overlay))["variants"])
    blocks = {n: b for trials in plan.values() for n, (_, _, b) in trials.items()}
    assert len(blocks) == 8 * len(params.study.variants)
    for d in params.study.datasets:
        grid = {"datasets": [d], "backbones": ["resnet18"], "variants": list(blocks), "seeds": [0]}
        text = scratch.narrowed_params(study.study_params_text(base, overlay, blocks, grid), grid)
        (tmp_path / "params.yaml").write_text(text)
        runs = load_params(tmp_path / "params.yaml")
        assert list(runs.datasets) == [d] and runs.study is None and runs.train.checkpoint == "last"
        t = runs.for_run("megl_t03", 0).train
        assert (t.lr, t.lambda_visual, t.lambda_textual) == tuple(plan["megl"]["megl_t03"][1][k] for k in (
            "train.lr", "train.lambda_visual", "train.lambda_textual"))


def test_the_study_declares_its_methods_blocks_whole():
    """params.yaml's default grid carries the values fair-1 selected; the study's variant blocks replace
    params.yaml's (not laid key by key over them), so the search starts from the declared blocks and
    its trials, protocol and records are the same whatever the defaults say."""
    import sys

    import yaml

    from conftest import REPO

    sys.path.insert(0, str(REPO / "pipeline"))
    import study

    overlay = yaml.safe_load((REPO / "configs" / "study.yaml").read_text())
    base = (REPO / "params.yaml").read_text()
    merged = yaml.safe_load(study.study_params_text(base, overlay))
    assert "train" in yaml.safe_load(base)["variants"]["gradia"]  # the defaults: the selected values
    for v in merged["study"]["variants"]:
        assert merged["variants"][v] == overlay["variants"][v]
    changed = yaml.safe_load(base)
    changed["variants"]["gradia"]["train"]["lr"] = 0.5  # other defaults: the study does not see them
    changed["train"].update(lr=0.5, lambda_visual=50.0)
    assert study.protocol_digest(yaml.safe_load(study.study_params_text(yaml.safe_dump(changed), overlay))) == \
        study.protocol_digest(merged)


def test_the_factorial_extends_the_study_and_its_arms_are_valid_runs(tmp_path):
    """configs/factorial.yaml: the study's blocks with its arms laid over them, no search; each arm at a
    fair-1 trial's values is a valid variant of every dataset's runs (what its worktree validates)."""
    import sys

    import yaml

    from conftest import REPO
    from megl.config import load_params

    sys.path.insert(0, str(REPO / "pipeline"))
    import scratch
    import study

    overlay = study.read_overlay(REPO / "configs" / "factorial.yaml")
    assert overlay["train"]["visual_l1"] == "sum" and overlay["synthetic"]["object_me_varied"]["validation"] == "in_distribution"
    base = (REPO / "params.yaml").read_text()
    text = study.study_params_text(base, overlay)
    params = study.load_study(text, REPO / "configs" / "factorial.yaml")
    assert params.study.name == "megl-factorial-1" and params.study.hyperparameters_from.study == "fair-1"
    assert params.study.trials == 0 and params.study.baseline == "megl"
    assert study.search_plan(params, yaml.safe_load(text)["variants"]) == {v: {} for v in params.study.variants}

    values = draw(search_space(params.variant("megl")), 0, "megl", 3)
    blocks = {trial_name(v, 3): trial_block(yaml.safe_load(text)["variants"][v], values) for v in params.study.variants}
    for d in params.study.datasets:
        grid = {"datasets": [d], "backbones": ["resnet18"], "variants": list(blocks), "seeds": [1]}
        (tmp_path / "params.yaml").write_text(scratch.narrowed_params(study.study_params_text(base, overlay, blocks, grid), grid))
        runs = load_params(tmp_path / "params.yaml")
        assert runs.for_run("megl_l1_mean_t03", 1).train.visual_l1 == "mean"
        assert runs.for_run("megl_t03", 1).train.visual_l1 == "sum"
        assert runs.for_run("megl_kl_shuffled_t03", 1).train.lambda_visual == values["train.lambda_visual"]
        assert runs.for_run("megl_dinov2_t03", 1).text_head.encoder_path == str(tmp_path / "weights" / "dinov2-vits14")
        assert runs.for_run("megl_multilayer_l1_t03", 1).train.explainer_layers == 1


def test_an_ablation_searches_nothing_and_names_another_study():
    from megl.config import SelectionConfig, StudyConfig, StudySource

    def make(**kw):
        fields = dict(name="a", datasets=("d",), backbones=("b",), variants=("megl",), baseline="megl", search_seed=0,
                      trials=0, final_seeds=(1,), selection=SelectionConfig(), hyperparameters_from=StudySource("fair-1", "megl"))
        StudyConfig(**(fields | kw)).validate("study")

    make()
    with pytest.raises(ConfigError, match="study.trials: an ablation at fair-1's selected values searches nothing"):
        make(trials=8)
    with pytest.raises(ConfigError, match="study.hyperparameters_from.study: another study's name"):
        make(name="fair-1")
    with pytest.raises(ConfigError, match="study.trials: must be >= 1"):
        make(hyperparameters_from=None)


def test_a_code_check_samples_every_method_it_would_carry_over(tmp_path):
    """Records of code A (methods m1, m2) were shown the same as code B's (m3); a check of B against
    the current code C carries all of them over, so its sample holds m1, m2 and m3."""
    import json
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "pipeline"))
    import study

    def rec(code, method, k):
        return {"code": code, "protocol": "p", "method": method, "run": f"d/b/{method}_t{k:02d}/s0", "phase": "search"}

    lines = [rec("A", "m1", 0), rec("A", "m2", 0), rec("B", "m3", 0), rec("other", "m9", 0) | {"protocol": "q"}]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (tmp_path / "code.jsonl").write_text(json.dumps({"from": "A", "to": "B", "identical": True, "runs": []}) + "\n")
    records = study.Records(tmp_path, "C", "p")
    assert records.current() == []
    older = records.older()
    assert list(older) == ["B", "A"]  # newest code first; A's list is the same class
    assert sorted(r["method"] for r in older["B"]) == ["m1", "m2", "m3"]
    # a report between runs shows them once, not once per code that holds them
    assert sorted(r["method"] for r in records.unchecked()) == ["m1", "m2", "m3"]
    records.add_check({"from": "B", "to": "C", "identical": True, "runs": []})
    assert sorted(r["method"] for r in records.current()) == ["m1", "m2", "m3"] and records.older() == {}
