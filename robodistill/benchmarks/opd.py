"""VLA-OPD figures: camera-only token students distilled on-policy from a privileged token teacher served over the
wire, per loss (rkl, fkl, ce), against SFT on the teacher's demonstrations at equal teacher labels; forgetting of
another task; a cached teacher against a live one; specialists merged into one student; a horizon curriculum.

1. Teacher: a larger token policy (student=vla_large) reading the state and the instruction (no image), trained with
   algo=sft on scripted demos of both tasks (seed 0), served by scripts/serve.py; every student run asks it over
   loopback (teacher=remote). A diffusion policy on PickCube's state is the second specialist.
2. Per seed, a base student: the small camera-only token policy (student=vla: front + wrist cameras, proprioception,
   instruction; each camera through the keypoint encoder) trained with algo=sft on a few scripted demos of both tasks.
3. Per seed and task, from that base student, the same rounds of collect -> update for every variant (rkl and sft
   on every seed, fkl and ce on the first; every update samples all rounds' states so far, algo.replay=all):
   `rkl`, `fkl`, `ce` (algo=opd: the student samples its tokens and drives; the teacher labels its states) and
   `sft` (the teacher drives, beta = 1, and the student is fitted by hard CE to the teacher's tokens on all
   teacher demonstrations so far: SFT on teacher demonstrations, grown round by round). After every round the
   student is evaluated with argmax actions on the same seeded episodes; teacher labels are counted; the labels
   each needs to reach 90 % of the teacher's success.
4. Forgetting: after OPD (rkl) and after SFT on one task, success on the other task (the base student's before).
5. Cached teacher (seed 0, PushCube, rkl): the live run's dataset replayed with algo.teacher_cache (no teacher).
6. Specialists merged (seed 0): teacher=router, PushCube -> the token teacher over the wire, PickCube -> the
   diffusion policy (no logits: soft token targets); one student on its own rollouts of both (algo.tasks).
7. Horizon curriculum (seed 0, PushCube, rkl): collector.student_horizon linear from 10 steps to the episode limit,
   against the vanilla run: success and teacher/student KL per round.
8. Remote vs in-process teacher: collection throughput with the teacher in this process vs behind scripts/serve.py
   over loopback (same student, same episodes, interleaved).
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
# The teacher reads the privileged state and the instruction (a probe: 200 demos per task and 4000 updates gave
# 0.90 / 0.96 on 50 episodes of other seeds than the evaluation's); the students read cameras, proprioception and the
# instruction only (student=vla's own keys).
TEACHER_KEYS = "[state,instruction]"
OBS_MODE = "state+rgb+language"  # what a student run's envs give: the student's cameras and the teacher's state
LOSSES = ("rkl", "fkl", "ce")
VARIANTS = (*LOSSES, "sft")
PRIMARY = ("rkl", "sft")  # on every seed: OPD against SFT in labels to 90 %; the other losses on secondary_seeds


SIZES = {  # name: (--quick, full)
    "seeds": ([0], [0, 1, 2]),  # rkl and sft, the labels-to-90% comparison
    "secondary_seeds": ([0], [0]),  # fkl and ce (the entropy ordering)
    "image": (32, 64),
    "teacher_demos": (4, 200),
    "teacher_updates": (20, 4000),
    "teacher_eval": (2, 50),
    "dp_demos": (4, 100),
    "dp_updates": (20, 3000),
    "base_demos": (2, 20),
    "base_updates": (10, 1000),
    "rounds": (2, 5),
    "episodes_per_round": (2, 16),
    "updates_per_round": (4, 400),
    "eval": (2, 20),
    "heldout_eval": (2, 30),
    "throughput_episodes": (2, 16),
    "net": (["student.d_model=32", "student.layers=1"], []),
}


def sizes(quick: bool) -> dict[str, Any]:
    return {k: quick_value if quick else full for k, (quick_value, full) in SIZES.items()}


def variants(s: dict[str, Any], seed: int) -> list[str]:
    """The variants a seed runs: rkl and sft on every seed, fkl and ce on the secondary seeds."""
    return [v for v in VARIANTS if v in PRIMARY or seed in s["secondary_seeds"]]


def task_config(env_id: str, s: dict[str, Any]) -> dict[str, Any]:
    """The task config of `env_id` at the suite's image size (for evaluations and collection outside a run)."""
    return {"env_id": env_id, "kwargs": {"control_mode": "pd_ee_delta_pos", "image_size": s["image"]}}


def common(s: dict[str, Any], seed: int) -> list[str]:
    return [
        f"seed={seed}",
        f"task.kwargs.image_size={s['image']}",
        "eval.videos=0",
        "eval.num_envs=10",
        f"eval.episodes={s['eval']}",
        "collector.num_envs=8",
    ]


