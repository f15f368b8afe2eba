"""The run review page: one self-contained static page (HTML, inline SVG figures, the runs' videos copied beside it;
no server, no CDN) that shows what one or several runs' students do.

Per run: task, algorithm, teacher and student; the final success with every evaluated episode; learning and loss
curves; the filmed episodes in a grid with an outcome filter (failures are filmed first, see `eval.videos_failures`);
for a chosen dataset episode, the student's and the teacher's actions per dimension over time and where the teacher
acted (beta). Where the run has a monitored evaluation (`scripts/evaluate.py <run> --monitor`), its filmed episodes
are shown with the failure monitor's timeline under each video: both scores over the steps (window means against
their thresholds), each method's first alarm marked, a playhead that follows the video (click to seek). Several
runs: a table of their figures and the config keys in which they differ.
"""

from __future__ import annotations

import html
import io
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from robodistill.data.dataset import live_demos, open_dataset
from robodistill.errors import UserError
from robodistill.rundir import RunDir
from robodistill.runtime.monitor import METHODS, SIGNALS, window_means

ACTION_EPISODES = 12  # dataset episodes whose actions the page carries (the last written, failures first)
ACTION_STEPS = 400  # at most this many steps of each
MONITORED = ("eval_best.json", "eval_last.json")  # monitored evaluations (scripts/evaluate.py --monitor), newest first
ALARM_COLOURS = {"fiper_joint": "#06c", "fiper": "#c0f", "rnd": "#e55", "entropy": "#e8871e"}


@dataclass
class RunReview:
    """What the page shows of one run, read from its directory."""

    name: str
    dir: Path
    config: dict[str, Any]
    evaluation: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    videos: list[dict[str, Any]]  # {"path", "episode", "success", "return", "length"}
    episodes: list[dict[str, Any]] = field(default_factory=list)  # dataset episodes' actions (see `read_actions`)
    notes: list[str] = field(default_factory=list)  # what the run lacks, said on the page
    monitor: dict[str, Any] | None = None  # the monitored evaluation's calibration (thresholds, window) and alarms


def load_run(directory: str | Path) -> RunReview:
    """Read one run directory, or one UserError naming what is missing."""
    run = RunDir(directory)
    if not run.dir.is_dir():
        raise UserError(f"{run.dir} is not a run directory: it does not exist")
    if not run.is_run():
        present = ", ".join(sorted(p.name for p in run.dir.iterdir())[:8]) or "nothing"
        raise UserError(
            f"{run.dir} is not a run directory: it has no config.yaml (a run directory holds config.yaml, "
            f"metrics.jsonl, eval.json, videos/; this one holds {present})"
        )
    cfg = OmegaConf.to_container(run.config(), resolve=False)
    notes: list[str] = []
    evaluation = json.loads((run.dir / "eval.json").read_text()) if (run.dir / "eval.json").exists() else None
    if evaluation is None:
        notes.append("no eval.json: the run has not finished its final evaluation")
    metrics = run.metrics()
    if not metrics:
        notes.append("no metrics.jsonl: no learning curves")
    videos = _videos(run, evaluation)
    monitored = _monitored(run)
    if monitored is not None:
        filmed = _videos(run, monitored)
        if filmed:
            videos = filmed
            notes.append(
                f"filmed episodes from the monitored evaluation ({monitored['file']}, {monitored['episodes']} "
                "episodes): the failure monitor's scores and first alarms under each video"
            )
    if not videos:
        notes.append("no videos: this run filmed no episode (eval.videos=0, or a task that cannot render)")
    episodes: list[dict[str, Any]] = []
    if run.dataset_path.exists():
        try:
            episodes = read_actions(run.dataset_path)
        except UserError as exc:
            notes.append(f"the run's dataset cannot be read: {exc}")
    else:
        notes.append("no dataset (data/dataset.hdf5): no student/teacher action plots")
    monitor = (
        None
        if monitored is None
        else {"file": monitored["file"], **monitored["monitor"], "alarms": monitored["alarms"]}
    )
    return RunReview(run.dir.name, run.dir, cfg, evaluation, metrics, videos, episodes, notes, monitor)


