"""Benchmarks: python scripts/bench.py <suite> [--quick] [--out FILE] — prints a table, writes JSON."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import time
from pathlib import Path

from robodistill.export.exporter import git_commit

SUITES = (
    "foundation",
    "rpd",
    "diffusion",
    "opd",
    "deploy",
    "byo",
    "pixels",
    "device",
    "scale",
    "review",
    "convert",
    "loop",
    "monitor",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suite", choices=SUITES)
    parser.add_argument("--quick", action="store_true", help="reduced version for smoke tests")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default runs/bench/<suite>.json)")
    args = parser.parse_args()
    out = args.out or Path("runs/bench") / f"{args.suite}{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    suite = importlib.import_module(f"robodistill.benchmarks.{args.suite}")
    t0 = time.time()
    payload, lines = suite.run(args.quick, out.parent / f"{out.stem}_work")  # its runs; figures beside the JSON
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # worker processes, if any ran
    payload.update(
        suite=args.suite,
        quick=args.quick,
        commit=git_commit() or "unknown",
        machine={"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        peak_rss_mb=peak_mb,
        peak_rss_children_mb=children_mb,
        total_wall_s=time.time() - t0,
    )
    out.write_text(json.dumps(payload, indent=2, default=float))
    print("\n".join(lines))
    workers = f", largest worker process {children_mb:.0f} MB" if children_mb > 0 else ""
    print(f"peak RSS {peak_mb:.0f} MB{workers}, {payload['total_wall_s']:.0f} s; JSON: {out}")


if __name__ == "__main__":
    main()
