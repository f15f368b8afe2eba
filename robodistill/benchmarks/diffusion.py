"""Diffusion figures: success, network evaluations per control step and per-action latency at batch 1 for a
diffusion policy sampled with DDPM-100, DDIM-10 and RTI (steps [50, 25, 0], and the example [3, 1, 0]; the same
trained network), a streaming diffusion policy
(SDP, its own training) and a consistency one-step head distilled from the DP: offline on the DP's demonstrations,
and on-policy (the one-step head drives, the DP labels the states it visits) with the same number of updates; each
head also chained in 2 and 3 steps (the same network, sampled again from a re-noised estimate) as a measured trade-off. Two more levers on the offline head run on seed 0 only:
3x the distillation updates, and a finer teacher grid (DDIM-20 instead of DDIM-10).

Per task and seed: 100 scripted demonstrations; DP and SDP trained on them with the same network and budget; the
consistency heads distilled from that DP. Success is over the same seeded evaluation
episodes for every variant; network evaluations per control step are counted during those episodes. Latency is
measured afterwards in one process, variants interleaved, on one env at batch 1 (the policy call only, planning
amortised over the actions it yields).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.samplers import ChunkRunner, make_sampler
from robodistill.benchmarks.runs import call_job, map_jobs, train_once
from robodistill.config import option_defaults
from robodistill.evaluation.rerun import evaluate_run
from robodistill.observations import as_dict
from robodistill.rundir import RunDir
from robodistill.tasks import make_env
from robodistill.teachers import load_policy

TASKS = {"pusht": "robodistill/PushT-v0", "pickcube": "robodistill/PickCube-v0"}
HEADS = ("consistency", "consistency_on_policy")  # one-step heads: offline and on-policy distillation
CHAINS = (2, 3)  # each head also sampled as a chain of this many steps: `<head>_<n>step`
CHAINED = tuple(f"{h}_{n}step" for h in HEADS for n in CHAINS)
VARIANTS = ("ddpm100", "ddim10", "rti", "rti_3_1_0", "sdp", *HEADS, *CHAINED)
DP_VARIANTS = ("ddpm100", "ddim10", "rti", "rti_3_1_0")  # samplers of the one trained DP
# each variant's sampler as conf/sampler/ writes it (DDPM-100, DDIM-10, RTI [50, 25, 0], ...); only the example
# RTI step list [3, 1, 0] is spelled here
SAMPLERS = {
    "ddpm100": option_defaults("sampler", "ddpm"),
    "ddim10": option_defaults("sampler", "ddim"),
    "rti": option_defaults("sampler", "rti"),
    "rti_3_1_0": {**option_defaults("sampler", "rti"), "timesteps": [3, 1, 0]},
    "sdp": option_defaults("sampler", "sdp"),
    "consistency": option_defaults("sampler", "consistency"),
}
for _n in CHAINS:
    SAMPLERS[f"consistency_{_n}step"] = {**SAMPLERS["consistency"], "num_steps": _n}
for _v in [v for v in SAMPLERS if v.startswith("consistency")]:
    SAMPLERS[_v.replace("consistency", "consistency_on_policy", 1)] = SAMPLERS[_v]


def eval_figures(run_dir: Path) -> dict[str, float]:
    """Success and network evaluations per step of the run's final evaluation."""
    e = RunDir(run_dir).read_json("eval.json")
    return {"success": e["success_rate"], "nfe": e["nfe_per_step"]}


def dp_job(overrides: list[str], run_dir: Path, episodes: int) -> dict[str, Any]:
    """Train the DP (final evaluation with DDPM-100), then evaluate the same network with DDIM-10 and RTI."""
    summary = train_once([*overrides, "sampler=ddpm"], run_dir)
    out = {"ddpm100": eval_figures(run_dir), "train_wall_s": summary["wall_s"]}
    cfg = RunDir(run_dir).config()
    for variant in DP_VARIANTS[1:]:
        cfg.sampler = SAMPLERS[variant]
        r = evaluate_run(cfg, run_dir, "best", episodes, videos=0)
        out[variant] = {"success": r["success_rate"], "nfe": r["nfe_per_step"]}
    return out


def single_job(overrides: list[str], run_dir: Path, variant: str) -> dict[str, Any]:
    """Train SDP or a consistency head; its final evaluation uses its own sampler. A head is evaluated again as
    each chain (`<variant>_<n>step`)."""
    summary = train_once([*overrides, f"sampler={SAMPLERS[variant]['kind']}"], run_dir)
    out = {variant: eval_figures(run_dir), "train_wall_s": summary["wall_s"]}
    for chain in (f"{variant}_{n}step" for n in CHAINS if f"{variant}_{n}step" in SAMPLERS):
        cfg = RunDir(run_dir).config()
        cfg.sampler = SAMPLERS[chain]
        r = evaluate_run(cfg, run_dir, "best", int(cfg.eval.episodes), videos=0)
        out[chain] = {"success": r["success_rate"], "nfe": r["nfe_per_step"]}
    return out


