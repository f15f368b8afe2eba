"""The failure monitor: split-conformal thresholds on per-rollout scores (and their false-alarm guarantee), windowed
alarms (FIPER's AND against single signals), calibration on a real student's rollouts, alarms in evaluation, and
its bad input (too few successes for alpha, another checkpoint, a student that cannot report its spread); and the
monitor shipped in an exported artifact, scored by the torch-free runtime in the control loop."""

import json
import re
import shutil

import numpy as np
import pytest
from conftest import fresh_run, run_script, train_run, user_error

from robodistill.deploy.deployment import close_all, deploy_sim, monitoring
from robodistill.evaluation.monitor import calibrate, load_monitor
from robodistill.evaluation.rerun import evaluate_run
from robodistill.evaluation.review import write_review
from robodistill.export.exporter import export_run
from robodistill.rundir import RunDir
from robodistill.runtime.artifact import load_artifact
from robodistill.runtime.monitor import (
    ArtifactScorer,
    FailureMonitor,
    conformal_threshold,
    joint_thresholds,
    min_rollouts,
    monitor_rule,
    rollout_score,
    thresholds_at,
    window_means,
)
from robodistill.runtime.process_policy import ProcessPolicy


def test_the_conformal_threshold_is_the_right_order_statistic_and_needs_enough_rollouts():
    assert min_rollouts(0.05) == 19 and min_rollouts(0.1) == 9 and min_rollouts(0.3) == 3
    scores = list(range(1, 20))  # 19 rollouts at alpha 0.05: the 19th smallest, the largest
    assert conformal_threshold(scores, 0.05) == 19.0
    assert conformal_threshold(list(range(1, 40)), 0.05) == 38.0  # ceil(40 * 0.95) = 38
    with user_error("18 successful calibration rollouts are too few for alpha=0.05", "at least 19"):
        conformal_threshold(list(range(18)), 0.05)


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_false_alarms_on_exchangeable_rollouts_stay_within_alpha(alpha):
    rng = np.random.default_rng(0)
    trials, n = 4000, 40
    alarms = 0
    for _ in range(trials):  # per-rollout scores of one distribution: calibration rollouts and a new one
        scores = rng.gamma(2.0, size=n + 1)
        alarms += scores[-1] > conformal_threshold(scores[:-1], alpha)
    assert alarms / trials <= alpha + 0.01  # the guarantee (marginal over calibration sets), with sampling slack


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_the_jointly_calibrated_and_keeps_alpha_where_separate_thresholds_fall_far_below(alpha):
    rng = np.random.default_rng(1)
    trials, n, steps = 500, 40, 16
    joint_alarms = separate_alarms = 0
    for _ in range(trials):  # exchangeable rollouts: per-step scores of two independent signals
        traces = [{s: rng.gamma(2.0, size=steps).tolist() for s in ("rnd", "entropy")} for _ in range(n + 1)]
        calibration, new = traces[:-1], traces[-1]
        for thresholds, count in (
            (joint_thresholds(calibration, 4, alpha), "joint"),
            (thresholds_at({s: [rollout_score(t[s], 4) for t in calibration] for s in new}, alpha), "separate"),
        ):
            rule = FailureMonitor(thresholds, window=4, method="fiper")
            fired = any([rule.update({s: new[s][k] for s in new}) for k in range(steps)])
            joint_alarms += fired and count == "joint"
            separate_alarms += fired and count == "separate"
    assert joint_alarms / trials <= alpha + 0.02  # the guarantee, with sampling slack
    assert joint_alarms / trials >= alpha - 0.03  # and not far below it: the AND is calibrated as one rule
    assert separate_alarms < 0.5 * joint_alarms  # each signal at alpha: the AND fires far less often


