"""A sweep across hosts, for real on loopback (tests/cluster_support.py): PostgreSQL behind the Prefect
server and the MLflow tracking server (artifacts proxied), two workers in two clones with their own
PREFECT_HOME and DVC cache, sharing only the servers' HTTP APIs and the DVC remote folder.

- A 4-cell sweep spreads over both workers; its test.json files are byte-identical to a local
  `dvc repro` of the same cells in a clone that shares nothing; the controller's checkout gets the
  results from the remote without training; MLflow holds one parent and a child per cell.
- A worker SIGKILLed mid-run (its whole process tree, as when a host dies): its flow run is marked
  Crashed (no heartbeat), the cell runs again on the other worker, the sweep completes with the
  same bytes.
- A cell given up while it still runs (marked Crashed by hand, as a lost heartbeat would) finishes
  twice: the sweep publishes it once (one MLflow child, the late attempt's runs deleted).
"""

import json
import os
import signal
import sys
import time

import pytest

from cluster_support import dvc, start_cluster, wait_until
from sweep_support import REPO, descendants, http_json

pytestmark = pytest.mark.slow

CELLS = {"datasets": ["object_me"], "backbones": ["resnet18"], "variants": ["baseline", "visual"]}


def names(grid: dict) -> list[str]:
    return [f"{d}/{b}/{v}/s{s}" for d in grid["datasets"] for b in grid["backbones"] for v in grid["variants"]
            for s in grid["seeds"]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"), workers=2)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def local(cluster):
    """A clone sharing nothing with the cluster (no remote, its own cache): `dvc repro` here is the
    local reference for the cells' bytes."""
    return cluster.clone("local", remote=False)


def local_test_json(cluster, local, grid: dict) -> dict[str, bytes]:
    params = local / "params.yaml"
    original = params.read_text()
    sys.path.insert(0, str(REPO / "pipeline"))
    import scratch

    params.write_text(scratch.with_grid(original, grid))
    env = {**cluster.env, "MLFLOW_TRACKING_URI": f"sqlite:///{local}/mlflow.db", "MEGL_ROOT": str(local)}
    dvc(local, env, "repro")
    params.write_text(original)
    return {name: (local / "metrics" / name / "test.json").read_bytes() for name in names(grid)}


def sweep_test_json(cluster, run_id: str, grid: dict) -> dict[str, bytes]:
    """The sweep's results brought into a fresh clone of the controller from the DVC remote alone."""
    (out,) = (cluster.controller / "results" / "sweeps").glob(f"*-{run_id[:8]}")
    clone = cluster.clone(f"pull-{run_id[:8]}")
    (clone / "params.yaml").write_text((out / "params.yaml").read_text())
    restored = dvc(clone, {**cluster.env, "MEGL_ROOT": str(clone)}, "repro", "--pull").stdout
    assert "Running stage 'train@" not in restored and "Running stage 'evaluate@" not in restored, restored[-3000:]
    return {name: (clone / "metrics" / name / "test.json").read_bytes() for name in names(grid)}


def test_a_sweep_across_two_workers_gives_the_local_bytes(cluster, local):
    from mlflow.tracking import MlflowClient

    grid = {**CELLS, "seeds": [0, 1]}
    started = time.monotonic()
    out, run_id = cluster.run_sweep({**grid, "max_parallel": 2})
    state = cluster.flow_run(run_id)["state"]  # its message names each failed cell and why
    assert out.returncode == 0 and state["type"] == "COMPLETED", str(state["message"]) + out.stdout[-3000:] + out.stderr[-3000:]
    cells = cluster.cell_runs(run_id)
    assert sorted(c["name"] for c in cells) == names(grid) and all(c["state_type"] == "COMPLETED" for c in cells)
    assert {c["parameters"]["commit"] for c in cells} == {cluster.commit}  # every flow run names its commit
    # both workers took cells: each clone's own cache holds run-cache entries
    for worker in cluster.workers:
        assert any((worker.clone / ".dvc" / "cache" / "runs").rglob("*")), f"{worker.clone} ran no cell"
    print(json.dumps({"sweep_4_cells_2_workers_s": round(time.monotonic() - started, 1)}))

    assert sweep_test_json(cluster, run_id, grid) == local_test_json(cluster, local, grid)

    client = MlflowClient(cluster.mlflow_uri)
    experiment = client.get_experiment_by_name("megl")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{run_id}'")
    assert parent.info.status == "FINISHED" and parent.data.tags["mlflow.source.git.commit"] == cluster.commit
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == names(grid)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    artifacts = {a.path for a in client.list_artifacts(children[0].info.run_id)}
    assert {"cam_gallery.png", "evaluation"} <= artifacts
    (output,) = client.get_run(children[0].info.run_id).outputs.model_outputs  # its MLflow model, through the server
    assert client.get_logged_model(output.model_id).artifact_location.startswith("mlflow-artifacts:")


def test_a_worker_killed_mid_run_is_replaced_and_the_bytes_stay(cluster, local):
    grid = {**CELLS, "seeds": [2]}
    _, run_id = cluster.run_sweep({**grid, "max_parallel": 2}, watch=False)

    def training(worker):
        return [p for p in descendants(worker.proc) if "stages/train.py" in " ".join(p.cmdline())]

    victim = wait_until("a worker training a cell", lambda: next((w for w in cluster.workers if training(w)), None), 600)
    tree = [victim.proc.pid, *(p.pid for p in descendants(victim.proc))]
    for pid in tree:  # the host dies: the worker and everything it started, at once
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    victim.proc.wait(timeout=30)

    final = wait_until("the sweep to end", lambda: cluster.flow_run(run_id)["state"]["type"] in ("COMPLETED", "FAILED",
                                                                                                 "CRASHED"), 1200, 5)
    assert final and cluster.flow_run(run_id)["state"]["type"] == "COMPLETED", cluster.flow_run(run_id)["state"]
    cells = cluster.cell_runs(run_id)
    crashed = [c for c in cells if c["state_type"] == "CRASHED"]
    assert len(crashed) == 1 and "no heartbeat" in (crashed[0]["state"]["message"] or "")
    completed = sorted(c["name"] for c in cells if c["state_type"] == "COMPLETED")
    assert completed == names(grid) and crashed[0]["name"] in completed  # run again, by the other worker
    assert sweep_test_json(cluster, run_id, grid) == local_test_json(cluster, local, grid)

    victim.start(f"commit-{cluster.commit[:12]}")  # the host is back


def test_a_cell_that_finishes_twice_is_published_once(cluster):
    """The cell is marked Crashed while it runs (a heartbeat lost in a network partition): the sweep
    submits it again; the first attempt still finishes, finds it was given up, and deletes its runs."""
    from mlflow.tracking import MlflowClient

    grid = {**CELLS, "variants": ["baseline"], "seeds": [3]}
    _, run_id = cluster.run_sweep({**grid, "max_parallel": 1}, watch=False)
    first = wait_until("the cell running", lambda: next((c for c in cluster.cell_runs(run_id)
                                                         if c["state_type"] == "RUNNING"), None), 600)
    http_json(f"{cluster.api}/flow_runs/{first['id']}/set_state",
              {"state": {"type": "CRASHED", "name": "Crashed", "message": "no heartbeat (forced by the test)"}, "force": True})
    wait_until("the sweep to end", lambda: cluster.flow_run(run_id)["state"]["type"] in ("COMPLETED", "FAILED"), 1200, 5)
    assert cluster.flow_run(run_id)["state"]["type"] == "COMPLETED"
    attempts = cluster.cell_runs(run_id)
    assert len(attempts) == 2 and attempts[1]["state_type"] == "COMPLETED"
    # the first attempt ran to its end and gave way (its state stays Crashed: it may not complete)
    wait_until("the first attempt's process to end", lambda: not any(
        first["id"] in " ".join(p.cmdline()) for w in cluster.workers for p in descendants(w.proc)), 600, 2)

    client = MlflowClient(cluster.mlflow_uri)
    experiment = client.get_experiment_by_name("megl")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{run_id}'")
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert [r.info.run_name for r in children] == names(grid)  # once
    assert children[0].data.tags["prefect.cell_flow_run_id"] == attempts[1]["id"]
    summary = json.loads(open(client.download_artifacts(parent.info.run_id, "summary.json", str(cluster.base))).read())
    assert summary["finished"] == names(grid) and summary["cell_flow_runs"] == {names(grid)[0]: attempts[1]["id"]}
