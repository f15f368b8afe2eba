"""Bring your own env and expert: the generic Gymnasium path (`task=gym`) with an SB3 expert trained here, on
gymnasium's MuJoCo Reacher-v5 and Pusher-v5 (tasks without a success signal: every figure is a mean return).

Per task, one pipeline:
1. Expert: SAC (`algo=sac task=gym task.env_id=<id>`) on the task's own reward. Its learning curve and the
   checkpoint the teacher uses (`best`, by mean return) come from validation episodes (seed 200 000 + i), never
   from the evaluation episodes below.
2. The expert's mean return on the evaluation episodes (seed 100 000 + i), loaded as the students load it
   (`teacher=sb3 teacher.path=<expert run>`); a uniform-random policy on the same episodes for scale.
3. A DAgger student (`algo=dagger teacher=sb3 student=mlp`, beta linear from 1 over the rounds) evaluated after
   every round on the same evaluation episodes; per round the teacher calls per kept label.
4. Wall seconds of each stage. The two pipelines run two at a time in the full suite (one per core), so their wall
   seconds are those of a shared machine; returns and label counts do not depend on it.

The recovered fraction, (student - random) / (expert - random), puts the student's return on one scale for both tasks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from robodistill.benchmarks.runs import map_jobs, train_once
from robodistill.config import to_dict
from robodistill.evaluation.rollouts import PolicyFn, evaluate, teacher_policy
from robodistill.rundir import RunDir
from robodistill.tasks import make_env
from robodistill.teachers import make_teacher

TASKS = ("Reacher-v5", "Pusher-v5")
EVAL_SEED = 100_000  # conf/eval/default.yaml: the episodes every policy is scored on
VALIDATION_SEED = 200_000  # the expert's learning curve and best checkpoint: other episodes than the scored ones

# Expert steps: SAC ran at 50-70 env steps/s on one core here (probes with seed 1 on the validation episodes:
# Reacher -4.6 at 30k steps, -4.5 at 40k, flat; Pusher -39 at 10k, -36 at 30k, -32.6 at 50k, -31.7 at 60k, ~1 per
# 10k). 80k Pusher steps keep the full suite, both pipelines at once, near half an hour on two cores.
SIZES = {  # name: (--quick, full)
    "expert_steps": ({"Reacher-v5": 2000, "Pusher-v5": 2000}, {"Reacher-v5": 40_000, "Pusher-v5": 80_000}),
    "expert_curve_points": (1, 10),
    "validation_episodes": (4, 20),
    "rounds": (2, 5),
    "episodes_per_round": (4, 20),
    "updates_per_round": (50, 1500),
    "eval_episodes": (4, 50),
    "workers": (1, 2),
}


def sizes(quick: bool) -> dict[str, Any]:
    return {k: quick_value if quick else full for k, (quick_value, full) in SIZES.items()}


def random_policy(action_space: Any, seed: int) -> PolicyFn:
    """Uniform random actions in the task's action box, for a batch of observations."""
    rng = np.random.default_rng(seed)
    low, high = action_space.low, action_space.high

    def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
        batch = len(next(iter(obs.values())))
        return rng.uniform(low, high, size=(batch, *low.shape)).astype(np.float32)

    return policy


def returns(result: dict[str, Any]) -> dict[str, float]:
    """An evaluation's mean and std of the episode returns."""
    r = [e["return"] for e in result["per_episode"]]
    return {"return_mean": float(np.mean(r)), "return_std": float(np.std(r))}


def rounds_of(run_dir: Path) -> list[dict[str, Any]]:
    """Per DAgger round: beta, kept labels, the collection's mean return, the student's evaluation return after the
    round's update (the last round's is the run's final evaluation, eval.json), teacher calls per kept label and the
    run's wall seconds at the round's end."""
    run = RunDir(run_dir)
    lines = [m for m in run.metrics() if "round" in m]
    final = run.read_json("eval.json")
    out = []
    for i, m in enumerate(lines):
        last = i == len(lines) - 1
        out.append(
            {
                "round": m["round"],
                "beta": m["beta"],
                "labels_kept": m["collect/steps"],
                "teacher_calls": m["collect/teacher_calls"],  # states the teacher labelled, kept or not
                "labels_so_far": m["teacher_labels"],
                "collect_return_mean": m["collect/return_mean"],
                "eval_return_mean": final["return_mean"] if last else m.get("eval/return_mean"),
                "teacher_calls_per_label": m["collect/teacher_calls_per_label"],
                "wall_s": m["wall_s"],
            }
        )
    return out


