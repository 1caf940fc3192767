"""The ablation sweep through Prefect, for real: a server on loopback, `pipeline/serve.py` serving the
project's deployments, `prefect deployment run megl/ablation --watch` on a tiny grid (the
`ablation_sweep` fixture, tests/sweep_support.py), then a second run in which one variant fails."""

import json
import subprocess
import os
import sys

import pytest
import yaml

from sweep_support import GRID, VENV_BIN

RUNS = [f"object_me/resnet18/{v}/s0" for v in GRID["variants"]]


@pytest.fixture(scope="module")
def pipeline_modules(repo):
    sys.path.insert(0, str(repo / "pipeline"))
    try:
        import flows
        import serve

        yield flows, serve
    finally:
        sys.path.remove(str(repo / "pipeline"))


def test_serve_offers_megl_ablation_with_the_sweep_parameters(pipeline_modules):
    _, serve = pipeline_modules
    (deployment,) = serve.deployments()
    assert (deployment.flow_name, deployment.name) == ("megl", "ablation")
    assert deployment.entrypoint == "pipeline/flows.py:megl_sweep"
    schema = deployment._parameter_openapi_schema
    assert set(schema.properties) == {"datasets", "backbones", "variants", "seeds", "max_parallel"}
    assert not schema.required  # every parameter defaults to params.yaml


def test_stage_processes_get_the_parent_run_and_no_thread_share(pipeline_modules, repo, monkeypatch):
    """The thread count is params compute.threads in every stage process, as under DVC: the sweep
    must not hand out shares of the cores (that changed the numbers with max_parallel)."""
    flows, _ = pipeline_modules
    monkeypatch.setenv("MEGL_MLFLOW_PARENT_RUN_ID", "stale")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = flows.stage_env("parent-id")
    assert env["MEGL_MLFLOW_PARENT_RUN_ID"] == "parent-id"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(repo / "src")
    assert env["PATH"].split(os.pathsep)[0] == str(os.path.dirname(sys.executable))
    assert not {"OMP_NUM_THREADS", "MKL_NUM_THREADS"} & set(env)
    assert "MEGL_MLFLOW_PARENT_RUN_ID" not in flows.stage_env(None)  # no sweep run: top-level runs


def mlflow_client(sweep):
    from mlflow.tracking import MlflowClient

    return MlflowClient(sweep.mlflow_uri)


def parent_of(client, flow_run_id):
    experiment = client.get_experiment_by_name("megl")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    children = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, {run.info.run_name: run for run in children}


