"""Training curves as a PNG, drawn from a run's metrics.csv (the reference's six curves)."""

from __future__ import annotations

from pathlib import Path

from dualenc.errors import DualencError
from dualenc.logs import read_metrics

PANELS = (
    ("train/loss", "train loss"),
    ("valid/loss", "validation loss"),
    ("valid/R@1/2", "R@1 of 2"),
    ("valid/R@1/10", "R@1 of 10"),
    ("valid/R@2/10", "R@2 of 10"),
    ("valid/R@5/10", "R@5 of 10"),
)


def plot_curves(run_dirs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """Draw the six curves of one or more runs into one PNG; returns its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise DualencError("plotting needs matplotlib: pip install 'dualenc[plot]'") from err
    labels = labels or [p.name for p in run_dirs]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for run_dir, label in zip(run_dirs, labels, strict=True):
        curves = read_metrics(run_dir)
        for ax, (tag, title) in zip(axes.flat, PANELS, strict=True):
            points = curves.get(tag, [])
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, label=label, marker="." if len(points) < 40 else None)
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    axes.flat[3].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
