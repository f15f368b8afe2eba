"""Run an exported policy on a robot: python scripts/deploy.py artifact=<dir> [robot=sim|callback] [episodes=10]

robot=sim steps the artifact's MuJoCo task in real time at the contract's control rate (rate_hz=... overrides)
and reports the success rate beside the control loop's figures (deadline misses, lateness, inference latency,
safety-filter interventions). Per-tick logs go to <artifact>/deploy/episode_*.jsonl, the summary to deploy.json.
robot=callback robot.read_obs=pkg.mod:read robot.send_action=pkg.mod:send drives your own controller.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from robodistill.errors import report_errors


@hydra.main(version_base=None, config_path="../conf", config_name="deploy")
@report_errors
def main(cfg: DictConfig) -> None:
    from robodistill.deploy.deployment import deploy  # imported here so a missing GL backend is reported as one line

    result = deploy(cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "per_episode"}, indent=2))


if __name__ == "__main__":
    main()
