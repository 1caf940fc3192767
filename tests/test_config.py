import re
import textwrap

import pytest
import yaml

from megl.config import ConfigError, load_params
from megl.pipeline_checks import check_pipeline


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def default_params(repo):
    return yaml.safe_load((repo / "params.yaml").read_text())


def test_repository_params_load(repo):
    params = load_params(repo / "params.yaml")
    assert set(params.datasets) == {"object_me", "action_me", "object_me_varied", "action_me_varied"}
    assert params.decoys == {}  # DecoyFMNIST: configs/decoy_fmnist.yaml, a DVC experiment of its own
    assert params.grid.datasets == ("object_me_varied",)
    # every method of the paper's tables is in the default grid
    assert set(params.grid.variants) == {"megl", "visual_text", "text", "visual", "baseline", "gradia", "haics",
                                         "res_g", "res_l", "cdep", "rrr", "llava", "finetune_cot"}
    assert params.variant("res_l").cam_mode == "detached" and params.variant("rrr").weight == 8.86  # fair-1 selected
    assert params.variant("finetune_cot").method == "finetune_cot" and params.variant("gradia").method == "gradia"
    assert params.variant("megl").method == "megl"  # the default method
    assert params.synthetic_source("object_me_varied").geometry == "varied"
    assert params.synthetic_source("object_me").geometry == "centre"
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
        (lambda p: p["grid"].update(variants=["megl", "gradai"]),
         "grid.variants: ['gradai'] not defined in the variants block (it defines: baseline, cdep, finetune_cot, gradia,"),
        (lambda p: p["grid"].update(seeds=[]), "grid.seeds: need at least one seed"),
        (lambda p: p["grid"].update(seeds=[0, 1, 1]), "grid.seeds: seeds must be unique, [1] repeated"),
        (lambda p: p["grid"].update(seeds=[0, -2]), "grid.seeds: seeds must be >= 0, got [-2]"),
        (lambda p: p["grid"].update(seeds=[0, "one"]), "grid.seeds[1]: expected an integer, got 'one'"),
        (lambda p: p["grid"].update(seeds=1), "grid.seeds: expected a list, got int"),
        (lambda p: p["grid"].pop("seeds"), "grid.seeds: missing required key"),
        (lambda p: p["train"].update(lr=float("inf")), "train.lr: must be a finite number, got inf"),
        (lambda p: p["train"].update(lr=-0.1), "train.lr: must be > 0"),
        (lambda p: p["compute"].update(threads=0), "compute.threads: must be >= 1, got 0"),
        (lambda p: p.pop("compute"), "compute: missing required key"),
        (lambda p: p["text_head"].update(not_a_key=1), "text_head: unknown key(s) ['not_a_key']"),
        (lambda p: p["text_head"].update(profile="huge"), "text_head.profile: expected one of ['tiny', 'pretrained', 'paper']"),
        (lambda p: p["text_head"].update(profile="paper"), "text_head.clip_path: the 'paper' profile needs a local checkpoint"),
        (lambda p: p["text_head"].update(max_text_tokens=1), "text_head.max_text_tokens: must be >= 2"),
        (lambda p: p["backbones"]["resnet18"].update(grid=7), "backbones.resnet18.grid: 7 is not in saliency.grid_sizes"),
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


def test_params_read_as_dvc_writes_them(repo, tmp_path):
    """`dvc exp run -S` rewrites params.yaml in YAML 1.2 style: `- yes` / `- no` unquoted, `on`,
    exponents without a dot. Read as DVC reads it, these are strings and numbers, not booleans."""
    text = (repo / "params.yaml").read_text()
    text = text.replace('exclude_answers: ["yes", "no"]', "exclude_answers:\n      - yes\n      - no\n      - on")
    text = text.replace("lr: 6.32e-4 ", "lr: 632e-6 ")
    assert "- yes" in text and "lr: 632e-6 " in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    params = load_params(path)
    assert params.dataset("object_me").labels.exclude_answers == ("yes", "no", "on")
    assert params.train.lr == 0.000632


