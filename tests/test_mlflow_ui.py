"""`make mlflow-ui` shows the sweep: a real MLflow server (the Makefile's command) on the Prefect
sweep's store (the `ablation_sweep` fixture, tests/sweep_support.py), its REST API for the parent /
child runs and the CAM gallery, and its React UI in headless Chromium (Debian's chromium and
chromedriver, driven by Selenium; nothing is downloaded)."""

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from browser_support import chromium, page_text
from sweep_support import SWEEP, free_port, http_json, stop, wait_for

pytestmark = pytest.mark.slow

RUNS = [f"object_me/resnet18/{v}/s1" for v in SWEEP["variants"]]


@pytest.fixture(scope="module")
def mlflow_server(ablation_sweep, tmp_path_factory):
    """`mlflow server` on loopback over the sweep's SQLite store (as `make mlflow-ui` runs it)."""
    port = free_port()
    log_file = tmp_path_factory.mktemp("mlflow-ui") / "server.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", ablation_sweep.mlflow_uri,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=log_file.parent, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("mlflow server", lambda: urllib.request.urlopen(f"{base}/health", timeout=2).read() == b"OK", 180, proc, log_file)
        yield base
    finally:
        stop(proc)


def sweep_runs(base: str, flow_run_id: str):
    """(experiment id, parent run, {child name: child run}) of the sweep, through the REST API."""
    api = f"{base}/api/2.0/mlflow"
    experiment = http_json(f"{api}/experiments/get-by-name?experiment_name=megl")["experiment"]
    search = lambda query: http_json(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]], "filter": query})
    (parent,) = search(f"tags.`prefect.flow_run_id` = '{flow_run_id}'")["runs"]
    children = search(f"tags.`mlflow.parentRunId` = '{parent['info']['run_id']}'")["runs"]
    return experiment["experiment_id"], parent, {c["info"]["run_name"]: c for c in children}


