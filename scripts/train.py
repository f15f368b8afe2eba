"""Train a student: python scripts/train.py task=pushcube algo=dagger teacher=scripted student=mlp"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from robodistill import config  # noqa: F401  (registers the ConfigStore entries conf/ extends: task schema, student types)
from robodistill.errors import report_errors


@hydra.main(version_base=None, config_path="../conf", config_name="config")
@report_errors
def main(cfg: DictConfig) -> None:
    from robodistill.train import train  # imported here so a missing GL backend is reported as one line

    run_dir = HydraConfig.get().runtime.output_dir
    result = train(cfg, run_dir)
    print(f"run: {run_dir}")
    print(", ".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
