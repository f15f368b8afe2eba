"""Evaluate and film an existing run: python scripts/evaluate.py runs/<date>/<run> [--episodes 50] [--videos 4]

Diffusion-family runs take a sampler: ... <run> sampler=ddim sampler.num_inference_steps=10 | sampler=rti | ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robodistill.errors import UserError, report_errors


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a run directory written by scripts/train.py")
    parser.add_argument("--checkpoint", default="best", help="best or last (default best, falling back to last)")
    parser.add_argument("--episodes", type=int, default=None, help="default: the run's eval.episodes")
    parser.add_argument("--videos", type=int, default=2, help="episodes to film into <run>/videos/eval_*")
    parser.add_argument("--seed", type=int, default=None, help="first episode seed (default: the run's eval.seed)")
    parser.add_argument("--num-envs", type=int, default=None)
    parser.add_argument(
        "overrides", nargs="*", help="sampler=<ddpm|ddim|rti|sdp|consistency> and sampler.<key>=<value>"
    )
    args = parser.parse_intermixed_args()

    from omegaconf import OmegaConf

    from robodistill.evaluation.rerun import evaluate_run

    config = args.run_dir / "config.yaml"
    if not config.exists():
        raise UserError(f"{args.run_dir} is not a run directory (no config.yaml)")
    cfg = OmegaConf.load(config)
    cfg.sampler = sampler_config(cfg.get("sampler"), args.overrides)
    result = evaluate_run(cfg, args.run_dir, args.checkpoint, args.episodes, args.videos, args.seed, args.num_envs)
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("success_rate", "return_mean", "length_mean", "nfe_per_step", "episodes", "videos")
                if k in result
            },
            indent=2,
        )
    )


def sampler_config(saved, overrides: list[str]):
    """The run's sampler config, replaced by conf/sampler/<name>.yaml for sampler=<name>, then sampler.* keys."""
    from omegaconf import OmegaConf

    cfg = saved if saved is not None else OmegaConf.create({"kind": "auto"})
    rest = []
    for o in overrides:
        key, sep, value = o.partition("=")
        if not sep or not (key == "sampler" or key.startswith("sampler.")):
            raise UserError(f"cannot parse override {o!r}: expected sampler=<name> or sampler.<key>=<value>")
        if key == "sampler":
            path = Path(__file__).resolve().parents[1] / "conf" / "sampler" / f"{value}.yaml"
            if not path.exists():
                names = sorted(p.stem for p in path.parent.glob("*.yaml"))
                raise UserError(f"unknown sampler {value!r}; available: {', '.join(names)}")
            cfg = OmegaConf.load(path)
        else:
            rest.append(o[len("sampler.") :])
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(rest))


if __name__ == "__main__":
    main()
