"""A wall-clock training budget cut into equal parts, with a model saved at the end of each part.

Standard library only: both benchmarks/timed_train.py (this environment) and benchmarks/trl011_worker.py (TRL
0.11.4's own virtual environment) use it. The clock runs from `start()` (just before the first training step, after
the model and data are loaded) and stops while a model is being written, so a slow disk does not eat a trainer's
budget. Checkpoints are taken after the step during which a boundary passes; each records the minutes of training
it actually holds, so a trainer with long steps is plotted where its models really are.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable


class BudgetClock:
    def __init__(self, budget_minutes: float, parts: int, run_dir: Path, save: Callable[[Path], None]):
        if budget_minutes <= 0 or parts < 1:
            raise ValueError(f"budget_minutes ({budget_minutes}) must be > 0 and parts ({parts}) >= 1.")
        self.budget_s, self.parts, self.run_dir, self.save = budget_minutes * 60.0, parts, Path(run_dir), save
        self.next_part, self.paused, self.t0 = 1, 0.0, None

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        """Training seconds so far, saves excluded."""
        return time.perf_counter() - self.t0 - self.paused

    def after_step(self, steps: int, completions: int) -> bool:
        """Save every part whose boundary has passed; True once the whole budget is spent."""
        while self.next_part <= self.parts and self.seconds() >= self.next_part * self.budget_s / self.parts:
            held = self.seconds()
            began = time.perf_counter()
            directory = self.run_dir / f"part-{self.next_part}"
            self.save(directory)
            row = {"part": self.next_part, "minutes": held / 60.0, "steps": steps, "completions": completions,
                   "save_seconds": time.perf_counter() - began, "path": str(directory / "model")}
            with (self.run_dir / "checkpoints.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            print(f"checkpoint {row}", flush=True)
            self.paused += time.perf_counter() - began
            self.next_part += 1
        return self.next_part > self.parts
