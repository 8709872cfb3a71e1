"""Training logs: TensorBoard event files and metrics.csv with the same values."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CSV_FIELDS = ("step", "epoch", "examples", "tag", "value")
VALIDATION_TAGS = {
    "loss": "valid/loss",
    "R@1/2": "valid/R@1/2",
    "R@1/10": "valid/R@1/10",
    "R@2/10": "valid/R@2/10",
    "R@5/10": "valid/R@5/10",
    "MRR": "valid/MRR",
}


class RunLogger:
    """Writes each scalar to TensorBoard and to RUN/metrics.csv.

    On resume, rows past the resumed step are dropped from metrics.csv and TensorBoard is
    told to purge them, so both read as if the run had never stopped.
    """

    def __init__(self, run_dir: Path, start_step: int = 0) -> None:
        self.csv_path = run_dir / "metrics.csv"
        self._truncate_csv(start_step)
        new = not self.csv_path.exists()
        self._file = open(self.csv_path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(CSV_FIELDS)
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step or None)
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            log.warning("tensorboard is not installed: curves go to metrics.csv only")

    def _truncate_csv(self, start_step: int) -> None:
        if not self.csv_path.exists() or start_step == 0:
            return
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def scalar(self, tag: str, value: float, state: Any) -> None:
        self._csv.writerow((state.step, state.epoch, state.examples, tag, f"{value:.6g}"))
        self._file.flush()
        if self._tb is not None:
            self._tb.add_scalar(tag, value, state.step)

    def validation(self, values: dict[str, float], state: Any) -> None:
        for key, tag in VALIDATION_TAGS.items():
            if key in values:
                self.scalar(tag, values[key], state)
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv as tag -> [(step, value)]."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(Path(run_dir) / "metrics.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            curves.setdefault(row["tag"], []).append((int(row["step"]), float(row["value"])))
    return curves
