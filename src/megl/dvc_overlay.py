"""Run a DVC experiment with the blocks of a YAML overlay file added to params.yaml.

    python -m megl.dvc_overlay configs/decoy_fmnist.yaml [dvc exp run options...]

runs `dvc exp run -S ...` with one override per top-level entry of each block: `+path={...}` for
a key params.yaml does not have yet (Hydra's append syntax), `path=value` for one it has. DVC then
writes them into the experiment's params.yaml, so `dvc exp show` lists the experiment with them.
Why a module and not a Makefile line: the values hold spaces, brackets and nulls that shell
quoting in make would mangle; here each override is one argv entry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from megl.config import read_yaml


def hydra_value(value) -> str:
    """A YAML value in Hydra's override grammar (strings always double-quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot express {type(value).__name__} as a DVC -S override")


def overrides(base: dict, overlay: dict, prefix: str = "") -> list[str]:
    """-S values that turn `base` into `base` updated with `overlay` (nested dicts merged)."""
    out = []
    for key, value in overlay.items():
        path = f"{prefix}{key}"
        if key not in base:
            out.append(f"+{path}={hydra_value(value)}")
        elif isinstance(value, dict) and isinstance(base[key], dict):
            out += overrides(base[key], value, path + ".")
        else:
            out.append(f"{path}={hydra_value(value)}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.exit(__doc__)
    overlay_file, extra = Path(args[0]), args[1:]
    try:
        overlay = read_yaml(overlay_file)
        base = read_yaml("params.yaml")
    except FileNotFoundError as exc:
        sys.exit(f"dvc_overlay: {exc.filename}: file not found")
    if not isinstance(overlay, dict):
        sys.exit(f"dvc_overlay: {overlay_file}: top level must be a mapping")
    dvc = Path(sys.executable).with_name("dvc")
    cmd = [str(dvc) if dvc.is_file() else "dvc", "exp", "run", *extra]
    for override in overrides(base, overlay):
        cmd += ["-S", override]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd, env=os.environ)


if __name__ == "__main__":
    sys.exit(main())
