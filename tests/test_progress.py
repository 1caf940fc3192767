"""Progress of long loops (src/megl/progress.py): plain lines with rate and ETA in a log, a tqdm
bar on a terminal; a training run reports every epoch's steps (not silent until the epoch ends)."""

import dataclasses
import io

from megl.progress import phase, progress
from megl.train import train


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_in_a_log_and_a_bar_on_a_terminal(monkeypatch):
    log = io.StringIO()
    assert list(progress(range(4), 4, "epoch 1/2", stream=log)) == [0, 1, 2, 3]
    assert log.getvalue().startswith("epoch 1/2: 4/4 steps, ") and " steps/s in " in log.getvalue()

    monkeypatch.setattr("megl.progress.PLAIN_EVERY_S", 0.0)  # a slow loop: a line as it goes, with its ETA
    log = io.StringIO()
    list(progress(range(3), 3, "predict", unit="batch", stream=log))
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["predict: 1/3 batchs", "predict: 2/3 batchs", "predict: 3/3 batchs"]
    assert "ETA" in lines[0] and "ETA" not in lines[-1]

    tty = Terminal()
    assert list(progress(range(5), 5, "epoch 1/2", stream=tty)) == list(range(5))
    assert "\repoch 1/2:   0%|" in tty.getvalue() and "step/s]" in tty.getvalue()  # tqdm's bar: redrawn in place, rate, ETA

    log = io.StringIO()
    with phase("evaluate x: validation split", stream=log):
        pass
    assert log.getvalue().splitlines()[0] == "evaluate x: validation split ..." and "done in" in log.getvalue()


def test_training_reports_each_epoch(small_params, capfd):
    from test_train import paths

    cfg = dataclasses.replace(small_params.train, epochs=2)
    train(dataclasses.replace(small_params, train=cfg), "object_me", "resnet18", "baseline",
          paths(small_params.root, "resnet18", "baseline", "_progress"), max_steps=3)
    err = capfd.readouterr().err
    assert "train object_me/resnet18/baseline/s0: building the model ..." in err
    assert "train object_me/resnet18/baseline/s0: epoch 1/2: " in err, err[-2000:]