def pipeline(env_id: str, s: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Expert, its evaluation, a random policy and a DAgger student on one task; returns every figure."""
    task = ["task=gym", f"task.env_id={env_id}", "eval.videos=0", "seed=0"]
    steps = s["expert_steps"][env_id]
    expert_dir, dagger_dir = out_dir / f"{env_id}_expert", out_dir / f"{env_id}_dagger"
    expert = train_once(
        [
            *task,
            "algo=sac",
            f"algo.total_timesteps={steps}",
            f"algo.eval_every={steps // s['expert_curve_points']}",
            f"algo.eval_episodes={s['validation_episodes']}",
            f"eval.episodes={s['validation_episodes']}",
            f"eval.seed={VALIDATION_SEED}",
        ],
        expert_dir,
    )
    curve = [
        {"env_steps": m["step"], "return_mean": m["eval/return_mean"]}
        for m in RunDir(expert_dir).metrics()
        if "eval/return_mean" in m
    ]

    task_cfg = to_dict(RunDir(expert_dir).config().task)
    env = make_env(task_cfg)
    t0 = time.perf_counter()
    teacher = make_teacher({"kind": "sb3", "path": str(expert_dir)}, env)
    scored = {"episodes": s["eval_episodes"], "seed": EVAL_SEED, "num_envs": 10, "progress": False}
    expert_eval = evaluate(teacher_policy(teacher), task_cfg, "state", **scored)
    expert_eval_s = time.perf_counter() - t0
    random_eval = evaluate(random_policy(env.action_space, seed=0), task_cfg, "state", **scored)
    env.close()

    rounds = s["rounds"]
    dagger = train_once(
        [
            *task,
            "algo=dagger",
            "teacher=sb3",
            f"teacher.path={expert_dir}",
            "student=mlp",
            f"algo.rounds={rounds}",
            f"algo.episodes_per_round={s['episodes_per_round']}",
            f"algo.updates_per_round={s['updates_per_round']}",
            f"algo.beta.horizon={rounds}",  # beta = 1, (R-1)/R, ..., 1/R: the student drives more every round
            "algo.eval_every=1",
            f"eval.episodes={s['eval_episodes']}",
            f"eval.seed={EVAL_SEED}",
        ],
        dagger_dir,
    )
    per_round = rounds_of(dagger_dir)
    student_eval = RunDir(dagger_dir).read_json("eval.json")
    kept = sum(r["labels_kept"] for r in per_round)
    calls = sum(r["teacher_calls"] for r in per_round) / kept
    exp, rnd, stu = returns(expert_eval), returns(random_eval), returns(student_eval)
    return {
        "expert": {
            "algo": "sac",
            "env_steps": expert["env_steps"],
            **exp,
            "validation_curve": curve,
            "train_wall_s": expert["wall_s"],
            "eval_wall_s": expert_eval_s,
        },
        "random": rnd,
        "student": {
            **stu,
            "recovered": (stu["return_mean"] - rnd["return_mean"]) / (exp["return_mean"] - rnd["return_mean"]),
            "rounds": per_round,
            "labels_kept": kept,
            "teacher_calls_per_label": calls,
            "wall_s": dagger["wall_s"],
        },
    }


def run(quick: bool, out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    s = sizes(quick)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = dict(zip(TASKS, map_jobs(pipeline, [(t, s, out_dir) for t in TASKS], s["workers"])))

    payload: dict[str, Any] = {
        "eval_episodes": s["eval_episodes"],
        "eval_seed": EVAL_SEED,
        "validation_seed": VALIDATION_SEED,
        "rounds": s["rounds"],
        "episodes_per_round": s["episodes_per_round"],
        "updates_per_round": s["updates_per_round"],
        "workers": s["workers"],
        "expert_return": {t: r["expert"]["return_mean"] for t, r in results.items()},
        "student_return": {t: r["student"]["return_mean"] for t, r in results.items()},
        "random_return": {t: r["random"]["return_mean"] for t, r in results.items()},
        "student_recovered": {t: r["student"]["recovered"] for t, r in results.items()},
        "teacher_calls_per_label": {t: r["student"]["teacher_calls_per_label"] for t, r in results.items()},
        "tasks": results,
    }
    lines = [
        f"{'task':<12}{'expert':>10}{'steps':>9}{'random':>10}{'student':>10}{'recovered':>11}{'calls/label':>13}"
        f"{'expert s':>10}{'eval s':>8}{'dagger s':>10}"
    ]
    for t, r in results.items():
        e, st = r["expert"], r["student"]
        lines.append(
            f"{t:<12}{e['return_mean']:>10.2f}{e['env_steps']:>9,}{r['random']['return_mean']:>10.2f}"
            f"{st['return_mean']:>10.2f}{st['recovered']:>11.2f}{st['teacher_calls_per_label']:>13.3f}"
            f"{e['train_wall_s']:>10.0f}{e['eval_wall_s']:>8.1f}{st['wall_s']:>10.0f}"
        )
    lines.append("")
    lines.append(
        f"{'task':<12}{'round':>6}{'beta':>6}{'labels':>8}{'collect ret':>13}{'eval ret':>10}{'calls/label':>13}"
        f"{'dagger s':>10}"
    )
    for t, r in results.items():
        for d in r["student"]["rounds"]:
            lines.append(
                f"{t:<12}{d['round']:>6}{d['beta']:>6.2f}{d['labels_so_far']:>8,}{d['collect_return_mean']:>13.2f}"
                f"{d['eval_return_mean']:>10.2f}{d['teacher_calls_per_label']:>13.3f}{d['wall_s']:>10.1f}"
            )
    lines += [
        f"(returns: mean over the same {s['eval_episodes']} seeded evaluation episodes, seed {EVAL_SEED} + i; expert: "
        f"SAC, its best checkpoint on validation episodes (seed {VALIDATION_SEED} + i); DAgger: {s['rounds']} rounds "
        f"of {s['episodes_per_round']} episodes, {s['updates_per_round']} updates each; recovered = (student - random)"
        f" / (expert - random))",
        f"(calls/label: states the teacher labelled per state kept in the dataset, 1.000: none thrown away; dagger s "
        f"per round: the run's wall seconds at the round's end, evaluation included; wall seconds with "
        f"{s['workers']} pipeline(s) at a time)",
    ]
    return payload, lines
