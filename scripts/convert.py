"""Convert datasets between our robomimic-layout HDF5 and LeRobot (LeRobotDataset v3.0):

    python scripts/convert.py <in> <out> [fps=20] [robot_type=<name>] [overwrite=true] [progress=false]

An HDF5 file in gives a LeRobot directory out (fps: the dataset's control rate; robot_type: info.json's); a LeRobot
directory in gives an HDF5 file out. An existing output is kept unless overwrite=true; the output appears only once
complete (written beside it under a temporary name, then renamed). Train on a LeRobot directory directly with
`scripts/train.py algo=bc algo.dataset=<dir>` (diffusion alike; sft: algo.datasets=[<dir>]).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robodistill.data.lerobot import export_lerobot, import_lerobot, is_lerobot_dataset
from robodistill.errors import UserError, report_errors

OPTIONS = {"fps": "20", "robot_type": None, "overwrite": "false", "progress": "true"}
EXPORT_ONLY = ("fps", "robot_type")  # LeRobot metadata that an HDF5 file has no place for


def parse_options(items: list[str]) -> dict[str, str | None]:
    """key=value options over OPTIONS' defaults; UserError for an unknown key or a malformed item."""
    options = dict(OPTIONS)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in OPTIONS:
            raise UserError(f"cannot parse {item!r}: options are {', '.join(f'{k}=' for k in OPTIONS)}")
        options[key] = value
    return options


def flag(options: dict[str, str | None], key: str) -> bool:
    value = str(options[key]).lower()
    if value not in ("true", "false"):
        raise UserError(f"{key}={options[key]}: give true or false")
    return value == "true"


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="an HDF5 dataset file or a LeRobot dataset directory")
    parser.add_argument("dst", type=Path, help="the LeRobot directory or HDF5 file to write")
    parser.add_argument("options", nargs="*", help="fps=20 robot_type=<name> overwrite=true progress=false")
    args = parser.parse_args()
    options = parse_options(args.options)
    overwrite, progress = flag(options, "overwrite"), flag(options, "progress")
    if not args.src.exists():
        raise UserError(f"{args.src} does not exist")
    if args.src.resolve() == args.dst.resolve():
        raise UserError(f"{args.dst} is the input: give another output path")
    if is_lerobot_dataset(args.src):
        given = [k for k in EXPORT_ONLY if options[k] != OPTIONS[k]]
        if given:
            names = " and ".join(f"{k}=" for k in given)
            raise UserError(f"{names} only set HDF5 -> LeRobot conversions; {args.src} is a LeRobot dataset already")
        result = import_lerobot(args.src, args.dst, overwrite=overwrite, progress=progress)
        print(json.dumps({"hdf5": str(args.dst), **result}, indent=2))
        return
    try:
        fps = int(options["fps"])
    except ValueError:
        raise UserError(f"fps={options['fps']}: give a whole number of frames per second") from None
    info = export_lerobot(args.src, args.dst, fps, options["robot_type"], overwrite=overwrite, progress=progress)
    summary = {k: info[k] for k in ("codebase_version", "fps", "total_episodes", "total_frames", "total_tasks")}
    print(json.dumps({"lerobot": str(args.dst), **summary, "features": list(info["features"])}, indent=2))


if __name__ == "__main__":
    main()
