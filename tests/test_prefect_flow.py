"""The ablation sweep through Prefect, for real: a server on loopback, `pipeline/serve.py` serving the
sweep with a worker of the pool `megl` in the same clone, `prefect deployment run megl/ablation
--watch` on a tiny grid (the `ablation_sweep` fixture, tests/sweep_support.py), then a second run in
which one variant fails. Each cell is a flow run of megl-cell/pool that runs its stages through DVC
in a worktree; the workspace's own outputs are never written."""

import json
import os
import shutil
import subprocess
import sys

from pathlib import Path

import pytest
import yaml
from prefect.exceptions import ParameterTypeError

from megl.config import load_params
from sweep_support import SWEEP, VENV_BIN, digest, git, http_json

RUNS = [f"object_me/resnet18/{v}/s1" for v in SWEEP["variants"]]


@pytest.fixture(scope="module")
def pipeline_modules(repo):
    sys.path.insert(0, str(repo / "pipeline"))
    try:
        import flows
        import serve

        yield flows, serve
    finally:
        sys.path.remove(str(repo / "pipeline"))


def test_serve_offers_megl_ablation_and_the_study_with_their_parameters(pipeline_modules):
    _, serve = pipeline_modules
    deployment, study = serve.deployments()
    assert (deployment.flow_name, deployment.name) == ("megl", "ablation")
    assert deployment.entrypoint == "pipeline/flows.py:megl_sweep"
    schema = deployment._parameter_openapi_schema
    assert set(schema.properties) == {"datasets", "backbones", "variants", "seeds", "max_parallel"}
    assert not schema.required  # every parameter defaults to params.yaml
    assert (study.flow_name, study.name, study.entrypoint) == ("megl-study", "fair", "pipeline/flows.py:megl_study")
    assert set(study._parameter_openapi_schema.properties) == {"study", "max_runs", "max_parallel"}


def test_the_parameter_forms_describe_every_parameter_and_offer_the_defined_names(pipeline_modules, repo):
    """The UI's form of a deployment is its parameter schema: a description for every parameter, and
    the names params.yaml defines as the choices of datasets / backbones / variants (the API refuses
    any other, listing these: tests/test_prefect_server.py)."""
    flows, serve = pipeline_modules
    sweep, study = serve.deployments()
    for deployment in (sweep, study):
        properties = deployment._parameter_openapi_schema.properties
        assert all(p.get("description") for p in properties.values()), properties
    params = load_params(repo / "params.yaml")
    properties = sweep._parameter_openapi_schema.properties
    for block in ("datasets", "backbones", "variants"):
        (listed,) = [choice for choice in properties[block]["anyOf"] if choice.get("type") == "array"]
        assert listed["items"]["enum"] == sorted(getattr(params, block)), block
    with pytest.raises(ParameterTypeError, match="Input should be 'baseline'.*'visual_text'"):
        flows.megl_sweep.validate_parameters({"variants": ["megl", "megll"]})  # a run without the server, too