def test_pipeline_check_lists_every_missing_folder(repo, tmp_path):
    raw = default_params(repo)
    params = load_params(repo / "params.yaml")
    check_pipeline(params)  # the synthetic raw dirs do not exist yet in a clone: the synthesize stages write them
    raw["datasets"]["object_me"]["raw_dir"] = "data/raw/typo"
    raw["datasets"]["action_me"]["image_root"] = "/nowhere/images"
    raw["backbones"]["vit_b16"]["pretrained_path"] = "weights/vit"
    raw["grid"]["backbones"] = ["resnet18", "vit_b16"]  # only the grid's backbones are loaded
    raw["evaluate"]["clipscore_clip_path"] = "weights/clip"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        check_pipeline(load_params(path), path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    for expected in (f"datasets.object_me.raw_dir: {tmp_path}/data/raw/typo does not exist",
                     "datasets.action_me.image_root: /nowhere/images does not exist",
                     f"backbones.vit_b16.pretrained_path: {tmp_path}/weights/vit does not exist",
                     f"evaluate.clipscore_clip_path: {tmp_path}/weights/clip does not exist"):
        assert expected in message
    (tmp_path / "data/raw/typo").mkdir(parents=True)
    (tmp_path / "weights/vit").mkdir(parents=True)
    with pytest.raises(ConfigError, match="image_root") as err:
        check_pipeline(load_params(path), path)
    assert "raw_dir" not in str(err.value) and "pretrained_path" not in str(err.value)


def test_validate_stage(repo, tmp_path):
    import subprocess
    import sys

    raw = default_params(repo)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = subprocess.run([sys.executable, "stages/validate.py", "--params", str(path)], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "data/params.ok").read_text() == "params.yaml passed stages/validate.py\n"
    raw["train"]["epochs"] = 0
    path.write_text(yaml.safe_dump(raw))
    out = subprocess.run([sys.executable, "stages/validate.py", "--params", str(path)], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"validate: {path}: train.epochs: must be >= 1" in out.stderr


@pytest.mark.parametrize(
    "variant, message",
    [
        ({"method": "gradia", "visual": True}, "variants.bad: method 'gradia' does not read ['visual']"),
        ({"method": "llava", "visual": True}, "method 'llava' does not read ['visual']"),
        ({"method": "rrr", "weight": -1.0}, "must be >= 0"),
        ({"method": "res_x"}, "variants.bad.method: unknown method 'res_x'; the registry (megl.methods) has"),
        ({"mllm": {"profile": "tiny"}}, "method 'megl' does not read ['mllm']"),
        ({"method": "llava", "mllm": {"profile": "paper"}}, "variants.bad.mllm.model_path"),
        ({"method": "llava", "mllm": {"lora_rank": 8}}, "unknown key(s) ['lora_rank']"),
        ({"loss": "gradia"}, "unknown key(s) ['loss']"),
        ({"method": "gradia", "text_head": {"encoder_image_size": 112}}, "variants.bad.text_head: set, but the variant trains no text head"),
        ({"text": True, "text_head": {"encoder_size": 112}}, "variants.bad.text_head: unknown key(s) ['encoder_size']"),
    ],
)
def test_bad_variant_blocks_name_the_key(repo, tmp_path, variant, message):
    raw = default_params(repo)
    raw["variants"]["bad"] = variant
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=re.escape(message)):  # the schema, else the validate stage's checks
        check_pipeline(load_params(tmp_path / "params.yaml"))


def test_decoy_overlay_makes_valid_params(repo, tmp_path):
    """make decoy-run's experiment: params.yaml with configs/decoy_fmnist.yaml's blocks added, as
    the -S overrides of megl.dvc_overlay add them."""
    from megl.dvc_overlay import overrides

    base = default_params(repo)
    overlay = yaml.safe_load((repo / "configs/decoy_fmnist.yaml").read_text())
    flags = overrides(base, overlay)
    assert flags[0].startswith("+decoys.decoy_fmnist={source_dir: \"/usr/share/datasets/fashion-mnist\"")
    assert flags[1].startswith("+datasets.decoy_fmnist={layout: \"generic\"")
    assert flags[2] == 'grid.datasets=["decoy_fmnist"]'
    base["decoys"] |= overlay["decoys"]
    base["datasets"] |= overlay["datasets"]
    base["grid"] |= overlay["grid"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base))
    params = load_params(tmp_path / "params.yaml")
    assert params.dataset("decoy_fmnist").layout == "generic" and params.dataset("decoy_fmnist").split_from == "source"
    assert params.decoys["decoy_fmnist"].train_samples == 6000 and params.grid.datasets == ("decoy_fmnist",)


def test_pretrained_overlay_makes_valid_params_and_names_make_weights(repo, tmp_path):
    """make pretrained-run's experiment: DINOv2-S/14 as a ViT backbone (arch vit), SmolLM2 as the
    text head's LLM; without `make weights` the path check names the missing folders."""
    from megl.pipeline_checks import check_pipeline
    from megl.dvc_overlay import overrides

    base = default_params(repo)
    overlay = yaml.safe_load((repo / "configs/pretrained.yaml").read_text())
    assert '+backbones.dinov2_s14={arch: "vit", profile: "paper", grid: 8, pretrained_path: "weights/dinov2-vits14"}' in overrides(base, overlay)
    for block in ("backbones", "datasets", "text_head", "train", "grid"):
        base[block] |= overlay[block]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base))
    params = load_params(tmp_path / "params.yaml")
    assert params.backbone("dinov2_s14").arch == "vit" and params.text_head.profile == "pretrained"
    assert params.dataset("object_me_varied_112").image_size == 112
    with pytest.raises(ConfigError, match=r"backbones.dinov2_s14.pretrained_path: .*weights/dinov2-vits14 does not exist.*make weights") as err:
        check_pipeline(params, tmp_path / "params.yaml")
    assert "text_head.llm_path" in str(err.value) and "weights/smollm2-135m-instruct" in str(err.value)


def test_a_variants_text_head_values_reach_its_runs_only(repo, tmp_path):
    """An ablation arm's encoder of I ⊙ Â: the variant's text_head values over the block, paths from
    the params file's folder, checked like the block's (a missing folder named with its variant)."""
    raw = default_params(repo)
    raw["variants"]["megl_dino"] = dict(raw["variants"]["megl"], text_head={"encoder_path": "weights/none", "encoder_image_size": 112})
    raw["grid"]["variants"] = ["megl", "megl_dino"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    head = params.for_run("megl_dino", 1).text_head
    assert head.encoder_path == str(tmp_path / "weights" / "none") and head.encoder_image_size == 112
    assert head.prefix_grid == params.text_head.prefix_grid
    assert params.for_run("megl", 1).text_head == params.text_head
    with pytest.raises(ConfigError, match=r"variants.megl_dino.text_head.encoder_path: .*weights/none does not exist"):
        check_pipeline(params, tmp_path / "params.yaml")
