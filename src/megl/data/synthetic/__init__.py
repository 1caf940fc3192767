"""The embedded default: synthetic benchmarks written in the real raw layouts (see scene.py)."""

from __future__ import annotations

from pathlib import Path

from megl.config import SplitConfig, SyntheticConfig


def generate(cfg: SyntheticConfig, split_cfg: SplitConfig, out_dir: Path) -> dict:
    """Write the benchmark to out_dir (replaced atomically); returns a summary of what was written."""
    from megl.data.synthetic import actions, objects

    module = objects if cfg.kind == "objects" else actions
    return module.generate(cfg, split_cfg, out_dir)
