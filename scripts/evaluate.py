"""Evaluate and film an existing run: python scripts/evaluate.py runs/<date>/<run> [--episodes 50] [--videos 4]"""

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
    args = parser.parse_args()

    from omegaconf import OmegaConf

    from robodistill.evaluate_run import evaluate_run

    config = args.run_dir / "config.yaml"
    if not config.exists():
        raise UserError(f"{args.run_dir} is not a run directory (no config.yaml)")
    cfg = OmegaConf.load(config)
    result = evaluate_run(cfg, args.run_dir, args.checkpoint, args.episodes, args.videos, args.seed, args.num_envs)
    print(
        json.dumps(
            {k: result[k] for k in ("success_rate", "return_mean", "length_mean", "episodes", "videos")}, indent=2
        )
    )


if __name__ == "__main__":
    main()
