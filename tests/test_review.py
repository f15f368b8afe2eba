"""The review page: written by scripts/train.py and scripts/review.py, opened in headless Chromium (Debian's, driven
by playwright) from disk; its videos load, its figures render, its outcome filter works, and bad input is one error."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import one_clear_error, run_script, train_run, user_error

from robodistill.evaluation.review import write_review
from robodistill.evaluation.video import Filming, choose_filmed, compose

CHROMIUM = "/usr/bin/chromium"
TINY = (
    "task=pushcube",
    "algo.rounds=2",
    "algo.updates_per_round=20",
    "algo.episodes_per_round=4",
    "collector.num_envs=2",
    "eval.episodes=6",
    "eval.num_envs=3",
    "eval.videos=3",
    "eval.videos_failures=2",
    "eval.video_size=128",
    "review=true",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny DAgger runs on PushCube that differ in their seed and learning rate, each with its review page."""
    root = tmp_path_factory.mktemp("review")
    out = []
    for seed, lr in ((0, "1e-3"), (1, "3e-3")):
        run = root / f"run{seed}"
        summary = train_run(*TINY, f"seed={seed}", f"algo.lr={lr}", run=run)
        assert summary["review"] == str(run / "review" / "index.html")
        out.append(run)
    return out


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"the review page's browser test needs Debian's chromium at {CHROMIUM}: scripts/setup.sh installs it"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield b
        b.close()


def open_page(browser, page_path: Path):
    """The page opened from disk, with every console error and page error collected in `page.errors`."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(page_path.resolve().as_uri())
    return page


def test_the_run_page_renders_in_chromium_with_playing_videos_and_a_working_filter(runs, browser, tmp_path):
    run = runs[0]
    evaluation = json.loads((run / "eval.json").read_text())
    filmed = evaluation["filmed"]
    assert len(filmed) == 3 and all(Path(f["video"]).exists() for f in filmed)
    page = open_page(browser, run / "review" / "index.html")
    videos = page.locator("video")
    assert videos.count() == 3
    page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 1)", timeout=20_000)
    durations = page.evaluate("[...document.querySelectorAll('video')].map(v => v.duration)")
    assert all(d > 0 for d in durations), durations
    widths = page.evaluate("[...document.querySelectorAll('video')].map(v => v.videoWidth)")
    assert widths == [128] * 3  # a state student: the scene camera alone, at eval.video_size
    # the learning curves (matplotlib SVG) and the action plots (drawn by the page's script) have a size on screen
    curves = page.locator("figure.curves svg").bounding_box()
    assert curves and curves["width"] > 300 and curves["height"] > 100
    assert page.locator(".actions svg").count() == 4  # one per PushCube action dimension
    assert page.locator(".actions polyline").count() == 8  # student and teacher
    # the outcome filter shows exactly the cards of the chosen outcome
    outcomes = [("success" if f["success"] else "failure") for f in filmed]
    for show in ("failure", "success", "all"):
        page.click(f"#run0 .filter button[data-show={show}]")
        visible = page.locator(".card:visible").count()
        assert visible == (len(outcomes) if show == "all" else outcomes.count(show)), (show, outcomes)
    # picking another dataset episode redraws the action plots
    options = page.locator(".episode-pick option").count()
    assert options >= 2
    before = page.locator(".actions polyline").first.get_attribute("points")
    page.select_option(".episode-pick", "1")
    assert page.locator(".actions polyline").first.get_attribute("points") != before
    shot = tmp_path / "review.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.errors == []


def test_failures_are_filmed_first_then_successes():
    results = [{"episode": i, "success": s} for i, s in enumerate([True, False, True, False, False, True])]
    assert choose_filmed(results, Filming(videos=4, failures=2)) == [1, 3, 0, 2]
    assert choose_filmed(results, Filming(videos=5, failures=0)) == [0, 2, 5, 1, 3]
    few = [{"episode": i, "success": s} for i, s in enumerate([False, False, False, True])]
    assert choose_filmed(few, Filming(videos=4, failures=1)) == [0, 3, 1, 2]  # successes ran short: more failures


def test_frames_put_the_students_cameras_beside_the_scene():
    scene = np.full((100, 100, 3), 50, np.uint8)
    obs = {"front_rgb": np.full((32, 32, 3), 200, np.uint8), "wrist_rgb": np.zeros((32, 32, 3), np.uint8)}
    frame = compose(scene, obs, ["front_rgb", "wrist_rgb"], 480)
    assert frame.shape == (480, 720, 3)  # 480 scene + a 240-wide column of two 240x240 views
    assert frame[100, 600, 0] == 200 and frame[300, 600, 0] == 0  # the front view above the wrist view
    assert compose(scene, {}, [], 480).shape == (480, 480, 3)


def test_several_runs_side_by_side_with_the_keys_that_differ(runs, browser, tmp_path):
    p = run_script("scripts/review.py", *map(str, runs), f"out={tmp_path / 'cmp'}")
    assert p.returncode == 0, p.stderr[-2000:]
    page_path = tmp_path / "cmp" / "index.html"
    assert "review page:" in p.stdout
    page = open_page(browser, page_path)
    rows = page.locator("section.compare table.cmp").nth(1).locator("td code").all_inner_texts()
    assert "seed" in rows and "algo.lr" in rows and "task.env_id" not in rows
    assert page.locator("section.run").count() == 2
    page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 1)", timeout=20_000)
    assert page.errors == []


def test_a_run_without_videos_gets_a_page_that_says_so(runs, tmp_path):
    run = tmp_path / "novideo"
    shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns("review", "videos"))
    page = write_review([run], tmp_path / "page").read_text()
    assert "no videos: this run filmed no episode" in page and "<video" not in page


def test_bad_input_is_one_clear_error(tmp_path):
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "model.pt").write_bytes(b"")
    with user_error("is not a run directory", "no config.yaml", "model.pt"):
        write_review([tmp_path / "notarun"], tmp_path / "out")
    one_clear_error(run_script("scripts/review.py", str(tmp_path / "missing")), "does not exist")
    one_clear_error(run_script("scripts/review.py", str(tmp_path / "notarun"), "outdir=x"), "out=<dir>")
