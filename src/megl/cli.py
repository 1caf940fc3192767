"""The `megl` console command (pyproject [project.scripts]): `megl <command> ...`."""

from __future__ import annotations

import sys

COMMANDS = {"explain": "predict, explain and overlay the saliency map for your own images (megl explain -h)"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: megl <command> ...\n\ncommands:\n" + "\n".join(f"  {k:10s}{v}" for k, v in COMMANDS.items()))
        return 0 if argv else 2
    if argv[0] == "explain":
        from megl.explain_cli import main as explain

        return explain(argv[1:])
    print(f"megl: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2