def test_prefect_toml_sends_the_bare_cli_to_env_sh_s_server(repo, monkeypatch):
    """From the repository root, without `. pipeline/env.sh`, the prefect CLI reads prefect.toml: the
    project's API and state, as env.sh sets them by default (no temporary server, no ~/.prefect)."""
    for name in [k for k in os.environ if k.startswith(("PREFECT_", "MEGL_PREFECT"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(repo)
    from prefect.settings import Settings

    settings = Settings()
    env_sh = subprocess.run(["sh", "-c", ". pipeline/env.sh && echo $PREFECT_API_URL $PREFECT_HOME"], cwd=repo,
                            env=dict(os.environ), capture_output=True, text=True, check=True)
    url, home = env_sh.stdout.split()
    assert str(settings.api.url) == url
    assert (repo / settings.home).resolve() == Path(home)
    assert (repo / settings.profiles_path).resolve() == Path(home) / "profiles.toml"


def test_the_cores_warning_counts_the_runs_at_once_not_max_parallel(pipeline_modules, tmp_path):
    """A one-run sweep said "2 runs x 2 threads > 2 cores": the warning counted max_parallel. A cell
    now counts the runs in its clone's worktrees whose owner process is alive."""
    flows, _ = pipeline_modules
    import scratch

    assert flows.shared_cores_warning(1, 2, 2) is None
    assert flows.shared_cores_warning(2, 2, 2) == (
        "2 runs at once on this host x compute.threads 2 > 2 cores: they share the cores (slower, the same numbers)")
    cells = tmp_path / scratch.CELLS
    cells.mkdir(parents=True)
    ended = subprocess.Popen(["true"])
    ended.wait()
    (cells / f"a{scratch.OWNER}").write_text(str(os.getpid()))
    (cells / f"b{scratch.OWNER}").write_text(str(ended.pid))  # a cell killed outright
    assert scratch.running_worktrees(tmp_path) == 1


def test_the_cell_deployment_runs_in_the_workers_own_clone(pipeline_modules):
    """megl-cell/pool's pull step is resolved on the worker ($MEGL_ROOT: its clone), never the path of
    the host that registered it."""
    flows, serve = pipeline_modules
    spec = serve.cell_deployment_spec()
    assert (spec["name"], spec["work_pool_name"], spec["entrypoint"]) == ("pool", "megl", "pipeline/flows.py:megl_cell")
    assert spec["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $MEGL_ROOT }}"}}]
    assert set(spec["parameter_openapi_schema"]["properties"]) == {
        "commit", "params_yaml", "dataset", "backbone", "variant", "seed", "mlflow_tracking_uri", "mlflow_parent_run_id"}
    assert flows.queue_name("0123456789abcdef0123") == "commit-0123456789ab"


def test_a_worker_at_another_commit_refuses_a_cell(pipeline_modules):
    """The queue of a commit reaches only workers started at it; a cell that reaches a clone at another
    commit anyway (its checkout moved) is refused before anything runs: no mixed code in one table."""
    flows, _ = pipeline_modules
    with pytest.raises(flows.CellRefused, match="a worker runs only its own commit"):
        flows.megl_cell.fn("0" * 40, "", "object_me", "resnet18", "baseline", 0)


def test_stage_processes_get_the_parent_run_and_no_thread_share(pipeline_modules, repo, monkeypatch):
    """The thread count is params compute.threads in every stage process, as under DVC: the sweep
    must not hand out shares of the cores (that changed the numbers with max_parallel). The stages
    run this venv's python ($MEGL_PYTHON: a worktree has no .venv) and log to the sweep's store."""
    flows, _ = pipeline_modules
    monkeypatch.setenv("MEGL_MLFLOW_PARENT_RUN_ID", "stale")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    env = flows.stage_env("parent-id", "sqlite:////controller/mlflow.db")
    assert env["MEGL_MLFLOW_PARENT_RUN_ID"] == "parent-id"
    assert env["MEGL_PYTHON"] == sys.executable and "PYTHONPATH" not in env
    assert env["PATH"].split(os.pathsep)[0] == str(os.path.dirname(sys.executable))
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:////controller/mlflow.db"
    assert not {"OMP_NUM_THREADS", "MKL_NUM_THREADS"} & set(env)
    assert "MEGL_MLFLOW_PARENT_RUN_ID" not in flows.stage_env(None)  # no sweep run: top-level runs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")  # the worker's own (a shared server) wins
    assert flows.stage_env(None, "sqlite:////controller/mlflow.db")["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"


def mlflow_client(sweep):
    from mlflow.tracking import MlflowClient

    return MlflowClient(sweep.mlflow_uri)


def parent_of(client, flow_run_id):
    experiment = client.get_experiment_by_name("megl")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    children = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, {run.info.run_name: run for run in children}


def artifacts(sweep, flow_run_id):
    """The sweep flow run's markdown report and its table of runs, as the Prefect API serves them."""
    found = {a["key"]: a for a in http_json(f"{sweep.api}/artifacts/filter",
                                            {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})}
    table = found["megl-sweep-runs"]["data"]
    return found["megl-sweep-report"], json.loads(table) if isinstance(table, str) else table


@pytest.mark.slow
def test_served_deployment_runs_the_sweep(ablation_sweep):
    sweep = ablation_sweep
    run = sweep.flow_run(sweep.flow_run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["parameters"] == {**SWEEP, "max_parallel": 2}
    assert "Completed" in sweep.cli_output

    # one megl-cell flow run per run of the grid, on the pool's queue of this commit
    commit = git(sweep.work, "rev-parse", "HEAD").strip()
    cells = sweep.cell_runs(sweep.flow_run_id)
    assert sorted(c["name"] for c in cells) == RUNS
    assert all(c["state_type"] == "COMPLETED" and c["work_queue_name"] == f"commit-{commit[:12]}" for c in cells)
    assert all(c["parameters"]["commit"] == commit for c in cells)

    # the workspace's own outputs are untouched; the sweep's tables and params are in results/sweeps/
    work = sweep.work
    assert digest(work) == sweep.before
    assert git(work, "status", "--porcelain") == ""  # dvc.lock, metrics, params: as committed
    (out,) = (work / "results" / "sweeps").glob(f"*-{sweep.flow_run_id[:8]}")  # other modules' sweeps too
    assert "| ResNet18 (tiny) | MEGL |" in (out / "tables" / "table2.md").read_text()
    assert yaml.safe_load((out / "params.yaml").read_text())["grid"]["seeds"] == [1]
    assert not list((work / ".dvc" / "tmp" / "cells").iterdir())  # the worktrees are gone
    # the cells pushed their results and run-cache to the DVC remote
    assert (work / "dvc-remote" / "files").is_dir() and (work / "dvc-remote" / "runs").is_dir()

    # the UI's Artifacts tab: the report (outcome, MLflow, the tables) and a table of the runs
    report, runs = artifacts(sweep, sweep.flow_run_id)
    assert "2 of 2 runs finished." in report["data"] and "| ResNet18 (tiny) | MEGL |" in report["data"]
    assert "MLflow: parent run" in report["data"]
    assert sorted((r["run"], r["state"]) for r in runs) == [(name, "finished") for name in RUNS]

    # MLflow: one parent run for the sweep, a finished child per run, evaluation inside the child
    client = mlflow_client(sweep)
    parent, children = parent_of(client, sweep.flow_run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == f"sweep {run['name']}"
    assert parent.data.tags["sweep.variants"] == "baseline,megl" and parent.data.tags["prefect.deployment"] == "ablation"
    assert parent.data.tags["mlflow.source.git.commit"] == commit
    assert parent.data.metrics["runs_finished"] == 2 and parent.data.metrics["runs_failed"] == 0
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.json", "tables"} <= parent_files
    assert sorted(children) == RUNS
    for name, child in children.items():
        d, b, v, s = name.split("/")
        assert child.info.status == "FINISHED"
        assert child.data.tags.items() >= {"dataset": d, "backbone": b, "variant": v, "seed": "1"}.items()
        assert 0 <= child.data.metrics["test/accuracy"] <= 1 and "val_accuracy" in child.data.metrics
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"cam_gallery.png", "explanations.json", "evaluation"} <= files
        assert len(client.get_run(child.info.run_id).outputs.model_outputs) == 1  # its MLflow model


@pytest.mark.slow
def test_a_failed_variant_fails_its_cell_not_the_others(ablation_sweep):
    """Java gets no time on purpose (text variants fail in evaluation, baseline has no text metrics):
    the failed cell is submitted again (params sweep.retries), the other completes, the tables are
    built from it, and the flow run ends Failed with the summary. The params are the checkout's, not
    committed: the sweep passes them to its cells."""
    sweep = ablation_sweep
    params_file = sweep.work / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["evaluate"]["java_timeout_s"] = 0.001  # valid params; only runs with text metrics time out (Java)
    params["sweep"].update(retries=1, retry_delay_s=0)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out, run_id = sweep.run_deployment({**SWEEP, "variants": ["baseline", "text"], "seeds": [2]})
    finally:
        params_file.write_text(original)
    assert out.returncode == 1, out.stdout + out.stderr
    run = sweep.flow_run(run_id)
    assert run["state"]["type"] == "FAILED"
    message = run["state"]["message"]
    assert "1 of 2 runs finished" in message and "FAILED: object_me/resnet18/text/s2" in message
    assert "did not finish within 0.001 s" in message  # the tail of the failed stage's output
    report, runs = artifacts(sweep, run_id)
    assert "## Failed: object_me/resnet18/text/s2" in report["data"] and "did not finish within 0.001 s" in report["data"]
    assert {r["run"]: r["state"] for r in runs} == {"object_me/resnet18/baseline/s2": "finished",
                                                    "object_me/resnet18/text/s2": "failed"}

    cells = sweep.cell_runs(run_id)
    states = sorted((c["name"], c["state_type"]) for c in cells)
    assert states == [("object_me/resnet18/baseline/s2", "COMPLETED"), ("object_me/resnet18/text/s2", "FAILED"),
                      ("object_me/resnet18/text/s2", "FAILED")]  # submitted again once
    (tables,) = (sweep.work / "results" / "sweeps").glob(f"*-{run_id[:8]}/tables")
    assert "| ResNet18 (tiny) | - |" in (tables / "table2.md").read_text()
    assert digest(sweep.work) == sweep.before

    client = mlflow_client(sweep)
    parent, children = parent_of(client, run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["runs_finished"] == 1 and parent.data.metrics["runs_failed"] == 1
    summary = json.loads(open(client.download_artifacts(parent.info.run_id, "summary.json", str(sweep.work))).read())
    assert summary["finished"] == ["object_me/resnet18/baseline/s2"] and list(summary["failed"]) == ["object_me/resnet18/text/s2"]
    assert children["object_me/resnet18/baseline/s2"].info.status == "FINISHED"
    assert "test/accuracy" in children["object_me/resnet18/baseline/s2"].data.metrics


@pytest.mark.slow
def test_the_sweep_into_the_workspace_from_the_cache_and_a_local_repro_give_the_same_bytes(ablation_sweep, tmp_path):
    """The sweep's cells ran in worktrees, 2 at once on this 2-core machine. Its saved params.yaml
    + `dvc repro --pull` bring it into the workspace from DVC's cache, training nothing; a fresh clone
    with an empty cache and no remote retrains the same runs with `dvc repro` and OMP_NUM_THREADS=1:
    the metrics are byte-identical, because every stage computes with params compute.threads threads."""
    sweep = ablation_sweep
    work = sweep.work
    (out,) = (work / "results" / "sweeps").glob(f"*-{sweep.flow_run_id[:8]}")
    shutil.copy(out / "params.yaml", work / "params.yaml")
    try:
        restored = sweep.dvc("repro", "--pull")
        assert "Running stage 'train@" not in restored.stdout and "Running stage 'evaluate@" not in restored.stdout
        files = [f"metrics/{name}/{f}" for name in RUNS for f in ("train.json", "test.json")]
        swept = {f: (work / f).read_bytes() for f in files}

        clone = tmp_path / "clone"
        git(tmp_path, "clone", "-q", str(work), str(clone))
        shutil.copy(out / "params.yaml", clone / "params.yaml")
        env = {k: v for k, v in sweep.env.items() if k != "MEGL_MLFLOW_PARENT_RUN_ID"}
        env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        subprocess.run([str(VENV_BIN / "dvc"), "remote", "remove", "storage"], cwd=clone, env=env, check=True,
                       capture_output=True)
        for name in RUNS:
            d, b, v, s = name.split("/")
            stage = f"evaluate@{d}-{b}-{v}-{s[1:]}"
            local = subprocess.run([str(VENV_BIN / "dvc"), "repro", stage], cwd=clone, env=env, capture_output=True,
                                   text=True, timeout=900)
            assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
            assert f"Running stage 'train@{d}-{b}-{v}-{s[1:]}'" in local.stdout  # trained here, from scratch
        assert {f: (clone / f).read_bytes() for f in files} == swept
    finally:
        sweep.restore_workspace()
