"""compute.cpu_kernels: `portable` pins torch's CPU kernels before the first tensor operation
(each case in a fresh interpreter: the choice is read once, at torch's first op)."""

import json
import platform
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys
from megl.numerics import pin
print(json.dumps(pin(sys.argv[1], 2)))
"""


def run(mode):
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True)
    return out


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="portable pins x86-64 kernels")
def test_portable_pins_avx2_mkl_cnr_and_onednn():
    out = run("portable")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"cpu_capability": "AVX2", "mkl_cbwr": "AVX2,STRICT", "onednn_max_isa": "AVX2", "threads": "2"}


def test_native_leaves_the_choice_to_torch():
    out = run("native")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["mkl_cbwr"] == "" and got["onednn_max_isa"] == "native" and got["threads"] == "2"


def test_portable_after_a_tensor_op_is_refused():
    """A tensor operation before pin() has fixed the kernels: portable must say so, not pretend."""
    script = "import torch; torch.ones(2).sum()\n" + SCRIPT
    out = subprocess.run([sys.executable, "-c", script, "portable"], capture_output=True, text=True)
    if platform.machine().lower() in ("x86_64", "amd64") and "avx512" in open("/proc/cpuinfo").read():
        assert out.returncode != 0 and "not AVX2" in out.stderr
    else:
        assert out.returncode == 0
