"""The core library must import without the pipeline tools (a GPU box may not have them)."""

import subprocess
import sys

BLOCK = """
import sys
for name in ("dvc", "prefect", "mlflow"):
    sys.modules[name] = None  # any import of them now raises ImportError
import megl, megl.config, megl.atomic
import megl.data.extract, megl.data.saliency, megl.data.synthetic.objects, megl.data.synthetic.actions
print("ok")
"""


def test_core_imports_without_dvc_prefect_mlflow():
    out = subprocess.run([sys.executable, "-c", BLOCK], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
