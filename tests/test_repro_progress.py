"""`make run`'s "stage k of N" (pipeline/repro.py): real `dvc repro` on a three-stage project;
DVC's exit status comes back; a stage line split across reads is still numbered."""

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pipeline"))
from repro import Prefixer  # noqa: E402

SCRIPT = Path(__file__).resolve().parent.parent / "pipeline" / "repro.py"
DVC_YAML = """stages:
  a: {cmd: echo a > a.txt, outs: [a.txt]}
  b: {cmd: cat a.txt > b.txt, deps: [a.txt], outs: [b.txt]}
  c: {cmd: "test -f go && cat b.txt > c.txt", deps: [b.txt], outs: [c.txt]}
"""


def repro(work: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT)], cwd=work, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"}, timeout=300)


def test_stage_k_of_n_and_the_exit_status(tmp_path):
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    failed = repro(tmp_path)  # stage c fails: DVC's status, not 0
    assert failed.returncode != 0
    assert "[1/3] Running stage 'a'" in failed.stdout and "[3/3] Running stage 'c'" in failed.stdout, failed.stdout
    (tmp_path / "go").write_text("")
    again = repro(tmp_path)
    assert again.returncode == 0, again.stdout
    lines = [line for line in again.stdout.splitlines() if line.startswith("[")]
    assert [line[:5] for line in lines] == ["[1/3]", "[2/3]", "[3/3]"], again.stdout
    assert "didn't change" in lines[0] and "Running stage 'c'" in lines[2]


def test_a_stage_line_split_across_reads_is_numbered_and_progress_bars_pass_at_once():
    p = Prefixer(2)
    assert p.feed(b"log\nRunning st") == b"log\n"  # held: it may be a stage line
    assert p.feed(b"age 'a':\n 10%|#|\r") == b"[1/2] Running stage 'a':\n 10%|#|\r"
    assert p.feed(b"Stage 'b' didn't change, skipping\n", final=True) == b"[2/2] Stage 'b' didn't change, skipping\n"
