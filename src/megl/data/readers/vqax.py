"""VQA-X readers: the Park et al. release layout and the NLX-GPT preprocessed layout.

Park:  Annotations/{train,val,test}_exp_anno.json            {"<qid>": ["explanation", ...]}
       Annotations/v2_mscoco_{train,val}2014_annotations.json {"annotations": [{question_id, image_id, answers}]}
       Questions/v2_OpenEnded_mscoco_{train,val}2014_questions.json {"questions": [{question_id, question, image_id}]}
       Annotations/visual/{val,test}/<qid>.npz|.npy
NLX:   vqaX_{train,val,test}.json  {"<qid>": {question, answers, image_id, image_name, explanation}}
Images COCO_{train,val}2014_<image_id:012d>.jpg under the image root (or its train2014/ val2014/).
"""

from __future__ import annotations

from pathlib import Path

from megl.data.json_files import expect_mapping, load_json
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
from megl.data.records import DataError, RawSample, ReadResult

SPLITS = ("train", "val", "test")
COCO_SETS = ("train2014", "val2014")


def _answers(record: dict) -> tuple[str, ...]:
    answers = require(record, "answers", list)
    out = []
    for a in answers:
        text = a.get("answer") if isinstance(a, dict) else a
        if not isinstance(text, str):
            raise RecordError("malformed_record", f"answer entry without an 'answer' string: {a!r:.80}")
        out.append(text)
    if not out:
        raise RecordError("malformed_record", "empty answers list")
    return tuple(out)


def _vqa_table(path: Path, key: str) -> dict[str, dict]:
    data = expect_mapping(load_json(path), path, f"a VQA file with a {key!r} list")
    rows = data.get(key)
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a {key!r} list at the top level")
    table: dict[str, dict] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "question_id" not in row:
            raise DataError(f"{path}: {key}[{i}] has no question_id")
        table[str(row["question_id"])] = row
    return table


def read_park(raw_dir: Path, image_root: Path, visual_dir: Path) -> ReadResult:
    result = ReadResult()
    exp_files = split_files(raw_dir, "Annotations/{split}_exp_anno.json", SPLITS)
    questions: dict[str, tuple[str, dict]] = {}
    answers: dict[str, dict] = {}
    for coco in COCO_SETS:
        q_path = raw_dir / f"Questions/v2_OpenEnded_mscoco_{coco}_questions.json"
        a_path = raw_dir / f"Annotations/v2_mscoco_{coco}_annotations.json"
        for path in (q_path, a_path):
            if not path.is_file():
                raise DataError(f"{path}: VQA v2 file not found (the Park layout needs questions and answers)")
        questions.update({qid: (coco, row) for qid, row in _vqa_table(q_path, "questions").items()})
        answers.update(_vqa_table(a_path, "annotations"))

    maps = index_visual_maps(visual_dir, SPLITS)
    used_maps: set[str] = set()
    seen: set[str] = set()
    for split, path in exp_files:
        for qid, exps in entries(path, result, seen, "{question_id: [explanations]}"):
            try:
                explanations = clean_explanations(exps, result)
                if qid not in questions:
                    raise RecordError("missing_question", "not in Questions/v2_OpenEnded_mscoco_*_questions.json")
                if qid not in answers:
                    raise RecordError("missing_answers", "not in Annotations/v2_mscoco_*_annotations.json")
                coco, q_row = questions[qid]
                question = require(q_row, "question", str)
                image_id = require(q_row, "image_id", (int, str))
                if not str(image_id).isdigit():
                    raise RecordError("malformed_record", f"image_id {image_id!r} is not a number")
                image_name = f"COCO_{coco}_{int(image_id):012d}.jpg"
                result.samples.append(
                    RawSample(
                        sample_id=qid,
                        source_split=split,
                        source_file=str(path),
                        image_name=image_name,
                        answers=_answers(answers[qid]),
                        explanations=explanations,
                        question=question,
                        visual_files=take_visual(maps, used_maps, qid),
                    )
                )
            except RecordError as err:
                reject(result, qid, path, err)
    result.orphan_visual_files = len(set(maps) - used_maps)
    return result


def read_nlx(raw_dir: Path, image_root: Path, visual_dir: Path) -> ReadResult:
    result = ReadResult()
    maps = index_visual_maps(visual_dir, SPLITS)
    used_maps: set[str] = set()
    seen: set[str] = set()
    for split, path in split_files(raw_dir, "vqaX_{split}.json", SPLITS):
        for qid, record in entries(path, result, seen, "{question_id: record}"):
            try:
                explanations = clean_explanations(require(record, "explanation", (str, list)), result)
                result.samples.append(
                    RawSample(
                        sample_id=qid,
                        source_split=split,
                        source_file=str(path),
                        image_name=checked_image_name(require(record, "image_name", str), image_root),
                        answers=_answers(record),
                        explanations=explanations,
                        question=require(record, "question", str),
                        visual_files=take_visual(maps, used_maps, qid),
                    )
                )
            except RecordError as err:
                reject(result, qid, path, err)
    result.orphan_visual_files = len(set(maps) - used_maps)
    return result


def image_candidates(name: str) -> list[Path]:
    """COCO images sit either flat under the root or in train2014/ val2014/."""
    out = [Path(name)]
    base = Path(name).name
    for coco in COCO_SETS:
        if f"_{coco}_" in base:
            out.append(Path(coco) / base)
    return out
