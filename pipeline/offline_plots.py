"""Make `dvc plots show` work offline (`make vega` runs this).

DVC writes dvc_plots/index.html from an HTML page whose {scripts} load vega, vega-lite and
vega-embed from a CDN (dvc_render.vega.VegaRenderer.SCRIPTS): offline the page is blank. DVC
takes another page from its config (`plots.html_template`, relative to .dvc/), so this writes one:
dvc-render's own page with the three scripts inlined from the npm packages that
offline_plots/package-lock.json pins (the same majors the CDN links name), and points the
project's local DVC config at it. The page then renders with no network and can be mailed as one
file. A clone that never ran `make vega` keeps DVC's default (CDN) page.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from dvc_render.html import HTML, PAGE_HTML

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js")
TEMPLATE = "offline-plots.html"  # under .dvc/ (gitignored there)


def page(modules: Path) -> str:
    """dvc-render's page with the scripts inline in place of its {scripts} (the CDN links)."""
    placeholder = "{" + HTML.SCRIPTS_PLACEHOLDER + "}"
    inline = []
    for script in SCRIPTS:
        path = modules / script
        if not path.is_file():
            sys.exit(f"offline_plots: {path} is missing: run `make vega` (npm ci in {modules.parent})")
        code = path.read_text(encoding="utf-8")
        # the page is filled by str.replace of {scripts}, {plot_divs}, {refresh_tag}; a script that
        # held one (or ended the <script> element) would be cut
        if "</script" in code or any("{" + p + "}" in code for p in ("scripts", "plot_divs", "refresh_tag")):
            sys.exit(f"offline_plots: {path} cannot be inlined (it contains </script or a page placeholder)")
        inline.append(f"<script>/* {script} */\n{code}\n</script>")
    assert placeholder in PAGE_HTML, "dvc-render's page no longer has {scripts}: check dvc_render.html"
    return PAGE_HTML.replace(placeholder, "\n".join(inline))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=REPO, help="the DVC project (default: this repository)")
    parser.add_argument("--modules", type=Path, default=REPO / "offline_plots" / "node_modules")
    args = parser.parse_args()
    dvc_dir = args.project / ".dvc"
    if not dvc_dir.is_dir():
        sys.exit(f"offline_plots: {args.project} is not a DVC project (no .dvc/)")
    out = dvc_dir / TEMPLATE
    tmp = out.with_suffix(".tmp")
    tmp.write_text(page(args.modules), encoding="utf-8")
    tmp.replace(out)
    # --local: .dvc/config.local, this checkout's own setting (a clone without the page keeps DVC's)
    subprocess.run([sys.executable, "-m", "dvc", "config", "--local", "plots.html_template", TEMPLATE],
                   cwd=args.project, check=True)
    print(f"offline_plots: {out} ({out.stat().st_size // 1024} KiB); `dvc plots show` renders without network")


if __name__ == "__main__":
    main()