@pytest.mark.slow
def test_served_deployment_runs_the_sweep(ablation_sweep):
    sweep = ablation_sweep
    run = sweep.flow_run(sweep.flow_run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["parameters"] == {**GRID, "max_parallel": 2}
    assert "Completed" in sweep.cli_output

    tasks = {t["name"]: t for t in sweep.task_runs(sweep.flow_run_id)}
    assert set(tasks) == {"data", "tables", *RUNS}, sorted(tasks)
    assert all(t["state_type"] == "COMPLETED" for t in tasks.values())

    # the stages' outputs, for the sweep's runs only (data: only the sweep's dataset was built)
    work = sweep.work
    for name in RUNS:
        test = json.loads((work / "metrics" / name / "test.json").read_text())
        assert 0 <= test["accuracy"] <= 1 and test["seed"] == 0
        assert (work / "metrics" / name / "train.json").is_file()
        assert (work / "models" / name / "model.safetensors").is_file()
    assert (work / "data/object_me/saliency").is_dir() and not (work / "data/action_me").exists()
    (tables,) = (work / "results" / "sweeps").glob("*/tables")
    assert "| ResNet18 (tiny) | MEGL |" in (tables / "table2.md").read_text()

    # MLflow: one parent run for the sweep, a finished child per run, evaluation inside the child
    client = mlflow_client(sweep)
    parent, children = parent_of(client, sweep.flow_run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == f"sweep {run['name']}"
    assert parent.data.tags["sweep.variants"] == "baseline,megl" and parent.data.tags["prefect.deployment"] == "ablation"
    assert parent.data.metrics["runs_finished"] == 2 and parent.data.metrics["runs_failed"] == 0
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.json", "tables"} <= parent_files
    assert sorted(children) == RUNS
    for name, child in children.items():
        d, b, v, s = name.split("/")
        assert child.info.status == "FINISHED"
        assert child.data.tags.items() >= {"dataset": d, "backbone": b, "variant": v, "seed": "0"}.items()
        assert 0 <= child.data.metrics["test/accuracy"] <= 1 and "val_accuracy" in child.data.metrics
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"cam_gallery.png", "explanations.json", "evaluation", "model"} <= files


@pytest.mark.slow
def test_a_failed_variant_fails_its_task_not_the_others(ablation_sweep):
    """Java gets no time on purpose (text variants fail in evaluation, baseline has no text metrics):
    the failed run is retried (params sweep.retries), the other run completes, the tables are built
    from it, and the flow run ends Failed with the summary."""
    sweep = ablation_sweep
    params_file = sweep.work / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["evaluate"]["java_timeout_s"] = 0.001  # valid params; only runs with text metrics time out (Java)
    params["sweep"].update(retries=1, retry_delay_s=0)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out, run_id = sweep.run_deployment({**GRID, "variants": ["baseline", "text"], "seeds": [1]})
    finally:
        params_file.write_text(original)
    assert out.returncode == 1, out.stdout + out.stderr
    run = sweep.flow_run(run_id)
    assert run["state"]["type"] == "FAILED"
    message = run["state"]["message"]
    assert "1 of 2 runs finished" in message and "FAILED: object_me/resnet18/text/s1" in message
    assert "did not finish within 0.001 s" in message  # the tail of the failed stage's output

    tasks = {t["name"]: t for t in sweep.task_runs(run_id)}
    assert tasks["object_me/resnet18/baseline/s1"]["state_type"] == "COMPLETED"
    failed = tasks["object_me/resnet18/text/s1"]
    assert failed["state_type"] == "FAILED" and failed["run_count"] == 2  # one retry
    assert tasks["tables"]["state_type"] == "COMPLETED"
    assert (sweep.work / "metrics/object_me/resnet18/baseline/s1/test.json").is_file()
    assert not (sweep.work / "metrics/object_me/resnet18/text/s1/test.json").exists()

    client = mlflow_client(sweep)
    parent, children = parent_of(client, run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["runs_finished"] == 1 and parent.data.metrics["runs_failed"] == 1
    summary = json.loads(open(client.download_artifacts(parent.info.run_id, "summary.json", str(sweep.work))).read())
    assert summary["finished"] == ["object_me/resnet18/baseline/s1"] and list(summary["failed"]) == ["object_me/resnet18/text/s1"]
    assert children["object_me/resnet18/baseline/s1"].info.status == "FINISHED"
    assert "test/accuracy" in children["object_me/resnet18/baseline/s1"].data.metrics


@pytest.mark.slow
def test_dvc_the_sweep_and_a_stage_by_hand_give_the_same_bytes(ablation_sweep, tmp_path):
    """The sweep ran 2 runs at once (max_parallel 2) on this 2-core machine; `dvc repro` and the
    stage scripts by hand with OMP_NUM_THREADS=1 in the environment retrain the same run: the
    metrics are byte-identical, because every stage computes with params compute.threads threads."""
    sweep = ablation_sweep
    work = sweep.work
    name = "object_me/resnet18/megl/s0"  # every loss term, and the text metrics
    files = [work / "metrics" / name / f for f in ("train.json", "test.json")]
    swept = {p: p.read_bytes() for p in files}
    env = {k: v for k, v in sweep.env.items() if k != "MEGL_MLFLOW_PARENT_RUN_ID"}
    env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([str(VENV_BIN / "dvc"), "repro", "evaluate@object_me-resnet18-megl-0"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Running stage 'train@object_me-resnet18-megl-0'" in out.stdout  # DVC retrained it (its lock had no such run)
    assert {p: p.read_bytes() for p in files} == swept
    for stage in ("train", "evaluate"):
        cmd = [sys.executable, f"stages/{stage}.py", "--dataset", "object_me", "--backbone", "resnet18", "--variant", "megl"]
        out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
    assert {p: p.read_bytes() for p in files} == swept
