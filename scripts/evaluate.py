"""Evaluate and film an existing run: python scripts/evaluate.py runs/<date>/<run> [--episodes 50] [--videos 4] [--monitor]

Diffusion-family runs take a sampler: ... <run> sampler=ddim sampler.num_inference_steps=10 | sampler=rti | ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robodistill.config import compose_config
from robodistill.errors import UserError, report_errors
from robodistill.rundir import RunDir


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a run directory written by scripts/train.py")
    parser.add_argument("--checkpoint", default="best", help="best or last (default best, falling back to last)")
    parser.add_argument("--episodes", type=int, default=None, help="default: the run's eval.episodes")
    parser.add_argument("--videos", type=int, default=None, help="episodes filmed (default: the run's eval.videos)")
    parser.add_argument("--seed", type=int, default=None, help="first episode seed (default: the run's eval.seed)")
    parser.add_argument("--num-envs", type=int, default=None, help="default: the run's eval.num_envs")
    parser.add_argument(
        "--device", default=None, help="auto, cpu, cuda or cuda:N (default: the run's device, else auto)"
    )
    parser.add_argument(
        "--monitor", action="store_true", help="score every step with the run's failure monitor (scripts/calibrate.py)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="sampler=<ddpm|ddim|rti|sdp|consistency> and sampler.<key>=<value>"
    )
    args = parser.parse_intermixed_args()
    from robodistill.evaluation.rerun import evaluate_run  # imported here so a missing GL backend is one line

    cfg = RunDir(args.run_dir).config()
    cfg.sampler = sampler_config(cfg.sampler, args.overrides)
    if args.device is not None:
        cfg.device = args.device
    result = evaluate_run(
        cfg, args.run_dir, args.checkpoint, args.episodes, args.videos, args.seed, args.num_envs, args.monitor
    )
    keys = ("success_rate", "return_mean", "length_mean", "nfe_per_step", "episodes", "videos", "alarms")
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=2))


def sampler_config(saved: DictConfig, overrides: list[str]) -> DictConfig:
    """The sampler to evaluate with: `sampler=<name>` takes conf/sampler/<name>.yaml, else the run's own sampler
    stays; `sampler.<key>=<value>` then changes single keys. Hydra composes both, as on the train.py command line."""
    choice, keys = None, []
    for o in overrides:
        key, sep, value = o.partition("=")
        if not sep or not (key == "sampler" or key.startswith("sampler.")):
            raise UserError(f"cannot parse override {o!r}: expected sampler=<name> or sampler.<key>=<value>")
        if key == "sampler":
            choice = value
        else:
            keys.append(key.removeprefix("sampler."))
    # with no new sampler the run's own is the base (its kind names its conf/sampler option), and a key may be one
    # that option leaves out (sampler=auto resolves to a consistency head's sampler: sampler.num_steps=2), hence ++
    settings = [o if choice else f"++{o}" for o in overrides if o.startswith("sampler.")]
    composed = compose_config([f"sampler={choice or saved.kind}", *settings])
    if choice:
        return composed.sampler
    sampler = saved.copy()
    for k in keys:
        OmegaConf.update(sampler, k, OmegaConf.select(composed.sampler, k), merge=False)
    return sampler


if __name__ == "__main__":
    main()
