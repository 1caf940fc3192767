"""ACT-X readers: the Park et al. release layout and the NLX-GPT preprocessed layout.

Park:  textual/exp_{train,val,test}_split.json  {"<key>": {"iid": "<MPII name, no .jpg>", "ans": str, "exp": str | [str]}}
       visual/{val,test}/<key or iid>.npz|.npy
NLX:   actX_{train,val,test}.json  {"<key>": {"answers": str, "image_id", "image_name", "explanation": [str]}}
Images <iid>.jpg (MPII Human Pose) under the image root.
"""

from __future__ import annotations

from pathlib import Path

from megl.data.readers.common import (
    RecordError,
    checked_image_name,
    clean_explanations,
    entries,
    index_visual_maps,
    reject,
    require,
    split_files,
    take_visual,
)
from megl.data.records import RawSample, ReadResult

SPLITS = ("train", "val", "test")


def _activity(value: object) -> tuple[str, ...]:
    """The activity string; a list (seen in some NLX exports) keeps every entry for the majority vote."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(x, str) and x.strip() for x in items):
        raise RecordError("malformed_record", f"activity must be a non-empty string, got {value!r:.80}")
    return tuple(items)


def _read(raw_dir: Path, image_root: Path, visual_dir: Path, *, nlx: bool) -> ReadResult:
    result = ReadResult()
    maps = index_visual_maps(visual_dir, SPLITS)
    used_maps: set[str] = set()
    seen: set[str] = set()
    pattern = "actX_{split}.json" if nlx else "textual/exp_{split}_split.json"
    for split, path in split_files(raw_dir, pattern, SPLITS):
        for key, record in entries(path, result, seen, "{key: record}"):
            try:
                if nlx:
                    explanations = clean_explanations(require(record, "explanation", (str, list)), result)
                    image_name = require(record, "image_name", str)
                    activity = _activity(require(record, "answers", (str, list)))
                else:
                    explanations = clean_explanations(require(record, "exp", (str, list)), result)
                    image_name = require(record, "iid", str) + ".jpg"
                    activity = _activity(require(record, "ans", str))
                image_name = checked_image_name(image_name, image_root)
                result.samples.append(
                    RawSample(
                        sample_id=key,
                        source_split=split,
                        source_file=str(path),
                        image_name=image_name,
                        answers=activity,
                        explanations=explanations,
                        visual_files=take_visual(maps, used_maps, key, Path(image_name).stem),
                    )
                )
            except RecordError as err:
                reject(result, key, path, err)
    result.orphan_visual_files = len(set(maps) - used_maps)
    return result


def read_park(raw_dir: Path, image_root: Path, visual_dir: Path) -> ReadResult:
    return _read(raw_dir, image_root, visual_dir, nlx=False)


def read_nlx(raw_dir: Path, image_root: Path, visual_dir: Path) -> ReadResult:
    return _read(raw_dir, image_root, visual_dir, nlx=True)