def _monitored(run: RunDir) -> dict[str, Any] | None:
    """The newest monitored evaluation of the run (one with `alarms` and the monitor's thresholds), or None."""
    found = [run.dir / name for name in MONITORED if (run.dir / name).exists()]
    for path in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        result = json.loads(path.read_text())
        if "alarms" in result and "monitor" in result:
            return {**result, "file": path.name}
    return None


def timeline(v: Mapping[str, Any], monitor: Mapping[str, Any]) -> str:
    """The failure monitor's timeline of one filmed episode: each signal's window mean over the steps as a share of
    its threshold (the dashed line is the threshold), each method's first alarm as a marker, a playhead."""
    scores, length = v.get("monitor_scores") or {}, int(v.get("length") or 0)
    if not scores or length < 1:
        return ""
    w, h, top = 1000, 60, 3.0  # the plot shows up to 3x a threshold
    lines = []
    for signal, colour in zip(SIGNALS, ("#e55", "#e8871e"), strict=True):
        ratio = window_means(scores[signal], int(monitor["window"])) / max(float(monitor["thresholds"][signal]), 1e-12)
        pts = " ".join(
            f"{w * k / max(length - 1, 1):.1f},{h - h * min(max(r, 0.0), top) / top:.1f}" for k, r in enumerate(ratio)
        )
        lines.append(
            f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"><title>{signal}</title></polyline>'
        )
    y1 = h - h / top
    svg = (
        f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="none"><line x1="0" x2="{w}" y1="{y1:.1f}" y2="{y1:.1f}" '
        f'stroke="#555" stroke-dasharray="6 4"/>{"".join(lines)}</svg>'
    )
    marks, said = [], []
    reported = v.get("alarm_step") or {}
    for method in [m for m in METHODS if m in reported]:
        step = reported[method]
        if step is None:
            said.append(f"{method}: no alarm")
            continue
        left = 100 * step / max(length - 1, 1)
        marks.append(
            f'<span class="alarm" data-method="{method}" data-step="{step}" style="left:{left:.2f}%;'
            f'background:{ALARM_COLOURS[method]}" title="{method} alarm at step {step}"></span>'
        )
        said.append(f"{method}: alarm at step {step} ({length - step} before the end)")
    return (
        f'<div class="timeline" data-length="{length}">{svg}{"".join(marks)}<span class="playhead"></span></div>'
        f'<p class="alarms">{html.escape(" · ".join(said))}</p>'
    )


