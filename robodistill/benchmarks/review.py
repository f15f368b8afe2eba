"""Review figures: the size of a run's review page and the time to write it, for runs evaluated on 50 episodes with
the default filming (4 videos at 480x480, failures first); a state student and a camera student (its two cameras
beside the scene), each page alone and the two side by side; then the side-by-side page opened in headless Chromium
(every video's duration, console errors) and its screenshot (docs/review.png is one)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from robodistill.config import compose_config
from robodistill.evaluation.review import write_review
from robodistill.train import train

CHROMIUM = "/usr/bin/chromium"


def page_size_mb(page: Path) -> tuple[float, float]:
    """(the whole page with its videos, index.html alone) in MB."""
    folder = page.parent
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, page.stat().st_size / 1e6


def timed_review(runs: list[Path], out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    page = write_review(runs, out)
    total, html = page_size_mb(page)
    return {"page": str(page), "write_s": time.perf_counter() - t0, "size_mb": total, "html_mb": html}


def in_browser(page: Path, screenshot: Path) -> dict[str, Any]:
    """Open the page from disk in headless Chromium: video durations, figures on screen, console errors, screenshot."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        tab = browser.new_page(viewport={"width": 1400, "height": 900})
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        t0 = time.perf_counter()
        tab.goto(page.resolve().as_uri())
        tab.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 2)", timeout=60_000)
        load_s = time.perf_counter() - t0
        durations = tab.evaluate("[...document.querySelectorAll('video')].map(v => v.duration)")
        sizes = tab.evaluate("[...document.querySelectorAll('video')].map(v => [v.videoWidth, v.videoHeight])")
        figures = tab.locator("figure.curves svg").count()
        tab.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return {
        "videos": len(durations),
        "video_durations_s": durations,
        "video_sizes": sizes,
        "figures": figures,
        "console_errors": errors,
        "load_s": load_s,
        "screenshot": str(screenshot),
    }


def run(quick: bool, out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    torch.set_num_threads(1)
    episodes = 10 if quick else 50
    budget = [
        "algo.rounds=2",
        "algo.episodes_per_round=8",
        "algo.updates_per_round=100" if quick else "algo.updates_per_round=500",
    ]
    common = ["task=pushcube", "algo=dagger", f"eval.episodes={episodes}", "review=false", "progress=false", *budget]
    variants = {"state": [], "camera": ["student=cnn", "collector.num_envs=8"]}
    runs: dict[str, Path] = {}
    train_s: dict[str, float] = {}
    for name, extra in variants.items():
        runs[name] = out_dir / "runs" / name
        t0 = time.perf_counter()
        train(compose_config([*common, *extra]), runs[name])
        train_s[name] = time.perf_counter() - t0
    pages = {name: timed_review([path], out_dir / "pages" / name) for name, path in runs.items()}
    pages["side_by_side"] = timed_review(list(runs.values()), out_dir / "pages" / "side_by_side")
    browser = in_browser(Path(pages["side_by_side"]["page"]), out_dir / "review.png")
    payload = {"eval_episodes": episodes, "train_s": train_s, "pages": pages, "browser": browser}
    payload["targets"] = {
        "every_video_plays": browser["videos"] > 0 and all(d > 0 for d in browser["video_durations_s"]),
        "no_console_errors": not browser["console_errors"],
    }
    lines = [f"{'page':<16}{'runs':>5}{'write s':>9}{'MB':>8}{'html MB':>9}"]
    for name, p in pages.items():
        lines.append(
            f"{name:<16}{2 if name == 'side_by_side' else 1:>5}{p['write_s']:>9.2f}{p['size_mb']:>8.2f}{p['html_mb']:>9.3f}"
        )
    sizes = sorted({f"{w}x{h}" for w, h in browser["video_sizes"]})
    lines.append(
        f"in Chromium: {browser['videos']} videos ({', '.join(sizes)}), durations "
        f"{min(browser['video_durations_s']):.1f}-{max(browser['video_durations_s']):.1f} s, {browser['figures']} curve "
        f"figures, {len(browser['console_errors'])} console errors, loaded in {browser['load_s']:.2f} s; "
        f"screenshot {browser['screenshot']}"
    )
    lines.append(f"(runs evaluated on {episodes} episodes, 4 filmed at 480x480 failures first; training {train_s})")
    return payload, lines
