"""Export a run's student for deployment: python scripts/export.py run=<run dir> [format=onnx|torchscript]

Writes <run>/export_onnx (or out=<dir>): the graphs, contract.json, parity.json and selftest.npz; with the run's
failure monitor (`monitor.pt`, from scripts/calibrate.py) when it has one (monitor=auto; true: refuse without). The export is
refused when the exported graphs differ from torch by more than `tolerance` on `samples` recorded observations.
Run the artifact with `python scripts/deploy.py artifact=<dir> robot=sim` or serve it with
`python scripts/serve.py artifact=<dir>`.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from robodistill.config import require_values
from robodistill.errors import report_errors


@hydra.main(version_base=None, config_path="../conf", config_name="export")
@report_errors
def main(cfg: DictConfig) -> None:
    from robodistill.export.exporter import export_run  # imported here so a missing GL backend is reported as one line

    require_values(cfg, "scripts/export.py")
    contract = export_run(
        cfg.run,
        cfg.out,
        fmt=str(cfg.format),
        samples=int(cfg.samples),
        tolerance=float(cfg.tolerance),
        checkpoint=str(cfg.checkpoint),
        sampler_steps=int(cfg.sampler_steps),
        seed=int(cfg.seed),
        progress=bool(cfg.progress),
        rate_hz=cfg.rate_hz,
        monitor=cfg.monitor,
    )
    out = cfg.out or f"{cfg.run}/export_{cfg.format}"
    print(json.dumps({"artifact": str(out), "kind": contract["kind"], "parity": contract["parity"]}, indent=2))


if __name__ == "__main__":
    main()
