"""VLA-OPD figures: on-policy distillation of a small token policy from a larger one, per loss (rkl, fkl, ce),
against SFT on the teacher's demonstrations; forgetting of another task; remote vs in-process teacher.

1. Teacher: a larger VLA (student=vla_large) trained with algo=sft on scripted demos of both tasks (seed 0).
2. Per seed, a base student: the small VLA trained with algo=sft on fewer scripted demos of both tasks.
3. Per seed and task, from that base student, the same rounds of collect -> update for every variant:
   `rkl`, `fkl`, `ce` (algo=opd: the student samples its tokens and drives; the teacher labels its states) and
   `sft` (the teacher drives, beta = 1, and the student is fitted by hard CE to the teacher's tokens on all
   teacher demonstrations so far: SFT on teacher demonstrations, grown round by round). After every round the
   student is evaluated with argmax actions on the same seeded episodes; teacher labels are counted.
4. Forgetting: after OPD (rkl) and after SFT on one task, success on the other task.
5. Remote vs in-process teacher: collection throughput with the teacher in this process vs behind
   scripts/serve.py over loopback (same student, same episodes, interleaved).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from robodistill.benchmarks.runs import call_job, map_jobs, served, train_once
from robodistill.data.collector import Collector, make_vector_env
from robodistill.evaluation.rollouts import evaluate, student_policy
from robodistill.rundir import RunDir
from robodistill.tasks import env_fns
from robodistill.teachers import RemoteTeacher, VLATeacher, load_policy

TASKS = {"pushcube": "robodistill/PushCube-v0", "pickcube": "robodistill/PickCube-v0"}
# Both policies read the front camera's image, the instruction and the state vector (the two tasks' are alike in
# shape): pixel-only token policies did not learn these tasks on this CPU budget (probes in the README).
OBS_KEYS = "[front_rgb,state,instruction]"
LOSSES = ("rkl", "fkl", "ce")
VARIANTS = (*LOSSES, "sft")


SIZES = {  # name: (--quick, full)
    "seeds": ([0], [0, 1, 2]),
    "image": (32, 64),
    "teacher_demos": (4, 100),
    "teacher_updates": (20, 2000),
    "base_demos": (2, 10),
    "base_updates": (10, 400),
    "rounds": (2, 5),
    "episodes_per_round": (2, 16),
    "updates_per_round": (4, 100),
    "eval": (2, 20),
    "heldout_eval": (2, 30),
    "throughput_episodes": (2, 16),
    "net": (["student.d_model=32", "student.layers=1"], []),
}


def sizes(quick: bool) -> dict[str, Any]:
    return {k: quick_value if quick else full for k, (quick_value, full) in SIZES.items()}


def common(s: dict[str, Any], seed: int) -> list[str]:
    return [
        f"seed={seed}",
        f"task.kwargs.image_size={s['image']}",
        "eval.videos=0",
        "eval.num_envs=10",
        f"eval.episodes={s['eval']}",
        "collector.num_envs=8",
        f"student.obs_keys={OBS_KEYS}",
    ]


def sft_job(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """A multi-task SFT run; its success on each task."""
    summary = train_once(overrides, run_dir)
    return {"tasks": RunDir(run_dir).read_json("eval.json")["tasks"], "wall_s": summary["wall_s"]}


def opd_job(overrides: list[str], run_dir: Path, heldout: dict[str, Any], heldout_episodes: int) -> dict[str, Any]:
    """One post-training run (OPD with a loss, or SFT on teacher demos); per round its success (argmax), student
    entropy, KL to the teacher and teacher labels so far; then its success on the held-out task."""
    summary = train_once(overrides, run_dir)
    run = RunDir(run_dir)
    rounds = [m for m in run.metrics() if "opd/entropy" in m]
    success = [m["eval/success_rate"] for m in rounds[:-1]]
    success.append(run.read_json("eval.json")["success_rate"])
    policy = load_policy(str(run_dir), "last")
    other = evaluate(
        student_policy(policy, None),
        heldout,
        "state+rgb+language",
        episodes=heldout_episodes,
        seed=100_000,
        num_envs=10,
        progress=False,
    )
    return {
        "success": success,
        "entropy": [m["opd/entropy"] for m in rounds],
        "kl": [m["opd/kl"] for m in rounds],
        "labels": [m["teacher_labels"] for m in rounds],
        "heldout_success": other["success_rate"],
        "wall_s": summary["wall_s"],
    }


def labels_to(target: float, base: float, labels: list[int], success: list[float]) -> int | None:
    """Teacher labels used when success first reached `target` (0 if the base student already did); None: never."""
    if base >= target:
        return 0
    return next((n for n, s in zip(labels, success) if s >= target), None)


def throughput(
    teacher_run: Path, student_run: Path, task: dict[str, Any], episodes: int, reps: int = 2
) -> dict[str, float]:
    """Collection steps/s with the VLA teacher in this process vs behind scripts/serve.py on loopback, interleaved."""
    torch.set_num_threads(1)
    with served(
        f"task.env_id={task['env_id']}",
        f"task.kwargs.image_size={task['kwargs']['image_size']}",
        "teacher=vla",
        f"teacher.path={teacher_run}",
        f"teacher.obs_keys={OBS_KEYS}",
        "torch_threads=1",
    ) as url:
        local = VLATeacher(load_policy(str(teacher_run)))
        remote = RemoteTeacher.from_config({"uri": url, "obs_keys": local.obs_keys})
        student = load_policy(str(student_run))
        venv = make_vector_env(env_fns(task, 8, "state+rgb+language"))
        rates: dict[str, list[float]] = {"local": [], "remote": []}
        for r in range(reps):
            for name, teacher in (("local", local), ("remote", remote)):
                c = Collector(venv, teacher, student, None, seed=r, student_deterministic=False)
                stats = c.collect(episodes, beta=0.0, seed=50_000 + r, progress=False)
                rates[name].append(stats.env_steps / stats.wall_s)
        venv.close()
        remote.client.close()
    return {k: float(np.mean(v)) for k, v in rates.items()}


def plot(curves: dict[str, dict[str, dict[str, list[float]]]], key: str, path: Path, ylabel: str) -> None:
    fig = Figure(figsize=(5 * len(curves), 3.5))  # the object API: a file, no pyplot state
    for ax, (task, per_variant) in zip(fig.subplots(1, len(curves), squeeze=False)[0], curves.items()):
        for variant, c in per_variant.items():
            if key in c:
                ax.plot(range(len(c[key])), c[key], marker="o", label=variant)
        ax.set(title=task, xlabel="round", ylabel=ylabel)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run(quick: bool, out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    s = sizes(quick)
    seeds, workers = s["seeds"], 1 if quick else 2
    teacher_dir = out_dir / "teacher"
    sft = ["algo=sft", "task=pushcube", f"algo.tasks=[{','.join(TASKS.values())}]"]

    def sft_run(student: str, seed: int, demos: int, updates: int, run_dir: Path) -> tuple:
        size = [*common(s, seed), *s["net"], f"algo.num_demos={demos}", f"algo.updates={updates}"]
        return sft_job, ([*sft, f"student={student}", *size], run_dir)

    jobs = [sft_run("vla_large", 0, s["teacher_demos"], s["teacher_updates"], teacher_dir)]
    for seed in seeds:
        jobs.append(sft_run("vla", seed, s["base_demos"], s["base_updates"], out_dir / f"base_s{seed}"))
    first = map_jobs(call_job, jobs, workers)
    teacher, bases = first[0], dict(zip(seeds, first[1:]))

    jobs, keys = [], []
    for seed in seeds:
        for task, task_id in TASKS.items():
            other = next(t for t in TASKS.values() if t != task_id)
            heldout = {
                "env_id": other,
                "kwargs": {"control_mode": "pd_ee_delta_pos", "image_size": s["image"], "cameras": ["front"]},
            }
            for variant in VARIANTS:
                sft_mode = ["opd.loss=ce", "algo.replay=all", "algo.beta.start=1.0"]
                mode = sft_mode if variant == "sft" else [f"opd.loss={variant}"]
                overrides = [
                    "algo=opd",
                    f"task={task}",
                    *common(s, seed),
                    "teacher=vla",
                    f"teacher.path={teacher_dir}",
                    f"teacher.obs_keys={OBS_KEYS}",
                    f"algo.init={out_dir / f'base_s{seed}'}",
                    f"algo.rounds={s['rounds']}",
                    "algo.eval_every=1",
                    f"algo.episodes_per_round={s['episodes_per_round']}",
                    f"algo.updates_per_round={s['updates_per_round']}",
                    "algo.lr=1e-3",
                    *mode,
                ]
                jobs.append((opd_job, (overrides, out_dir / f"{task}_{variant}_s{seed}", heldout, s["heldout_eval"])))
                keys.append((seed, task, variant))
    results = dict(zip(keys, map_jobs(call_job, jobs, workers)))

    task_cfg = {
        "env_id": TASKS["pushcube"],
        "kwargs": {"control_mode": "pd_ee_delta_pos", "image_size": s["image"], "cameras": ["front"]},
    }
    rates = throughput(teacher_dir, out_dir / "base_s0", task_cfg, s["throughput_episodes"])

    payload: dict[str, Any] = {
        "sizes": s,
        "teacher_success": teacher["tasks"],
        "tasks": {},
        "runs": {},
        "base_success": {k: v["tasks"] for k, v in bases.items()},
    }
    lines = [
        f"{'task':<26}{'variant':<8}{'success per round (mean over seeds)':<44}{'entropy first -> last':>22}"
        f"{'labels to 90%':>15}"
    ]
    to90: dict[str, list[float | None]] = {"opd": [], "sft": []}
    forgetting: dict[str, list[float]] = {"opd": [], "sft": [], "base": []}
    for task, task_id in TASKS.items():
        other = next(t for t in TASKS.values() if t != task_id)
        target = 0.9 * teacher["tasks"][task_id]
        payload["tasks"][task_id] = {"teacher_success": teacher["tasks"][task_id], "target_90pct": target}
        for variant in VARIANTS:
            per_seed = [results[(seed, task, variant)] for seed in seeds]
            curve = {
                k: np.mean([r[k] for r in per_seed], axis=0).tolist() for k in ("success", "entropy", "kl", "labels")
            }
            base = float(np.mean([bases[seed]["tasks"][task_id] for seed in seeds]))
            reached = [
                labels_to(target, bases[seed]["tasks"][task_id], r["labels"], r["success"])
                for seed, r in zip(seeds, per_seed)
            ]
            curve.update(
                base_success=base,
                labels_to_90pct_per_seed=reached,
                heldout_success=[r["heldout_success"] for r in per_seed],
            )
            payload["tasks"][task_id][variant] = curve
            for seed, r in zip(seeds, per_seed):
                payload["runs"][f"{task}_{variant}_s{seed}"] = r
            if variant in ("rkl", "sft"):
                key = "opd" if variant == "rkl" else "sft"
                to90[key] += reached
                forgetting[key] += [r["heldout_success"] for r in per_seed]
            n90 = [x for x in reached if x is not None]
            n90_text = f"{np.mean(n90):.0f} ({len(n90)}/{len(seeds)})" if n90 else f"not in {int(curve['labels'][-1])}"
            lines.append(
                f"{task_id:<26}{variant:<8}{' '.join(f'{x:.2f}' for x in [base, *curve['success']]):<44}"
                f"{curve['entropy'][0]:>10.2f} -> {curve['entropy'][-1]:<8.2f}{n90_text:>15}"
            )
        forgetting["base"] += [bases[seed]["tasks"][other] for seed in seeds]
    reached_90 = {k: [x for x in v if x is not None] for k, v in to90.items()}
    payload["labels_to_90pct"] = {k: float(np.mean(v)) if v else None for k, v in reached_90.items()}
    payload["labels_to_90pct_reached"] = {k: f"{sum(x is not None for x in v)}/{len(v)}" for k, v in to90.items()}
    payload["forgetting"] = {k: float(np.mean(v)) for k, v in forgetting.items()}
    payload["remote_over_local_throughput"] = rates["remote"] / rates["local"]
    payload["throughput_steps_per_s"] = rates
    curves = {t: {v: payload["tasks"][t][v] for v in VARIANTS} for t in TASKS.values()}
    plot(curves, "entropy", out_dir.parent / "opd_entropy.png", "student per-token entropy (nats)")
    plot(curves, "success", out_dir.parent / "opd_success.png", "success (argmax)")

    l90 = payload["labels_to_90pct"]
    ratio = l90["sft"] / l90["opd"] if l90["opd"] and l90["sft"] else None
    lines += [
        f"teacher success: {', '.join(f'{t}: {v:.2f}' for t, v in teacher['tasks'].items())}",
        f"teacher labels to 90% of the teacher's success (mean over seeds and tasks that reached it): OPD(rkl) "
        f"{l90['opd']} [{payload['labels_to_90pct_reached']['opd']}], SFT {l90['sft']} "
        f"[{payload['labels_to_90pct_reached']['sft']}]" + (f"; SFT/OPD = {ratio:.1f}x" if ratio else ""),
        f"forgetting: held-out task success after OPD(rkl) {payload['forgetting']['opd']:.2f}, after SFT "
        f"{payload['forgetting']['sft']:.2f} (base student {payload['forgetting']['base']:.2f})",
        f"remote/in-process teacher collection throughput: {payload['remote_over_local_throughput']:.2f} "
        f"({rates['remote']:.0f} vs {rates['local']:.0f} env steps/s, loopback, 8 envs)",
        f"(success per round: round 0 is the base student, then after each round; {len(seeds)} seeds x {s['eval']} "
        f"episodes; entropy: student per-token entropy on the round's visited states, max ln(256) = 5.55)",
    ]
    return payload, lines