def _videos(run: RunDir, evaluation: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The filmed episodes with their outcomes (an evaluation's `filmed`); mp4s of an older run without outcomes."""
    if evaluation is not None and evaluation.get("filmed"):  # found in the run's videos/ (a moved run too)
        filmed = []
        for f in evaluation["filmed"]:
            video = Path(f["video"])  # videos/<name>.mp4 (training's) or videos/eval_<checkpoint>/<name>.mp4
            path = next((p for p in (run.video_dir / video.name, run.video_dir / video.parent.name / video.name)
                         if p.exists()), None)  # fmt: skip
            if path is not None:
                filmed.append({**f, "path": path})
        return filmed
    found = sorted(run.video_dir.glob("*.mp4")) if run.video_dir.is_dir() else []
    return [{"path": p, "episode": None, "success": None, "return": None, "length": None} for p in found]


def read_actions(path: Path, limit: int = ACTION_EPISODES) -> list[dict[str, Any]]:
    """The last `limit` episodes of a dataset (failures first): executed, teacher and (where recorded) student
    actions per step, and whether the teacher acted."""
    with open_dataset(path) as f:
        groups = list(live_demos(f))[-4 * limit :]
        rows = []
        for g in groups:
            n = min(int(g.attrs["num_samples"]), ACTION_STEPS)
            ep = {
                "demo": g.name.split("/")[-1],
                "success": bool(g.attrs.get("success", False)),
                "round": int(g.attrs["round"]) if "round" in g.attrs else None,
                "beta": float(g.attrs["beta"]) if "beta" in g.attrs else None,
                "executed": np.round(g["actions"][:n], 4).tolist(),
            }
            if "teacher" in g:
                ep["teacher"] = np.round(g["teacher/actions"][:n], 4).tolist()
                ep["acted"] = g["teacher/acted"][:n].astype(int).tolist()
            if "student" in g:
                ep["student"] = np.round(g["student/actions"][:n], 4).tolist()
            rows.append(ep)
    rows = rows[::-1]  # newest first, then failures before successes
    rows.sort(key=lambda e: e["success"])
    return rows[:limit]


# ---- figures --------------------------------------------------------------------------------------------------
def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def curves_svg(metrics: Sequence[Mapping[str, Any]]) -> str | None:
    """Success, return and loss curves against the run's step (teacher labels where it logs them) as one SVG."""
    if not metrics:
        return None
    by_label = any("teacher_labels" in m for m in metrics)
    xlabel = "teacher labels" if by_label else "step (env steps or updates)"

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    losses = sorted({k for m in metrics for k in m if k.startswith("loss/") or k.startswith("train/")})
    fig = Figure(figsize=(13, 3.4))
    axes = fig.subplots(1, 3)
    for key, label in (("eval/success_rate", "evaluation"), ("collect/success_rate", "collected episodes")):
        x, y = series(key)
        if x:
            axes[0].plot(x, y, marker="o", label=label)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_title("success rate")
    for key, label in (("eval/return_mean", "evaluation"), ("collect/return_mean", "collected episodes")):
        x, y = series(key)
        if x:
            axes[1].plot(x, y, marker="o", label=label)
    axes[1].set_title("return")
    for key in losses[:6]:
        x, y = series(key)
        if x and all(isinstance(v, (int, float)) for v in y):
            axes[2].plot(x, y, label=key)
    axes[2].set_title("losses")
    values = [v for k in losses[:6] for v in series(k)[1]]
    if values and min(values) > 0 and max(values) / min(values) > 100:  # losses over decades: a log axis
        axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return _svg(fig)


# ---- the page -------------------------------------------------------------------------------------------------
def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def headline(r: RunReview) -> dict[str, Any]:
    """The figures a run is compared by."""
    ev = r.evaluation or {}
    last = {k: v for m in r.metrics for k, v in m.items()}
    return {
        "success": ev.get("success_rate"),
        "return": ev.get("return_mean"),
        "episodes": ev.get("episodes"),
        "teacher labels": last.get("teacher_labels"),
        "steps": last.get("step"),
        "wall s": last.get("wall_s"),
    }


def describe(r: RunReview) -> dict[str, str]:
    """Task, algorithm, teacher and student of a run."""
    c = OmegaConf.create(r.config)

    def get(key: str, default: Any = "?") -> Any:
        return OmegaConf.select(c, key, default=default)

    teacher = str(get("teacher.kind", get("teacher.name", "–")))
    source = get("teacher.path", None) or get("teacher.target", None) or get("teacher.uri", None)
    keys = get("student.obs_keys", [])
    student = f"{get('student.name', '–')} ({get('student.kind')})"
    return {
        "task": str(get("task.env_id", get("task.name"))),
        "algorithm": str(get("algo.name")),
        "teacher": f"{teacher}: {source}" if source else teacher,
        "student": f"{student} reading {', '.join(map(str, keys))}" if keys else student,
    }


def differing_keys(runs: Sequence[RunReview]) -> list[tuple[str, list[str]]]:
    """The config keys whose values differ between the runs (hydra's own keys left out)."""
    flats = [_flat(r.config) for r in runs]
    keys = sorted({k for f in flats for k in f if not k.startswith("hydra")})
    out = []
    for k in keys:
        values = [json.dumps(f.get(k, "(unset)"), default=str) for f in flats]
        if len(set(values)) > 1:
            out.append((k, values))
    return out


def _outcome(success: bool | None) -> str:
    return "success" if success else ("failure" if success is False else "unknown")


def _run_section(r: RunReview, index: int, assets: Path, out: Path) -> str:
    e = html.escape
    desc = describe(r)
    parts = [f'<section class="run" id="run{index}"><h2>{e(r.name)}</h2>']
    parts.append("<table class=kv>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in desc.items()))
    ev = r.evaluation
    if ev is not None:
        rate = ev.get("success_rate")
        score = f"{rate:.2f} success" if rate is not None else f"return {ev['return_mean']:.2f}"
        parts.append(f"<tr><th>final evaluation</th><td>{e(score)} over {ev['episodes']} episodes</td></tr>")
    parts.append(f"<tr><th>directory</th><td><code>{e(str(r.dir))}</code></td></tr></table>")
    if ev is not None:
        cells = "".join(
            f'<span class="ep {_outcome(p["success"])}" title="episode {p["episode"]}: {_outcome(p["success"])}, '
            f'return {p["return"]:.2f}, {p["length"]} steps"></span>'
            for p in ev.get("per_episode", [])
        )
        parts.append(f'<div class="episodes" aria-label="evaluated episodes">{cells}</div>')
    for note in r.notes:
        parts.append(f'<p class="note">{e(note)}</p>')
    svg = curves_svg(r.metrics)
    if svg:
        parts.append(f'<h3>Learning curves</h3><figure class="curves">{svg}</figure>')
    if r.videos:
        parts.append(
            '<h3>Filmed episodes</h3><div class="filter" role="group">'
            + "".join(
                f'<button data-run="{index}" data-show="{k}"{" class=on" if k == "all" else ""}>{k}</button>'
                for k in ("all", "success", "failure")
            )
            + "</div>"
        )
        if r.monitor is not None:
            m = r.monitor
            parts.append(
                f"<p>Under each video, the failure monitor ({e(m['file'])}, α = {m['alpha']}, window {m['window']}): "
                '<span style="color:#e55">RND score</span> and <span style="color:#e8871e">chunk spread</span> as '
                "window means over their thresholds (dashed: the threshold, the plot tops out at 3×), each method's "
                "first alarm as a marker (" + ", ".join(
                    f'<span style="color:{c}">{k}</span>' for k, c in ALARM_COLOURS.items()
                ) + "); click the timeline to seek.</p>"
            )  # fmt: skip
        cards = []
        target = assets / f"run{index}"
        target.mkdir(parents=True, exist_ok=True)
        for v in r.videos:
            dst = target / Path(v["path"]).name
            shutil.copyfile(v["path"], dst)
            outcome = _outcome(v["success"])
            label = f"episode {v['episode']}" if v["episode"] is not None else Path(v["path"]).stem
            detail = f" · return {v['return']:.2f} · {v['length']} steps" if v.get("return") is not None else ""
            if v.get("matches_evaluation") is False:
                detail += " · filmed re-run differs from the evaluated episode"
            line = timeline(v, r.monitor) if r.monitor is not None else ""
            cards.append(
                f'<div class="card {outcome}" data-outcome="{outcome}"><video src="{e(dst.relative_to(out).as_posix())}" '
                f'controls muted preload="auto" playsinline></video>{line}<p><b class="{outcome}">{outcome}</b> '
                f"{e(label)}{e(detail)}</p></div>"
            )
        parts.append(f'<div class="grid" id="grid{index}">{"".join(cards)}</div>')
    if r.episodes:
        options = "".join(
            f'<option value="{i}">{e(ep["demo"])}: {_outcome(ep["success"])}'
            + (f", round {ep['round']}" if ep["round"] is not None else "")
            + (f", beta {ep['beta']:.2f}" if ep["beta"] is not None else "")
            + "</option>"
            for i, ep in enumerate(r.episodes)
        )
        parts.append(
            "<h3>Student and teacher actions</h3><p>Per action dimension over the episode's steps: the student's "
            "action (blue), the teacher's label (orange); shaded steps are those where the teacher's action was "
            "executed (beta).</p>"
            f'<select class="episode-pick" data-run="{index}">{options}</select>'
            f'<div class="actions" id="actions{index}"></div>'
            f'<script type="application/json" id="episodes{index}">{json.dumps(r.episodes)}</script>'
        )
    parts.append("</section>")
    return "".join(parts)


def _comparison(runs: Sequence[RunReview]) -> str:
    e = html.escape
    heads = [headline(r) for r in runs]
    cols = list(heads[0])
    rows = "".join(
        f"<tr><td>{e(r.name)}</td><td>{e(describe(r)['algorithm'])}</td>"
        + "".join(f"<td>{e(_fmt(h[c]))}</td>" for c in cols)
        + "</tr>"
        for r, h in zip(runs, heads, strict=True)
    )
    table = (
        "<h2>Runs side by side</h2><table class=cmp><tr><th>run</th><th>algo</th>"
        + "".join(f"<th>{e(c)}</th>" for c in cols)
        + f"</tr>{rows}</table>"
    )
    diff = differing_keys(runs)
    if diff:
        body = "".join(
            f"<tr><td><code>{e(k)}</code></td>" + "".join(f"<td>{e(v)}</td>" for v in vals) + "</tr>"
            for k, vals in diff
        )
        names = "".join(f"<th>{e(r.name)}</th>" for r in runs)
        table += f"<h3>Config keys that differ</h3><table class=cmp><tr><th>key</th>{names}</tr>{body}</table>"
    else:
        table += "<p>The runs' configs are the same.</p>"
    return f'<section class="compare">{table}</section>'


def write_review(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write the review page of `run_dirs` into `out` (index.html and assets/); returns the page's path."""
    if not run_dirs:
        raise UserError("review needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    assets = tmp / "assets"
    sections = "".join(_run_section(r, i, assets, tmp) for i, r in enumerate(runs))
    compare = _comparison(runs) if len(runs) > 1 else ""
    title = "robodistill review: " + ", ".join(r.name for r in runs)
    made = time.strftime("%Y-%m-%d %H:%M:%S")
    page = PAGE.format(title=html.escape(title), css=CSS, js=JS, made=made, compare=compare, sections=sections)
    (tmp / "index.html").write_text(page)
    if out.exists():  # replaced whole: a failure above leaves the previous page as it was
        shutil.rmtree(out)
    tmp.rename(out)
    return out / "index.html"


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{css}</style></head>
<body><header><h1>{title}</h1><p>written {made} by scripts/review.py</p></header>
{compare}{sections}
<script>{js}</script></body></html>
"""

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 0 16px 40px; color: #222; }
h1 { font-size: 20px; } h2 { border-bottom: 1px solid #ccc; padding-top: 12px; } h3 { margin-bottom: 6px; }
table { border-collapse: collapse; } th, td { text-align: left; padding: 2px 10px 2px 0; vertical-align: top; }
table.cmp td, table.cmp th { border-bottom: 1px solid #eee; }
.kv th { color: #555; font-weight: normal; }
.episodes { display: flex; flex-wrap: wrap; gap: 2px; margin: 8px 0; }
.ep { width: 12px; height: 12px; border-radius: 2px; background: #bbb; }
.ep.success { background: #3c9; } .ep.failure { background: #e55; }
.note { color: #a60; }
figure.curves svg { width: 100%; height: auto; }
.filter button { margin-right: 4px; padding: 3px 10px; border: 1px solid #888; background: #fff; cursor: pointer; }
.filter button.on { background: #333; color: #fff; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; margin-top: 8px; }
.card video { width: 100%; background: #000; } .card p { margin: 2px 0; }
b.success { color: #1a7; } b.failure { color: #c33; } b.unknown { color: #777; }
.timeline { position: relative; height: 60px; background: #fafafa; border: 1px solid #ddd; cursor: pointer; }
.timeline svg { width: 100%; height: 100%; display: block; }
.timeline .alarm { position: absolute; top: 0; bottom: 0; width: 3px; margin-left: -1px; }
.timeline .playhead { position: absolute; top: 0; bottom: 0; width: 1px; background: #000; left: 0; }
p.alarms { font-size: 12px; color: #555; }
.actions { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 8px; }
.actions svg { background: #fafafa; border: 1px solid #ddd; }
"""

JS = """
document.querySelectorAll('.filter button').forEach(function (b) {
  b.addEventListener('click', function () {
    var grid = document.getElementById('grid' + b.dataset.run);
    grid.querySelectorAll('.card').forEach(function (c) {
      c.style.display = (b.dataset.show === 'all' || c.dataset.outcome === b.dataset.show) ? '' : 'none';
    });
    b.parentNode.querySelectorAll('button').forEach(function (o) { o.classList.toggle('on', o === b); });
  });
});
document.querySelectorAll('.card').forEach(function (card) {
  var video = card.querySelector('video'), line = card.querySelector('.timeline');
  if (!video || !line) return;
  var head = line.querySelector('.playhead');
  video.addEventListener('timeupdate', function () {
    if (video.duration) head.style.left = (100 * video.currentTime / video.duration) + '%';
  });
  line.addEventListener('click', function (ev) {
    var box = line.getBoundingClientRect();
    if (video.duration) video.currentTime = video.duration * (ev.clientX - box.left) / box.width;
  });
});
var NS = 'http://www.w3.org/2000/svg';
function el(name, attrs, parent) {
  var n = document.createElementNS(NS, name);
  for (var k in attrs) n.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(n);
  return n;
}
function drawEpisode(run, i) {
  var eps = JSON.parse(document.getElementById('episodes' + run).textContent);
  var ep = eps[i], box = document.getElementById('actions' + run);
  box.innerHTML = '';
  var student = ep.student || ep.executed, teacher = ep.teacher, T = student.length, dims = student[0].length;
  var W = 300, H = 110, P = 4;
  for (var d = 0; d < dims; d++) {
    var svg = el('svg', {width: W, height: H + 16, class: 'dim'}, box);
    var t = el('text', {x: 4, y: 12, 'font-size': 11}, svg); t.textContent = 'action[' + d + ']';
    var g = el('g', {transform: 'translate(0,16)'}, svg);
    var x = function (k) { return P + (W - 2 * P) * k / Math.max(T - 1, 1); };
    var y = function (v) { return H - P - (H - 2 * P) * (Math.max(-1.2, Math.min(1.2, v)) + 1.2) / 2.4; };
    if (ep.acted) ep.acted.forEach(function (a, k) {
      if (a) el('rect', {x: x(k) - (W - 2 * P) / (2 * T), y: 0, width: (W - 2 * P) / T, height: H, fill: '#fde6c8'}, g);
    });
    el('line', {x1: P, x2: W - P, y1: y(0), y2: y(0), stroke: '#ccc'}, g);
    var line = function (rows, colour) {
      el('polyline', {fill: 'none', stroke: colour, 'stroke-width': 1.5,
        points: rows.map(function (r, k) { return x(k) + ',' + y(r[d]); }).join(' ')}, g);
    };
    if (teacher) line(teacher, '#e8871e');
    line(student, '#2a6fdb');
  }
}
document.querySelectorAll('.episode-pick').forEach(function (s) {
  s.addEventListener('change', function () { drawEpisode(s.dataset.run, +s.value); });
  drawEpisode(s.dataset.run, 0);
});
"""
