"""Wall-clock time of a run's stages, for the report's `timings_s`."""

from __future__ import annotations

import time


class StageTimer:
    """Seconds spent in each stage of a run: `lap(stage)` records the time since the
    previous lap (or since the timer was made) under `stage`, rounded to milliseconds; with
    `progress`, it also prints the stage and its seconds, so that a long run shows where it
    is."""

    def __init__(self, progress: bool = False) -> None:
        self.timings: dict[str, float] = {}
        self.progress = progress
        self._clock = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(now - self._clock, 3)
        self._clock = now
        if self.progress:
            print(f"  {stage}: {self.timings[stage]:.1f} s", flush=True)