def test_rest_api_lists_the_sweep_and_serves_the_gallery(ablation_sweep, mlflow_server):
    experiment_id, parent, children = sweep_runs(mlflow_server, ablation_sweep.flow_run_id)
    assert parent["info"]["status"] == "FINISHED" and parent["info"]["run_name"].startswith("sweep ")
    assert sorted(children) == RUNS
    for name, child in children.items():
        tags = {t["key"]: t["value"] for t in child["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == parent["info"]["run_id"] and tags["seed"] == "1"
        metrics = {m["key"] for m in child["data"]["metrics"]}
        assert {"test/accuracy", "val_accuracy", "train/loss"} <= metrics
        run_id = child["info"]["run_id"]
        listed = http_json(f"{mlflow_server}/api/2.0/mlflow/artifacts/list?run_id={run_id}")
        assert {"cam_gallery.png", "explanations.json", "evaluation"} <= {f["path"] for f in listed["files"]}
        query = urllib.parse.urlencode({"path": "cam_gallery.png", "run_uuid": run_id})
        with urllib.request.urlopen(f"{mlflow_server}/get-artifact?{query}", timeout=30) as resp:
            assert resp.read(8) == b"\x89PNG\r\n\x1a\n"
        query = urllib.parse.urlencode({"path": "explanations.json", "run_uuid": run_id})
        with urllib.request.urlopen(f"{mlflow_server}/get-artifact?{query}", timeout=30) as resp:
            assert {"sample", "label", "predicted", "references"} <= set(json.loads(resp.read())["columns"])
    # the parent carries the regenerated tables and the summary
    parent_files = http_json(f"{mlflow_server}/api/2.0/mlflow/artifacts/list?run_id={parent['info']['run_id']}")
    assert {"summary.json", "tables"} <= {f["path"] for f in parent_files["files"]}


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def test_ui_lists_the_sweep_parent_and_its_children(ablation_sweep, mlflow_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    experiment_id, parent, children = sweep_runs(mlflow_server, ablation_sweep.flow_run_id)
    parent_name = parent["info"]["run_name"]
    # the experiment's runs table (a React SPA: wait for the rendered rows)
    browser.get(f"{mlflow_server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    WebDriverWait(browser, 60).until(lambda d: parent_name in page_text(d), f"{parent_name!r} not listed")
    # children are nested under it (no row of theirs; their names may still show, e.g. as a logged
    # model's source run) ...
    run_links = lambda d: {a.text.strip() for a in d.find_elements(By.XPATH, "//a[@href]")}  # noqa: E731
    assert not set(RUNS) & run_links(browser)
    link = browser.find_element(By.XPATH, f"//a[normalize-space()='{parent_name}']")
    link.find_element(By.XPATH, "./ancestor::*[@role='gridcell'][1]//button").click()  # ... until expanded
    WebDriverWait(browser, 30).until(lambda d: set(RUNS) <= run_links(d), f"children of {parent_name!r} not shown")

    # a child's artifacts: the CAM gallery and the explanation table
    child_id = children[RUNS[-1]]["info"]["run_id"]
    browser.get(f"{mlflow_server}/#/experiments/{experiment_id}/runs/{child_id}/artifacts")
    WebDriverWait(browser, 60).until(
        lambda d: all(f in page_text(d) for f in ("cam_gallery.png", "explanations.json")), "artifacts not listed"
    )


def dismiss_ui_overlays(browser, base: str):
    """Keep MLflow's UI from covering the Models page, for the screenshot: the promo modal
    ("Flexible, governed deployments with the new Model Registry UI"), shown until localStorage holds
    `_mlflow_model_registry_promo_modal_dismissed_v1`, and the MLflow Assistant side panel, opened on
    a local server's first load until `mlflow.assistant.fab.autoOpenedOnFirstLoad_v1` (it squeezes
    the list). Both are useLocalStorage keys (`<key>_v<version>`, JSON; MLflow 3.17,
    server/js/build/static/js/927.*.chunk.js and main.*.js). Set from /health, a plain page of the
    same origin (same localStorage), so the next get() loads the UI afresh and reads them."""
    browser.get(f"{base}/health")
    for key in ("_mlflow_model_registry_promo_modal_dismissed_v1", "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"):
        browser.execute_script("localStorage.setItem(arguments[0], 'true')", key)


def test_ui_lists_the_sweeps_registered_models_and_their_versions(ablation_sweep, mlflow_server, browser):
    """Every classifier the sweep trained is a registered model (megl-<d>-<b>-<v>, a version per run):
    the registry's REST API and the UI's Models page list them. MEGL_SCREENSHOTS=<folder> saves the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    names = sorted(f"megl-object_me-resnet18-{v}" for v in SWEEP["variants"])
    listed = http_json(f"{mlflow_server}/api/2.0/mlflow/registered-models/search")["registered_models"]
    assert names == sorted(m["name"] for m in listed if m["name"] in names), listed
    _, _, children = sweep_runs(mlflow_server, ablation_sweep.flow_run_id)
    for name in names:
        versions = http_json(f"{mlflow_server}/api/2.0/mlflow/model-versions/search?filter=" + urllib.parse.quote(f"name='{name}'"))
        sweep_versions = [v for v in versions["model_versions"] if v["run_id"] in {c["info"]["run_id"] for c in children.values()}]
        assert len(sweep_versions) == 1 and {t["key"]: t["value"] for t in sweep_versions[0]["tags"]}["seed"] == "1"

    dismiss_ui_overlays(browser, mlflow_server)
    browser.get(f"{mlflow_server}/#/models")
    WebDriverWait(browser, 60).until(lambda d: all(n in page_text(d) for n in names), f"{names} not on the Models page")
    if folder := os.environ.get("MEGL_SCREENSHOTS"):
        WebDriverWait(browser, 10).until(
            lambda d: not any(e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, "[role=dialog]")),
            "a dialog covers the Models page",
        )
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / "mlflow-model-registry.png"))
