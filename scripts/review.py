"""Write a run review page: python scripts/review.py <run> [<run> ...] [out=<dir>]

A self-contained static page (index.html + assets/; no server, no CDN): each run's task, algorithm, teacher and
student, its final success over every evaluated episode, learning and loss curves, the filmed episodes with an
outcome filter, and the student's against the teacher's actions for a chosen dataset episode; several runs also get
a table of their figures and the config keys in which they differ. Default out: <run>/review for one run,
./review for several.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from robodistill.errors import UserError, report_errors


@report_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="+", help="run directories written by scripts/train.py, and optionally out=<dir>")
    args = parser.parse_args()
    runs, out = [], None
    for a in args.args:
        if a.startswith("out="):
            out = Path(a.removeprefix("out="))
        elif "=" in a and not Path(a).exists():
            raise UserError(
                f"cannot parse {a!r}: the only option is out=<dir>; every other argument is a run directory"
            )
        else:
            runs.append(Path(a))
    if not runs:
        raise UserError("give at least one run directory: python scripts/review.py <run> [<run> ...] [out=<dir>]")
    from robodistill.evaluation.review import write_review  # imported here: matplotlib only when a page is written

    out = out or (runs[0] / "review" if len(runs) == 1 else Path("review"))
    t0 = time.perf_counter()
    page = write_review(runs, out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"review page: {page} ({size / 1e6:.1f} MB with its videos, {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