def test_windows_and_the_and_of_both_signals():
    np.testing.assert_allclose(window_means([1, 3, 5, 7], 2), [1, 2, 4, 6])
    assert rollout_score([0, 0, 9, 0, 0], 3) == 3.0
    fiper = FailureMonitor({"rnd": 1.0, "entropy": 1.0}, window=2, method="fiper")
    rnd = FailureMonitor({"rnd": 1.0, "entropy": 1.0}, window=2, method="rnd")
    steps = [{"rnd": 3.0, "entropy": 0.0}, {"rnd": 3.0, "entropy": 3.0}, {"rnd": 3.0, "entropy": 3.0}]
    assert [rnd.update(s) for s in steps] == [True, True, True]
    assert [fiper.update(s) for s in steps] == [False, True, True]  # entropy's window mean passes 1 at step 2
    fiper.reset()
    assert fiper.update({"rnd": 0.5, "entropy": 9.0}) is False  # a new episode starts from empty windows
    with user_error("monitor method must be one of fiper_joint, fiper, rnd, entropy"):
        FailureMonitor({"rnd": 1.0, "entropy": 1.0}, method="both")


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory) -> object:
    """A BC student on Reach (Gaussian: its spread is its predicted std), good enough to succeed often."""
    run = tmp_path_factory.mktemp("monitor") / "bc"
    train_run("task=reach", "algo=bc", "algo.num_demos=20", "algo.updates=600", "eval.episodes=4", "eval.videos=0",
              run=run)  # fmt: skip
    return run


def test_calibrate_then_evaluate_reports_when_each_alarm_fired(bc_run, tmp_path):
    summary = calibrate(bc_run, alpha=0.3, episodes=20, progress=False)  # scripts/calibrate.py's call
    assert summary["calibration_rollouts"] >= 3 and set(summary["thresholds"]) == {"rnd", "entropy"}
    assert (bc_run / "monitor.pt").exists()
    p = run_script("scripts/evaluate.py", str(bc_run), "--episodes", "12", "--videos", "0", "--monitor")
    assert p.returncode == 0, p.stderr[-2000:]
    alarms = json.loads(p.stdout)["alarms"]
    assert set(alarms) == {"fiper_joint", "fiper", "rnd", "entropy"}
    result = json.loads((bc_run / "eval_best.json").read_text())
    for e in result["per_episode"]:
        assert set(e["alarm_step"]) == {"fiper_joint", "fiper", "rnd", "entropy"}
        assert all(s is None or 0 <= s < e["length"] for s in e["alarm_step"].values())
        assert len(e["monitor_scores"]["rnd"]) == len(e["monitor_scores"]["entropy"]) == e["length"]
        fiper, rnd, entropy = (e["alarm_step"][m] for m in ("fiper", "rnd", "entropy"))
        if fiper is not None:  # the AND fires only where both single signals have fired
            assert rnd is not None and entropy is not None and fiper >= max(rnd, entropy)
    joint = summary["joint_thresholds"]  # the AND calibrated as one rule: never a higher bar than a signal's own
    assert all(joint[s] <= summary["thresholds"][s] * (1 + 1e-9) for s in ("rnd", "entropy"))
    for m in alarms.values():
        assert m["successes"] + m["failures"] == 12


