"""Calibrate a run's failure monitor: python scripts/calibrate.py run=<run dir> [alpha=0.05] [episodes=100]

Rolls the run's best student out on calibration seeds, trains a random-network-distillation predictor on the
embeddings of half its successful rollouts and sets conformal thresholds for the RND score and the action-chunk
spread on the other half; writes <run>/monitor.pt (bound to the checkpoint's sha256). Then
`python scripts/evaluate.py <run> --monitor` reports per episode when each alarm (fiper, rnd, entropy) fired.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from robodistill.config import require_values
from robodistill.errors import report_errors


@hydra.main(version_base=None, config_path="../conf", config_name="calibrate")
@report_errors
def main(cfg: DictConfig) -> None:
    from robodistill.evaluation.monitor import calibrate  # imported here so a missing GL backend is one line

    require_values(cfg, "scripts/calibrate.py")
    summary = calibrate(
        cfg.run,
        alpha=float(cfg.alpha),
        episodes=int(cfg.episodes),
        window=int(cfg.window),
        samples=int(cfg.samples),
        seed=int(cfg.seed),
        num_envs=int(cfg.num_envs),
        progress=bool(cfg.progress),
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