def latencies(runs: dict[str, Path], task_id: str, steps: int, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Per-action latency at batch 1 (ms): mean and p99 of the policy call over `steps` control steps per variant,
    variants interleaved over `rounds` so that machine noise hits all of them alike."""
    torch.set_num_threads(1)
    policies = {v: load_policy(str(runs[v])) for v in VARIANTS}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    env = make_env({"env_id": task_id, "kwargs": {"control_mode": "pd_ee_delta_pos"}}, "state")
    for r in range(rounds):
        for v in VARIANTS:
            runner = ChunkRunner(policies[v], make_sampler(policies[v], SAMPLERS[v]))
            obs, _ = env.reset(seed=10_000 + r)
            for _ in range(steps // rounds):
                batch = {k: np.asarray(x)[None] for k, x in as_dict(obs).items()}
                t0 = time.perf_counter()
                action = runner(batch, [0])
                times[v].append(time.perf_counter() - t0)
                obs, _, term, trunc, _ = env.step(action[0])
                if term or trunc:
                    obs, _ = env.reset()
                    runner.reset(0)
    env.close()
    return {
        v: {"mean_ms": 1e3 * float(np.mean(t)), "p99_ms": 1e3 * float(np.percentile(t, 99))} for v, t in times.items()
    }


def run(quick: bool, out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    seeds = [0] if quick else [0, 1, 2]
    tasks = {"pickcube": TASKS["pickcube"]} if quick else TASKS
    episodes = 4 if quick else 50
    common = [f"eval.episodes={episodes}", "eval.videos=0", "algo.num_demos=" + ("6" if quick else "100")]
    net = ["student.down_dims=[16,32]", "student.step_embed_dim=16"] if quick else []
    dp_updates, cd_updates = (30, 20) if quick else (3000, 1000)
    rounds = 2 if quick else 4  # on-policy: the same updates as offline, over rounds of the head driving
    on_policy = ["algo.on_policy=true", f"algo.rounds={rounds}", f"algo.updates_per_round={cd_updates // rounds}"]
    on_policy.append(f"algo.episodes_per_round={2 if quick else 20}")
    # further levers on the offline head, seed 0 only (secondary): 3x the updates; a finer teacher grid (consistency
    # over adjacent steps of DDIM-20: smaller teacher ODE steps)
    levers = {
        "consistency_3x_updates": [f"algo.updates={3 * cd_updates}"],
        "consistency_teacher_steps_20": ["algo.teacher_steps=20"],
    }
    jobs1, keys1 = [], []
    for task in tasks:
        for seed in seeds:
            base = [f"task={task}", f"seed={seed}", *common, *net, f"algo.updates={dp_updates}"]
            jobs1.append(
                (dp_job, ([*base, "algo=diffusion", "student=diffusion"], out_dir / f"{task}_dp_s{seed}", episodes))
            )
            jobs1.append(
                (single_job, ([*base, "algo=diffusion", "student=sdp"], out_dir / f"{task}_sdp_s{seed}", "sdp"))
            )
            keys1 += [(task, seed, "dp"), (task, seed, "sdp")]
    workers = 1 if quick else 2
    results = dict(zip(keys1, map_jobs(call_job, jobs1, workers)))
    jobs2, keys2 = [], []

    def head(task: str, seed: int) -> list[str]:
        """The offline consistency head distilled from this task and seed's DP."""
        teacher = ["teacher=diffusion", f"teacher.path={out_dir / f'{task}_dp_s{seed}'}"]
        return [f"task={task}", f"seed={seed}", *common, "algo=consistency", *teacher, f"algo.updates={cd_updates}"]

    for task in tasks:
        for seed in seeds:
            overrides = head(task, seed)
            jobs2.append((single_job, (overrides, out_dir / f"{task}_cd_s{seed}", "consistency")))
            jobs2.append(
                (single_job, ([*overrides, *on_policy], out_dir / f"{task}_cdop_s{seed}", "consistency_on_policy"))
            )
            keys2 += [(task, seed, "cd"), (task, seed, "cdop")]
        for lever, extra in levers.items():  # seed 0
            overrides = [*head(task, seeds[0]), *extra]
            jobs2.append((single_job, (overrides, out_dir / f"{task}_{lever}_s{seeds[0]}", "consistency")))
            keys2.append((task, seeds[0], lever))
    results.update(zip(keys2, map_jobs(call_job, jobs2, workers)))

    payload: dict[str, Any] = {
        "seeds": seeds,
        "episodes": episodes,
        "dp_updates": dp_updates,
        "consistency_updates": cd_updates,
        "consistency_on_policy_rounds": rounds,
        "samplers": SAMPLERS,
        "tasks": {},
        "runs": {},
    }
    lines = [f"{'task':<26}{'variant':<29}{'success':>16}{'nfe/step':>10}{'latency ms':>12}{'p99 ms':>9}{'speedup':>9}"]
    for task, task_id in tasks.items():
        per_seed = {v: [] for v in VARIANTS}
        for seed in seeds:
            dp, sdp, cd = results[(task, seed, "dp")], results[(task, seed, "sdp")], results[(task, seed, "cd")]
            cdop = results[(task, seed, "cdop")]
            figures = {v: r[v] for r in (dp, sdp, cd, cdop) for v in VARIANTS if v in r}
            for v in VARIANTS:
                per_seed[v].append(figures[v])
            payload["runs"][f"{task}_s{seed}"] = {
                **figures,
                "train_wall_s": {
                    "dp": dp["train_wall_s"],
                    "sdp": sdp["train_wall_s"],
                    "consistency": cd["train_wall_s"],
                    "consistency_on_policy": cdop["train_wall_s"],
                },
            }
        runs = {v: out_dir / f"{task}_dp_s0" for v in DP_VARIANTS}
        runs.update(sdp=out_dir / f"{task}_sdp_s0")
        for head, name in (("consistency", "cd"), ("consistency_on_policy", "cdop")):
            for v in (head, *(f"{head}_{n}step" for n in CHAINS)):
                runs[v] = out_dir / f"{task}_{name}_s0"
        lat = latencies(runs, task_id, steps=48 if quick else 192)
        row = {}
        for v in VARIANTS:
            success = [f["success"] for f in per_seed[v]]
            row[v] = {
                "success": float(np.mean(success)),
                "success_std": float(np.std(success)),
                "success_per_seed": success,
                "nfe": float(np.mean([f["nfe"] for f in per_seed[v]])),
                "latency_ms": lat[v]["mean_ms"],
                "latency_p99_ms": lat[v]["p99_ms"],
                "speedup_vs_ddpm100": lat["ddpm100"]["mean_ms"] / lat[v]["mean_ms"],
            }
            r = row[v]
            lines.append(
                f"{task_id:<26}{v:<29}{r['success']:>9.2f} ± {r['success_std']:.2f}{r['nfe']:>10.2f}"
                f"{r['latency_ms']:>12.2f}{r['latency_p99_ms']:>9.1f}{r['speedup_vs_ddpm100']:>8.1f}x"
            )
        base = row["ddpm100"]["success"]
        row["targets"] = {
            **{f"{h}_speedup_ge_20": row[h]["speedup_vs_ddpm100"] >= 20 for h in (*HEADS, *CHAINED)},
            **{f"{h}_within_5_points": abs(row[h]["success"] - base) <= 0.05 for h in (*HEADS, *CHAINED)},
            "sdp_nfe_le_50": row["sdp"]["nfe"] <= 50,
            "sdp_within_5_points": abs(row["sdp"]["success"] - base) <= 0.05,
            "rti_nfe_le_5": row["rti"]["nfe"] <= 5,
            "rti_within_5_points": abs(row["rti"]["success"] - base) <= 0.05,
        }
        lever_runs = {"consistency": results[(task, seeds[0], "cd")]}
        lever_runs.update({lever: results[(task, seeds[0], lever)] for lever in levers})
        row["levers_seed0"] = {
            k: {"success": r["consistency"]["success"]}
            | {f"success_{n}step": r[f"consistency_{n}step"]["success"] for n in CHAINS}
            for k, r in lever_runs.items()
        }
        lines.append(
            f"  {task_id} offline-head levers, seed {seeds[0]} (1 / {' / '.join(map(str, CHAINS))} steps): "
            + "; ".join(f"{k} " + " / ".join(f"{x:.2f}" for x in v.values()) for k, v in row["levers_seed0"].items())
        )
        payload["tasks"][task_id] = row
        met = [k for k, ok in row["targets"].items() if ok]
        missed = [k for k, ok in row["targets"].items() if not ok]
        lines.append(f"  {task_id} targets met: {', '.join(met) or 'none'}; missed: {', '.join(missed) or 'none'}")
    lines.append(
        f"(success: mean ± std over {len(seeds)} seeds x {episodes} episodes; nfe/step: network evaluations "
        f"per executed action, counted during those episodes; latency: policy call at batch 1, mean over "
        f"control steps of the seed-0 runs, planning amortised; speedup = DDPM-100 latency / latency)"
    )
    return payload, lines
