"""What the study's code check (pipeline/study.py `differences`) calls a change of numbers when it
runs a recorded run again at a new commit: records written before the epoch fields were renamed
(2026-12-07) compare equal to the same run written now; any changed number still differs."""

import copy
import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "pipeline"))

# a fair-1 search record as written before the rename (its train part), and the same run now
LEGACY = {"val": {"accuracy": 0.93, "f1": 0.929}, "test": {"accuracy": 0.71}, "not_applicable": None,
          "train": {"checkpoint_epoch": 8, "epochs": 10,
                    "history": [{"epoch": e, "val_accuracy": a} for e, a in enumerate([0.72, 0.76, 0.80, 0.80, 0.87,
                                                                                       0.89, 0.885, 0.913, 0.93, 0.917])]}}


def now_written(record):
    again = copy.deepcopy(record)
    train = again["train"]
    again["train"] = {"epochs": train["epochs"], "exported_epoch": 9, "best_val_epoch": train.pop("checkpoint_epoch"),
                      "history": train["history"]}
    return again


def test_a_record_from_before_the_rename_is_the_same_run():
    import study

    assert study.differences(LEGACY, now_written(LEGACY)) == {}
    assert study.differences(now_written(LEGACY), now_written(LEGACY)) == {}


def test_a_changed_number_differs_in_either_schema():
    import study

    moved = now_written(LEGACY)
    moved["train"]["best_val_epoch"] = 7
    assert list(study.differences(LEGACY, moved)) == ["train"]
    history = now_written(LEGACY)
    history["train"]["history"][3]["val_accuracy"] = 0.81
    assert list(study.differences(LEGACY, history)) == ["train"]
    tested = now_written(LEGACY)
    tested["test"]["accuracy"] = 0.72
    assert list(study.differences(now_written(LEGACY), tested)) == ["test"]
    exported = now_written(LEGACY)
    exported["train"]["exported_epoch"] = 8  # a new record is compared on every field it has
    assert list(study.differences(now_written(LEGACY), exported)) == ["train"]


def test_every_legacy_record_of_the_committed_studies_reads_as_now():
    """The shape the comparison expects is the shape of the committed records."""
    import study

    for path in (REPO / "studies").glob("*/runs.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "checkpoint_epoch" in (record.get("train") or {}):
                assert study.differences(record, now_written(record)) == {}, record["run"]