def sft_job(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """A multi-task SFT run; its success on each task."""
    summary = train_once(overrides, run_dir)
    return {"tasks": RunDir(run_dir).read_json("eval.json")["tasks"], "wall_s": summary["wall_s"]}


def plain_job(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """A training run's summary (e.g. the diffusion specialist)."""
    return train_once(overrides, run_dir)


def opd_job(
    overrides: list[str], run_dir: Path, heldout: dict[str, Any] | None = None, heldout_episodes: int = 0
) -> dict[str, Any]:
    """One post-training run (OPD with a loss, or SFT on teacher demos); per round its success (argmax), student
    entropy, KL to the teacher, teacher labels so far and teacher calls; then its success on the held-out task."""
    summary = train_once(overrides, run_dir)
    run = RunDir(run_dir)
    rounds = [m for m in run.metrics() if "opd/entropy" in m]
    result = run.read_json("eval.json")
    out = {
        "success": [*(m["eval/success_rate"] for m in rounds[:-1]), result["success_rate"]],
        "entropy": [m["opd/entropy"] for m in rounds],
        "kl": [m["opd/kl"] for m in rounds],
        "labels": [m["teacher_labels"] for m in rounds],
        "teacher_calls": int(sum(m["collect/teacher_calls"] for m in rounds)),
        "tasks": result.get("tasks", {}),
        "wall_s": summary["wall_s"],
    }
    if heldout is not None:
        policy = load_policy(str(run_dir), "last")
        other = evaluate(
            student_policy(policy, None), heldout, OBS_MODE, heldout_episodes, seed=100_000, num_envs=10, progress=False
        )
        out["heldout_success"] = other["success_rate"]
    return out


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
        f"teacher.obs_keys={TEACHER_KEYS}",
        "torch_threads=1",
    ) as url:
        local = VLATeacher(load_policy(str(teacher_run)))
        remote = RemoteTeacher.from_config({"uri": url, "obs_keys": local.obs_keys})
        student = load_policy(str(student_run))
        venv = make_vector_env(env_fns(task, 8, OBS_MODE))
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
    teacher_dir, dp_dir = out_dir / "teacher", out_dir / "pickcube_dp"
    sft = ["algo=sft", "task=pushcube", f"algo.tasks=[{','.join(TASKS.values())}]"]

    def sft_run(student: list[str], seed: int, demos: int, updates: int, run_dir: Path) -> tuple:
        size = [*common(s, seed), *s["net"], f"algo.num_demos={demos}", f"algo.updates={updates}"]
        return sft_job, ([*sft, *student, *size], run_dir)

    # 1-2: the teacher, the diffusion specialist and the base students
    teacher_args = ["student=vla_large", f"student.obs_keys={TEACHER_KEYS}", f"eval.episodes={s['teacher_eval']}"]
    dp = ["algo=diffusion", "task=pickcube", "student=diffusion", *common(s, 0), f"eval.episodes={s['teacher_eval']}"]
    jobs = [
        sft_run(teacher_args, 0, s["teacher_demos"], s["teacher_updates"], teacher_dir),
        (plain_job, ([*dp, f"algo.num_demos={s['dp_demos']}", f"algo.updates={s['dp_updates']}"], dp_dir)),
    ]
    for seed in seeds:
        jobs.append(sft_run(["student=vla"], seed, s["base_demos"], s["base_updates"], out_dir / f"base_s{seed}"))
    first = map_jobs(call_job, jobs, workers)
    teacher, specialist_dp, bases = first[0], first[1], dict(zip(seeds, first[2:]))

    def opd_args(task: str, seed: int, teacher_cfg: list[str], *extra: str) -> list[str]:
        return [
            "algo=opd",
            f"task={task}",
            "student=vla",  # the camera-only student's keys; its network comes from the base run (algo.init)
            *common(s, seed),
            *teacher_cfg,
            f"algo.init={out_dir / f'base_s{seed}'}",
            f"algo.rounds={s['rounds']}",
            "algo.eval_every=1",
            f"algo.episodes_per_round={s['episodes_per_round']}",
            f"algo.updates_per_round={s['updates_per_round']}",
            "algo.replay=all",  # every round's states so far, as DAgger aggregates (a camera student needs them)
            "algo.lr=1e-3",
            *extra,
        ]

    # 3, 4, 7: every variant per seed and task, and the curriculum, all asking the served teacher
    with served(
        "task=pushcube", "teacher=vla", f"teacher.path={teacher_dir}", f"teacher.obs_keys={TEACHER_KEYS}"
    ) as url:
        remote = ["teacher=remote", f"teacher.uri={url}", f"teacher.obs_keys={TEACHER_KEYS}"]
        routes = (
            f"teacher.routes=[{{task: {TASKS['pushcube']}, teacher: {{kind: remote, uri: '{url}', "
            f"obs_keys: {TEACHER_KEYS}}}}}, {{task: {TASKS['pickcube']}, teacher: {{kind: diffusion, path: {dp_dir}}}}}]"
        )
        merged = opd_args("pushcube", seeds[0], ["teacher=router", routes], f"algo.tasks=[{TASKS['pickcube']}]")
        jobs, keys = [(opd_job, (merged, out_dir / "merged"))], ["merged"]  # the longest first
        for seed in seeds:
            for task, task_id in TASKS.items():
                other = next(t for t in TASKS.values() if t != task_id)
                heldout = task_config(other, s)
                for variant in variants(s, seed):
                    mode = ["opd.loss=ce", "algo.beta.start=1.0"] if variant == "sft" else []
                    args = opd_args(task, seed, remote, *(mode or [f"opd.loss={variant}"]))
                    run_dir = out_dir / f"{task}_{variant}_s{seed}"
                    jobs.append((opd_job, (args, run_dir, heldout, s["heldout_eval"])))
                    keys.append((seed, task, variant))
        results = dict(zip(keys, map_jobs(call_job, jobs, workers)))

        # 5, 7: the live run's states replayed from its dataset (no teacher) beside the horizon curriculum
        live_dir = out_dir / f"pushcube_rkl_s{seeds[0]}"
        cached = opd_args("pushcube", seeds[0], [], f"algo.teacher_cache={live_dir / 'data' / 'dataset.hdf5'}")
        horizon = ["collector.student_horizon.kind=linear", "collector.student_horizon.start=10"]
        curriculum = opd_args("pushcube", seeds[0], remote, *horizon)
        jobs = [
            (opd_job, (curriculum, out_dir / "pushcube_curriculum")),
            (opd_job, (cached, out_dir / "pushcube_cached")),
        ]
        results["curriculum"], results["cached"] = map_jobs(call_job, jobs, workers)

    rates = throughput(
        teacher_dir, out_dir / f"base_s{seeds[0]}", task_config(TASKS["pushcube"], s), s["throughput_episodes"]
    )
    return report(s, teacher, specialist_dp, bases, results, rates, out_dir)


def report(
    s: dict[str, Any],
    teacher: dict[str, Any],
    specialist_dp: dict[str, Any],
    bases: dict[int, dict[str, Any]],
    results: dict[Any, dict[str, Any]],
    rates: dict[str, float],
    out_dir: Path,
) -> tuple[dict[str, Any], list[str]]:
    """The JSON payload and the printed table from every part's results."""
    seeds = s["seeds"]
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
    bound: dict[str, list[int]] = {"opd": [], "sft": []}
    forgetting: dict[str, list[float]] = {"opd": [], "sft": [], "base": []}
    for task, task_id in TASKS.items():
        other = next(t for t in TASKS.values() if t != task_id)
        target = 0.9 * teacher["tasks"][task_id]
        payload["tasks"][task_id] = {"teacher_success": teacher["tasks"][task_id], "target_90pct": target}
        for variant in VARIANTS:
            run_seeds = [seed for seed in s["seeds"] if variant in variants(s, seed)]
            per_seed = [results[(seed, task, variant)] for seed in run_seeds]
            curve = {
                k: np.mean([r[k] for r in per_seed], axis=0).tolist() for k in ("success", "entropy", "kl", "labels")
            }
            base = float(np.mean([bases[seed]["tasks"][task_id] for seed in run_seeds]))
            reached = [
                labels_to(target, bases[seed]["tasks"][task_id], r["labels"], r["success"])
                for seed, r in zip(run_seeds, per_seed)
            ]
            curve.update(
                base_success=base,
                labels_to_90pct_per_seed=reached,
                heldout_success=[r["heldout_success"] for r in per_seed],
            )
            payload["tasks"][task_id][variant] = curve
            for seed, r in zip(run_seeds, per_seed):
                payload["runs"][f"{task}_{variant}_s{seed}"] = r
            if variant in PRIMARY:
                key = "opd" if variant == "rkl" else "sft"
                to90[key] += reached
                bound[key] += [r["labels"][-1] for r in per_seed]
                forgetting[key] += [r["heldout_success"] for r in per_seed]
            n90 = [x for x in reached if x is not None]
            n90_text = (
                f"{np.mean(n90):.0f} ({len(n90)}/{len(run_seeds)})" if n90 else f"not in {int(curve['labels'][-1])}"
            )
            curve["seeds"] = run_seeds
            lines.append(
                f"{task_id:<26}{variant:<8}{' '.join(f'{x:.2f}' for x in [base, *curve['success']]):<44}"
                f"{curve['entropy'][0]:>10.2f} -> {curve['entropy'][-1]:<8.2f}{n90_text:>15}"
            )
        forgetting["base"] += [bases[seed]["tasks"][other] for seed in s["seeds"]]
    reached_90 = {k: [x for x in v if x is not None] for k, v in to90.items()}
    payload["labels_to_90pct"] = {k: float(np.mean(v)) if v else None for k, v in reached_90.items()}
    payload["labels_to_90pct_reached"] = {k: f"{sum(x is not None for x in v)}/{len(v)}" for k, v in to90.items()}
    payload["labels_to_90pct_not_within"] = {k: int(max(v)) for k, v in bound.items()}  # the labels a miss had
    payload["forgetting"] = {k: float(np.mean(v)) for k, v in forgetting.items()}
    live, cached = results[(seeds[0], "pushcube", "rkl")], results["cached"]
    payload["cache"] = {
        name: {"success": r["success"][-1], "wall_s": r["wall_s"], "teacher_calls": r["teacher_calls"]}
        for name, r in (("live", live), ("cached", cached))
    }
    merged = results["merged"]["tasks"]
    specialists = {
        TASKS["pushcube"]: teacher["tasks"][TASKS["pushcube"]],
        TASKS["pickcube"]: specialist_dp["success_rate"],
    }
    payload["merged"] = {t: {"student": merged[t], "specialist": specialists[t]} for t in TASKS.values()}
    curriculum = {"vanilla": live, "curriculum": results["curriculum"]}
    payload["curriculum"] = {k: {name: r[k] for name, r in curriculum.items()} for k in ("success", "kl", "labels")}
    payload["remote_over_local_throughput"] = rates["remote"] / rates["local"]
    payload["throughput_steps_per_s"] = rates
    curves = {t: {v: payload["tasks"][t][v] for v in VARIANTS} for t in TASKS.values()}
    plot(curves, "entropy", out_dir.parent / "opd_entropy.png", "student per-token entropy (nats)")
    plot(curves, "success", out_dir.parent / "opd_success.png", "success (argmax)")
    plot({TASKS["pushcube"]: curriculum}, "kl", out_dir.parent / "opd_curriculum_kl.png", "student-teacher KL (nats)")
    plot({TASKS["pushcube"]: curriculum}, "success", out_dir.parent / "opd_curriculum.png", "success (argmax)")

    l90 = payload["labels_to_90pct"]
    ratio = l90["sft"] / l90["opd"] if l90["opd"] and l90["sft"] else None
    c = payload["cache"]
    lines += [
        f"teacher success: {', '.join(f'{t}: {v:.2f}' for t, v in teacher['tasks'].items())} ({s['teacher_eval']} "
        f"episodes; state + instruction)",
        f"teacher labels to 90% of the teacher's success (mean over seeds and tasks that reached it): OPD(rkl) "
        f"{l90['opd']} [{payload['labels_to_90pct_reached']['opd']}], SFT {l90['sft']} "
        f"[{payload['labels_to_90pct_reached']['sft']}]" + (f"; SFT/OPD = {ratio:.1f}x" if ratio else ""),
        f"forgetting: held-out task success after OPD(rkl) {payload['forgetting']['opd']:.2f}, after SFT "
        f"{payload['forgetting']['sft']:.2f} (base student {payload['forgetting']['base']:.2f})",
        f"cached vs live teacher (PushCube, rkl, seed {seeds[0]}): success {c['cached']['success']:.2f} vs "
        f"{c['live']['success']:.2f}, wall {c['cached']['wall_s']:.0f} s vs {c['live']['wall_s']:.0f} s "
        f"({c['cached']['wall_s'] / c['live']['wall_s']:.2f}x), teacher calls {c['cached']['teacher_calls']} vs "
        f"{c['live']['teacher_calls']}",
        "merged student vs specialist: "
        + ", ".join(f"{t}: {v['student']:.2f} vs {v['specialist']:.2f}" for t, v in payload["merged"].items()),
        "horizon curriculum vs vanilla OPD (PushCube, rkl), success per round: "
        + " / ".join(
            f"{name} {' '.join(f'{x:.2f}' for x in r)}" for name, r in payload["curriculum"]["success"].items()
        ),
        f"remote/in-process teacher collection throughput: {payload['remote_over_local_throughput']:.2f} "
        f"({rates['remote']:.0f} vs {rates['local']:.0f} env steps/s, loopback, 8 envs)",
        f"(success per round: round 0 is the base student, then after each round; {len(seeds)} seeds for rkl and sft, "
        f"{len(s['secondary_seeds'])} for fkl and ce, x {s['eval']} "
        f"episodes; entropy: student per-token entropy on the round's visited states, max ln(256) = 5.55)",
    ]
    return payload, lines
