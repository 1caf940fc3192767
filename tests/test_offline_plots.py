"""`dvc plots show` on the project's own dvc.yaml and committed plot data, opened in headless
Chromium with the network switched off: after `make vega` (pipeline/offline_plots.py) every chart
renders; DVC's default page, which loads Vega from a CDN, renders none in the same browser (so the
check is not vacuous). The charts are the grid overlays of dvc.yaml's top-level `plots:`.

MEGL_SCREENSHOTS=<folder> saves a screenshot of each page there."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from browser_support import chromium

pytestmark = pytest.mark.slow

MODULES = Path(__file__).resolve().parent.parent / "offline_plots" / "node_modules"
COPY = ("dvc.yaml", "params.yaml", ".dvc/plots", "summary", "studies")
OVERLAYS = ("validation_accuracy_per_epoch", "test_accuracy_per_method", "test_mIoU_per_method")


@pytest.fixture(scope="module")
def project(repo, tmp_path_factory):
    if not (MODULES / "vega").is_dir():
        pytest.fail(f"{MODULES} is missing: run `make vega` (`make test` does)")
    work = tmp_path_factory.mktemp("plots")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    dvc("init", "-q", cwd=work)
    for name in COPY:
        src, dst = repo / name, work / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.jsonl"))
        elif src.exists():
            shutil.copy(src, dst)
    return work


def dvc(*args, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert out.returncode == 0, f"dvc {' '.join(args)}\n{out.stdout}{out.stderr}"
    return out


def rendered(driver, page: Path, shot: str, wait: float) -> dict[str, bool]:
    """{plot div id: whether Vega drew it (a canvas or svg inside its vega-embed container)}."""
    from selenium.webdriver.common.by import By

    driver.get(page.as_uri())
    ids = [e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "body > div[id]")]
    draw = "return Array.from(arguments[0]).map(i => !!document.querySelector('#' + CSS.escape(i) + ' canvas, #' + CSS.escape(i) + ' svg.marks'))"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:  # vega-embed draws asynchronously after load
        done = dict(zip(ids, driver.execute_script(draw, ids)))
        if all(done.values()):
            break
        time.sleep(0.5)
    if folder := os.environ.get("MEGL_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.set_window_size(1600, 1000)
        driver.save_screenshot(str(Path(folder) / f"{shot}.png"))
    return done


def test_plots_render_offline_and_the_cdn_page_does_not(project):
    plots = [next(iter(p)) if isinstance(p, dict) else p for p in yaml.safe_load((project / "dvc.yaml").read_text())["plots"]]
    assert len(plots) >= 3, plots

    # DVC's own page: scripts from cdn.jsdelivr.net
    dvc("plots", "show", "-o", "cdn", cwd=project)
    assert "cdn.jsdelivr.net" in (project / "cdn/index.html").read_text()

    subprocess.run([sys.executable, str(Path(__file__).resolve().parent.parent / "pipeline/offline_plots.py"),
                    "--project", str(project), "--modules", str(MODULES)], check=True, capture_output=True)
    dvc("plots", "show", "-o", "offline", cwd=project)
    html = (project / "offline/index.html").read_text()
    assert "cdn.jsdelivr.net" not in html and "<script src=" not in html

    with chromium(offline=True) as driver:
        offline = rendered(driver, project / "offline/index.html", "dvc-plots-offline", wait=60)
        cdn = rendered(driver, project / "cdn/index.html", "dvc-plots-cdn", wait=5)
    assert set(OVERLAYS) <= set(offline), offline
    assert offline and all(offline.values()), offline
    assert cdn and not any(cdn.values()), cdn
