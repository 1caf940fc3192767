"""`dvc repro` with "stage k of N" (`make run` runs this): DVC's own output, each of its stage lines
("Running stage", "didn't change, skipping", "is cached - skipping run") prefixed with [k/N], N the
pipeline's stage count. Arguments go to `dvc repro` as they are.

DVC runs inside a pseudo-terminal when this process has one, so a stage still sees a terminal and
draws its progress bar (train.py); in CI or a log the stages print plain lines. Ctrl-C reaches DVC
as it would without this wrapper (same process group: DVC stops the stage and exits); SIGTERM is
passed on. The exit status is DVC's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

# DVC's log line for each stage it reaches: run, up to date, or restored from the run-cache
STAGE_LINE = re.compile(rb"(?m)^(?=Running stage '|Stage '[^'\n]+' (?:didn't change|is cached)|'[^'\n]+' didn't change)")
HOLD = 200  # a trailing partial line shorter than this (no \r: not a progress bar) waits for its end


def stage_count(dvc: list[str]) -> int:
    out = subprocess.run([*dvc, "stage", "list", "--name-only"], capture_output=True, text=True)
    return len(out.stdout.split()) if out.returncode == 0 else 0


class Prefixer:
    """Inserts [k/N] before every stage line of a byte stream, passing everything else through as it
    comes (a progress bar's \r updates too)."""

    def __init__(self, total: int):
        self.done, self.total, self.held = 0, total, b""

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        data, self.held = self.held + chunk, b""
        start = data.rfind(b"\n") + 1  # the trailing partial line: it may be the start of a stage line
        if not final and start < len(data) and len(data) - start < HOLD and b"\r" not in data[start:]:
            data, self.held = data[:start], data[start:]
        return STAGE_LINE.sub(self._number, data)

    def _number(self, _match) -> bytes:
        self.done += 1
        return f"[{self.done}/{self.total}] ".encode()


def main() -> int:
    dvc = [sys.executable, "-m", "dvc"]
    prefix = Prefixer(stage_count(dvc))
    tty = os.isatty(sys.stdout.fileno())
    if tty:
        import pty

        master, slave = pty.openpty()
        proc = subprocess.Popen([*dvc, "repro", *sys.argv[1:]], stdout=slave, stderr=slave)
        os.close(slave)
        read = lambda: os.read(master, 65536)  # noqa: E731
    else:
        proc = subprocess.Popen([*dvc, "repro", *sys.argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        read = lambda: proc.stdout.read1(65536)  # noqa: E731
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches DVC itself
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    out = sys.stdout.buffer
    while True:
        try:
            chunk = read()
        except OSError:  # the pty's other end closed: DVC exited
            chunk = b""
        if not chunk:
            break
        out.write(prefix.feed(chunk))
        out.flush()
    out.write(prefix.feed(b"", final=True))
    out.flush()
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
