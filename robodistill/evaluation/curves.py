"""Learning curves: success rate and return against env steps, with the teacher's success as a line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # the object API draws to files without pyplot's global backend or state

Curve = Sequence[Mapping[str, float]]  # [{"env_steps", "success_rate", "return_mean"}, ...]


def steps_to_success(history: Curve, level: float) -> int | None:
    """The first evaluated env step whose success rate reached `level` (None if never)."""
    return next((int(h["env_steps"]) for h in history if (h["success_rate"] or 0.0) >= level), None)


def _figure(ncols: int) -> tuple[Figure, Any]:
    """A figure of `ncols` panels in a row and its axes."""
    fig = Figure(figsize=(5.5 * ncols, 4))
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def plot_learning_curves(
    history: Curve, path: str | Path, teacher_success: float | None = None, tb: Any = None
) -> Path:
    """One run's curves as a PNG (and as a TensorBoard figure when `tb`, a SummaryWriter, is given). The teacher's
    line goes on the success panel, or on the return panel for a task that reports no success (its score is then
    a return)."""
    fig, (ax_s, ax_r) = _figure(2)
    steps = [h["env_steps"] for h in history]
    has_success = any(h["success_rate"] is not None for h in history)
    if has_success:
        ax_s.plot(steps, [h["success_rate"] for h in history], marker="o", label="student")
    else:
        ax_s.text(0.5, 0.5, "the task reports no success", ha="center", va="center", transform=ax_s.transAxes)
    ax_r.plot(steps, [h["return_mean"] for h in history], marker="o", label="student")
    if teacher_success is not None:
        ax = ax_s if has_success else ax_r
        ax.axhline(teacher_success, color="gray", linestyle="--", label=f"teacher ({teacher_success:.2f})")
    _label(ax_s, "success rate", (-0.02, 1.02))
    _label(ax_r, "return")
    (ax_s if has_success else ax_r).legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    if tb is not None:
        tb.add_figure("learning_curves", fig, global_step=int(steps[-1]) if steps else 0, close=False)
    return path


def plot_compared(
    runs: Mapping[str, Mapping[str, list[Curve]]], path: str | Path, teacher: Mapping[str, float] | None = None
) -> Path:
    """Mean +- std success curves of several methods over seeds, one panel per task: runs[task][method] = [curves]."""
    fig, axes = _figure(len(runs))
    for ax, (task, methods) in zip(axes, runs.items()):
        for method, curves in methods.items():
            steps = np.array([h["env_steps"] for h in curves[0]])
            n = min(len(c) for c in curves)
            success = np.array([[h["success_rate"] for h in c[:n]] for c in curves])
            mean, std = success.mean(0), success.std(0)
            ax.plot(steps[:n], mean, label=f"{method} ({len(curves)} seeds)")
            ax.fill_between(steps[:n], mean - std, mean + std, alpha=0.2)
        if teacher and task in teacher:
            ax.axhline(teacher[task], color="gray", linestyle="--", label=f"teacher ({teacher[task]:.2f})")
        ax.set_title(task)
        _label(ax, "success rate", (-0.02, 1.02))
        ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def _label(ax: Any, ylabel: str, ylim: tuple[float, float] | None = None) -> None:
    ax.set_xlabel("env steps")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
