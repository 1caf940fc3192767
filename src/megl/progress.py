"""Progress of the long loops (a training epoch, a split's predictions, an evaluation's phases), on
stderr: on a terminal a tqdm bar with rate and ETA; anywhere else (CI, a DVC or Prefect log, a
file) a plain line at least every PLAIN_EVERY_S seconds and at the end, so a slow step, such as a
pretrained model's first batches on a CPU, never leaves a run silent for minutes. Only prints:
nothing here touches a random state or a number the run computes.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
PLAIN_EVERY_S = 30.0


def _terminal(stream) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def progress(items: Iterable[T], total: int, desc: str, unit: str = "step", enabled: bool = True, stream=None) -> Iterable[T]:
    """`items` as they come, reporting how far through `total` they are."""
    stream = stream or sys.stderr
    if not enabled:
        return items
    if _terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(items, total=total, desc=desc, unit=unit, file=stream, leave=False, dynamic_ncols=True)
    return _plain(items, total, desc, unit, stream)


def _plain(items: Iterable[T], total: int, desc: str, unit: str, stream) -> Iterator[T]:
    start = last = time.monotonic()
    done = 0

    def line(end: str) -> None:
        rate = done / max(time.monotonic() - start, 1e-9)
        print(f"{desc}: {done}/{total} {unit}s, {rate:.2f} {unit}s/s{end}", file=stream, flush=True)

    try:
        for item in items:
            yield item
            done += 1
            if done == total:
                line(f" in {time.monotonic() - start:.0f} s")
            elif time.monotonic() - last >= PLAIN_EVERY_S:
                line(f", ETA {(total - done) * (time.monotonic() - start) / done:.0f} s")
                last = time.monotonic()
    finally:
        if 0 < done < total:  # the loop stopped early (a step limit, an error): where it stopped
            line(", stopped")


@contextlib.contextmanager
def phase(desc: str, enabled: bool = True, stream=None):
    """One line as a phase starts and one with its duration as it ends."""
    stream = stream or sys.stderr
    start = time.monotonic()
    if enabled:
        print(f"{desc} ...", file=stream, flush=True)
    yield
    if enabled:
        print(f"{desc}: done in {time.monotonic() - start:.1f} s", file=stream, flush=True)