def test_a_monitor_for_another_checkpoint_or_too_few_successes_is_refused(bc_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(bc_run, run)
    with user_error("alpha=0.01 needs at least 198 successful ones", "raise episodes="):
        calibrate(run, alpha=0.01, episodes=10, progress=False)
    if not (run / "monitor.pt").exists():
        calibrate(run, alpha=0.3, episodes=20, progress=False)
    ckpt = run / "checkpoints" / "best.pt"
    ckpt.write_bytes(ckpt.read_bytes() + b"\0")  # another checkpoint (as far as its hash goes)
    with user_error("was calibrated for another checkpoint", "calibrate again"):
        evaluate_run(RunDir(run).config(), run, episodes=2, videos=0, monitor=True)


def test_a_student_that_cannot_report_its_spread_is_one_error(tmp_path):
    run = fresh_run(
        tmp_path / "vla",
        {"env_id": "robodistill/Reach-v0"},
        {"kind": "vla", "obs_keys": ["state", "instruction"], "d_model": 32, "layers": 1},
    )
    with user_error("cannot report its action spread"):
        calibrate(run, alpha=0.3, episodes=4, progress=False)


def test_perturbations_move_the_object_at_their_step_and_leave_the_rest_as_it_was():
    import gymnasium as gym

    from robodistill.evaluation.faults import Perturbed
    from robodistill.tasks import make_env

    env = Perturbed(make_env({"env_id": "robodistill/PushCube-v0"}), "displace", 0.06, first=3, last=4)
    env.reset(seed=1)
    u = env.unwrapped
    adr = u.model.jnt_qposadr[env._free[0]]
    zero = np.zeros(env.action_space.shape, np.float32)
    for _ in range(3):
        before = u.data.qpos[adr : adr + 2].copy()
        env.step(zero)
    moved = np.linalg.norm(u.data.qpos[adr : adr + 2] - before)
    env.step(zero)  # step 3: the cube jumps 6 cm in the table plane
    assert np.linalg.norm(u.data.qpos[adr : adr + 2] - before) > moved + 0.05
    camera = Perturbed(make_env({"env_id": "robodistill/PushCube-v0"}, "rgb"), "camera_shift", 0.05, first=2, last=3)
    frames = [camera.reset(seed=3)[0]["front_rgb"]]
    for _ in range(3):  # the scene camera moves at step 2: the frame it returns differs, the wrist camera's not
        frames.append(camera.step(zero)[0]["front_rgb"])
    assert np.abs(frames[3].astype(int) - frames[2]).mean() > 5 * np.abs(frames[2].astype(int) - frames[1]).mean()
    camera.reset(seed=3)
    assert np.array_equal(camera.unwrapped.model.cam_pos, camera._defaults[3])  # back where it was
    colour = Perturbed(make_env({"env_id": "robodistill/PushCube-v0"}), "table_colour", 1.0)
    table = colour.unwrapped.model.geom_rgba.copy()
    colour.reset(seed=2)
    assert not np.array_equal(colour.unwrapped.model.geom_rgba, table)
    with pytest.raises(ValueError, match="unknown perturbation 'earthquake'"):
        Perturbed(gym.make("robodistill/PushCube-v0"), "earthquake", 1.0)


@pytest.fixture(scope="module")
def calibrated(bc_run, tmp_path_factory) -> object:
    """A copy of the BC run with its monitor calibrated, exported with it."""
    run = tmp_path_factory.mktemp("monitored") / "bc"
    shutil.copytree(bc_run, run)
    calibrate(run, alpha=0.3, episodes=20, progress=False)
    export_run(run, samples=100, progress=False)
    return run


def test_the_export_carries_the_monitor_and_the_runtime_scores_as_torch_does(calibrated):
    artifact = load_artifact(calibrated / "export_onnx")
    spec = artifact.contract["monitor"]
    state = load_monitor(calibrated / "monitor.pt", calibrated / "checkpoints" / "best.pt")
    assert spec["thresholds"] == state["thresholds"] and spec["window"] == state["window"]
    assert spec["joint_thresholds"] == state["joint_thresholds"]  # deploy's default method, fiper_joint
    assert monitor_rule(artifact).thresholds == state["joint_thresholds"]
    assert monitor_rule(artifact, "rnd", 0.5).thresholds["rnd"] < spec["thresholds"]["rnd"]  # recomputed at 0.5
    with user_error("fiper_joint's thresholds at another alpha", "calibrate the run with alpha=0.5"):
        monitor_rule(artifact, "fiper_joint", 0.5)
    assert set(spec["graphs"]) == {"monitor_rnd", "monitor_embedding"}
    parity = json.loads((calibrated / "export_onnx" / "parity.json").read_text())["graphs"]
    assert parity["runtime_monitor"]["passed"] and parity["runtime_monitor"]["rnd"] <= 1e-4
    assert parity["runtime_monitor"]["entropy"] <= 1e-4  # a Gaussian student's spread: its predicted std
    data = np.load(calibrated / "export_onnx" / "selftest.npz")
    scores = ArtifactScorer(artifact)({k[4:]: data[k][:1] for k in data.files if k.startswith("obs/")})
    assert set(scores) == {"rnd", "entropy"} and all(np.isfinite(v) for v in scores.values())


def test_deployed_with_the_monitor_every_alarm_is_in_the_tick_log_and_stop_ends_the_episode(calibrated, tmp_path):
    artifact = load_artifact(calibrated / "export_onnx")
    monitor = {"enabled": True, "method": "rnd", "alpha": 0.9, "on_alarm": "stop"}  # thresholds at alpha 0.9: low
    result = deploy_sim(artifact, 3, 0, log_dir=tmp_path, progress=False, inference="process", monitor=monitor)
    assert result["scored"] > 0 and result["monitor"]["method"] == "rnd"
    for i, e in enumerate(result["per_episode"]):
        ticks = [json.loads(line) for line in (tmp_path / f"episode_{i:03d}.jsonl").read_text().splitlines()]
        rule = FailureMonitor(result["monitor"]["thresholds"], artifact.contract["monitor"]["window"], "rnd")
        replayed = [bool(t["scores"]) and rule.update(t["scores"]) for t in ticks]
        assert [t["alarm"] for t in ticks] == replayed  # every alarm logged, at the tick its score arrived
        if e["first_alarm_tick"] is not None:
            assert e["stopped_by_alarm"] and ticks[-1]["tick"] == e["first_alarm_tick"]
    assert result["monitor"]["thresholds"]["rnd"] < artifact.contract["monitor"]["thresholds"]["rnd"]


def test_a_monitor_the_export_or_the_deployment_cannot_use_is_refused(calibrated, bc_run, tmp_path):
    with user_error("monitor=true", "format=onnx"):
        export_run(calibrated, tmp_path / "ts", fmt="torchscript", samples=20, progress=False, monitor=True)
    plain = tmp_path / "plain"
    shutil.copytree(bc_run, plain, ignore=shutil.ignore_patterns("monitor.pt", "export_*"))
    with user_error("monitor.pt does not exist", "calibrate first"):
        export_run(plain, samples=20, progress=False, monitor=True)
    export_run(plain, samples=20, progress=False)  # auto: no monitor, none shipped
    bare = load_artifact(plain / "export_onnx")
    assert "monitor" not in bare.contract
    with user_error("carries no failure monitor", "scripts/calibrate.py"):
        deploy_sim(bare, 1, 0, progress=False, monitor={"enabled": True, "on_alarm": "log"})
    stale = tmp_path / "stale"
    shutil.copytree(calibrated, stale, ignore=shutil.ignore_patterns("export_*"))
    ckpt = stale / "checkpoints" / "best.pt"
    ckpt.write_bytes(ckpt.read_bytes() + b"\0")
    with user_error("was calibrated for another checkpoint"):
        export_run(stale, samples=20, progress=False)
    assert not (stale / "export_onnx").exists()  # nothing written


def test_the_review_page_marks_each_alarm_on_the_filmed_episodes_timeline(calibrated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(calibrated, run, ignore=shutil.ignore_patterns("export_*"))
    cfg = RunDir(run).config()
    cfg.eval.video_size = 96  # what the page shows does not depend on the size
    result = evaluate_run(cfg, run, episodes=6, videos=2, monitor=True)
    assert result["monitor"]["thresholds"] and result["filmed"]
    page = write_review([run], tmp_path / "review").read_text()
    cards = re.findall(r'<div class="card.*?</p></div>', page)
    assert len(cards) == len(result["filmed"])
    for card, filmed in zip(cards, result["filmed"], strict=True):
        assert card.count("<polyline") == 2  # both signals against their thresholds
        length, steps = filmed["length"], filmed["alarm_step"]
        found = re.findall(r'data-method="(\w+)" data-step="\d+" style="left:([\d.]+)%', card)
        marks = {method: float(left) for method, left in found}
        assert {m for m, s in steps.items() if s is not None} == set(marks)
        for method, left in marks.items():  # each marker at its alarm step's place on the timeline
            assert left == pytest.approx(100 * steps[method] / max(length - 1, 1), abs=0.01)
        assert ("no alarm" in card) == any(s is None for s in steps.values())


def test_beside_an_inference_process_the_monitor_scores_in_a_process_of_its_own(calibrated):
    artifact = load_artifact(calibrated / "export_onnx")
    policy = ProcessPolicy(artifact.path)
    watch = monitoring(artifact, policy, {"enabled": "auto"})
    try:
        scorer = watch.score.__self__
        assert isinstance(scorer, ProcessPolicy) and scorer is not policy and watch.close is not None
        data = np.load(calibrated / "export_onnx" / "selftest.npz")
        inputs = policy.observe({k[4:]: data[k][0] for k in data.files if k.startswith("obs/")})
        assert watch.score(inputs) == pytest.approx(ArtifactScorer(artifact)(inputs), rel=1e-5)  # as in-process
    finally:
        close_all(policy, watch)
    assert not scorer._proc.is_alive() and not policy._proc.is_alive()
