"""CPU time by thread and garbage-collection time of this process, for the benchmarks (Linux)."""

from __future__ import annotations

import gc
import os
import threading
import time

__all__ = ["GcTimer", "thread_cpu"]


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each live thread of this process so far, by thread name; threads whose
    names differ only by a trailing number (a pool's) are summed under the name without it."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = thread.name.rstrip("0123456789_-") or thread.name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


class GcTimer:
    """The garbage collections made while installed (``with GcTimer() as t:``): ``each`` lists them as
    (thread name, generation, wall-clock seconds); ``str()`` sums them by generation."""

    def __init__(self) -> None:
        self.each: list[tuple[str, int, float]] = []
        self._started: dict[int, float] = {}  # thread ident -> start of its collection

    def __call__(self, phase: str, info: dict) -> None:
        ident = threading.get_ident()
        if phase == "start":
            self._started[ident] = time.perf_counter()
        elif ident in self._started:
            self.each.append((threading.current_thread().name, info["generation"],
                              time.perf_counter() - self._started.pop(ident)))

    @property
    def seconds(self) -> float:
        return sum(s for _, _, s in self.each)

    def __str__(self) -> str:
        by_generation = [[g, 0, 0.0] for g in range(3)]
        for _, g, s in self.each:
            by_generation[g][1] += 1
            by_generation[g][2] += s
        return f"garbage collection {self.seconds:.2f} s (" + ", ".join(
            f"generation {g}: {n} in {t:.2f} s" for g, n, t in by_generation) + ")"

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self)
