"""Which CPU kernels torch computes with: fewer machine-dependent choices, so that another
machine's numbers are closer to ours (not equal: measured below).

torch picks its kernels by the CPU it finds: AVX-512 or AVX2 vector loops (ATen), oneDNN
convolutions blocked for the cache sizes, MKL GEMMs tuned per CPU. Each choice sums floats in
another order, so the same run trains a (slightly) different model on another CPU, and a tiny
model from scratch amplifies that like a change of seed (seen here: two AMD EPYC machines, one
with AVX-512, gave a ViT pointing game of 0.78 and 0.43 for the same params).

`portable` (params compute.cpu_kernels) pins every choice that depends on the machine:
  - ATen vector kernels at AVX2 (ATEN_CPU_CAPABILITY), which every x86-64 CPU of the last decade has;
  - MKL in conditional-numerical-reproducibility mode, AVX2 branch (MKL_CBWR), Intel's documented
    way to get the same GEMM results on different CPUs at a fixed thread count;
  - oneDNN (convolutions) capped at AVX2 (ONEDNN_MAX_CPU_ISA).
Measured on a 2-core AVX-512 EPYC: no slower than native for the tiny ResNet (29.6 s vs 33.3 s for
a MEGL run; turning oneDNN off altogether cost 1.6x). Not enough for equal numbers across CPU
vendors: the same portable run on that AMD EPYC and on an Intel Xeon (Sapphire Rapids) differed
from the 5th significant digit of the first epoch's loss (what else differs is not pinned down:
oneDNN's cache-dependent blocking, libm, MKL's CNR outside GEMM). The same CPU model does give
byte-identical numbers; across CPUs the regression gate's model-spread allowance
(src/megl/gate.py) covers the rest.
`native` lets torch choose (fastest on a big CPU, machine-dependent numbers).
Both are read when torch runs its first operation, so `pin` must come before any tensor op.
"""

from __future__ import annotations

import os
import platform

PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin(mode: str, threads: int) -> dict[str, str]:
    """Apply compute.cpu_kernels and compute.threads to this process; returns what it runs with."""
    portable = mode == "portable" and platform.machine().lower() in ("x86_64", "amd64")
    if portable:
        os.environ.update(PORTABLE_ENV)
    import torch

    torch.set_num_threads(threads)
    if portable:
        capability = torch.backends.cpu.get_cpu_capability()
        if capability != "AVX2":
            raise RuntimeError(
                f"compute.cpu_kernels=portable: torch runs {capability} kernels, not AVX2 (a tensor "
                "operation ran before megl.numerics.pin, or this CPU lacks AVX2: use native)"
            )
    return describe()


def describe() -> dict[str, str]:
    import torch

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
        "threads": str(torch.get_num_threads()),
    }
