"""scripts/bench.py <suite> --quick runs end to end and writes the JSON keys the issue names. Each is the bench's own
--quick run, so all are slow (kept out of `make test`): `scripts/bench.py <suite> --quick` is the check; what they
exercise is covered in the default run by the train, experts, collector, rpd, diffusion, opd and export tests."""

import json

import pytest
from conftest import run_script


def quick_bench(suite: str, tmp_path, timeout: int) -> tuple:
    """`scripts/bench.py <suite> --quick --out <tmp>/<suite>.json` run as a user would: the process and its JSON."""
    out = tmp_path / f"{suite}.json"
    p = run_script("scripts/bench.py", suite, "--quick", "--out", str(out), timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p, json.loads(out.read_text())


@pytest.mark.slow  # ~40 s: = scripts/bench.py foundation --quick
def test_foundation_quick_bench_writes_json(tmp_path):
    p, data = quick_bench("foundation", tmp_path, timeout=600)
    assert isinstance(data["collector_over_raw"], float) and data["collector_over_raw"] > 0
    assert set(data["expert_success"]) == {
        "robodistill/Reach-v0",
        "robodistill/PushCube-v0",
        "robodistill/PickCube-v0",
        "robodistill/StackCube-v0",
        "robodistill/PushT-v0",
    }
    for algo in ("dagger", "bc"):
        for task in ("robodistill/PushCube-v0", "robodistill/PickCube-v0"):
            row = data[algo][task]
            assert {"success_mean", "success_std", "wall_s", "teacher_labels"} <= set(row)
    # BC is given as many teacher labels as DAgger used (to within one episode)
    for task in data["dagger"]:
        assert abs(data["bc"][task]["teacher_labels"] - data["dagger"][task]["teacher_labels"]) < 200
    assert data["render_fps_96"] > 0 and len(data["commit"]) >= 7
    assert "collector / raw env steps per s" in p.stdout


@pytest.mark.slow  # ~40 s: = scripts/bench.py rpd --quick
def test_rpd_quick_bench_writes_json_and_png(tmp_path):
    p, data = quick_bench("rpd", tmp_path, timeout=600)
    row = data["tasks"]["robodistill/PushCube-v0"]
    for key in ("teacher_success", "ppo_success", "rpd_success", "ppo_steps_to_80", "rpd_steps_to_80"):
        assert key in row
    assert data["teacher_calls_per_step"] == 1.0
    assert data["teacher_calls_per_step_after_anneal"] is None and data["rpd_steps_after_anneal"] == 0  # a floor
    assert data["distill_floor"] > 0
    assert (tmp_path / "rpd.png").read_bytes().startswith(b"\x89PNG")
    assert "teacher labels per collected env step" in p.stdout


@pytest.mark.slow  # ~25 s: = scripts/bench.py diffusion --quick
def test_diffusion_quick_bench_writes_json(tmp_path):
    p, data = quick_bench("diffusion", tmp_path, timeout=900)
    row = data["tasks"]["robodistill/PickCube-v0"]
    chained = [f"{h}_{n}step" for h in ("consistency", "consistency_on_policy") for n in (2, 3)]
    heads = ("consistency", "consistency_on_policy", *chained)
    for variant in ("ddpm100", "ddim10", "sdp", "rti", *heads):
        assert {"success", "nfe", "latency_ms", "speedup_vs_ddpm100"} <= set(row[variant])
    # network evaluations per control step, counted while evaluating: one plan per 8 actions (a little more when an
    # episode ends mid-chunk) of 100 (DDPM), 10 (DDIM), 1 (a head) or n (its n-step chain); RTI 3 per step plus a
    # DDIM-10 first plan
    chain_length = {h: int(h[-5]) if h.endswith("step") else 1 for h in heads}
    for variant, k in (("ddpm100", 100), ("ddim10", 10), *chain_length.items()):
        assert k / 8 <= row[variant]["nfe"] <= k / 4, variant
    assert 3 < row["rti"]["nfe"] < 5
    assert row["ddpm100"]["speedup_vs_ddpm100"] == 1.0 and row["consistency"]["speedup_vs_ddpm100"] > 5
    assert data["runs"]["pickcube_s0"]["train_wall_s"]["consistency_on_policy"] > 0
    levers = row["levers_seed0"]
    assert set(levers) == {"consistency", "consistency_3x_updates", "consistency_teacher_steps_20"}
    assert levers["consistency"]["success"] == data["runs"]["pickcube_s0"]["consistency"]["success"]
    assert levers["consistency"]["success_3step"] == data["runs"]["pickcube_s0"]["consistency_3step"]["success"]
    assert len(data["commit"]) >= 7
    assert "speedup" in p.stdout


@pytest.mark.slow  # ~120 s: the OPD learner, cache, router, server and client are covered by test_opd_cli.py, test_remote.py
def test_opd_quick_bench_writes_json_and_pngs(tmp_path):
    p, data = quick_bench("opd", tmp_path, timeout=900)
    assert set(data["tasks"]) == {"robodistill/PushCube-v0", "robodistill/PickCube-v0"}
    for row in data["tasks"].values():
        for loss in ("rkl", "fkl", "ce", "sft"):
            assert len(row[loss]["success"]) == 2 and len(row[loss]["entropy"]) == 2  # one per round
            assert all(0 < h <= 5.55 for h in row[loss]["entropy"])
    assert set(data["labels_to_90pct"]) >= {"opd", "sft"} and set(data["forgetting"]) >= {"opd", "sft"}
    assert data["remote_over_local_throughput"] > 0 and len(data["commit"]) >= 7
    assert data["cache"]["cached"]["teacher_calls"] == 0 < data["cache"]["live"]["teacher_calls"]
    assert set(data["merged"]) == set(data["tasks"]) and set(data["merged"]["robodistill/PickCube-v0"]) == {
        "student",
        "specialist",
    }
    assert set(data["curriculum"]["kl"]) == {"vanilla", "curriculum"}
    for name in ("opd_entropy.png", "opd_success.png", "opd_curriculum.png", "opd_curriculum_kl.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    assert "labels to 90%" in p.stdout


@pytest.mark.slow  # ~90 s: export, runtime, control loop, server and deploy are covered by test_export.py and test_control.py
def test_deploy_quick_bench_writes_json(tmp_path):
    p, data = quick_bench("deploy", tmp_path, timeout=900)
    assert set(data["onnx_over_torch_latency"]) == {"gaussian_mlp", "gaussian_cnn", "vla", "diffusion", "consistency"}
    assert all(r > 0 for r in data["onnx_over_torch_latency"].values())
    assert all(d <= 1e-4 for d in data["parity_max_abs_diff"].values())
    assert set(data["jitter_p99_ms"]) == {"50", "100"} and set(data["server_rtt_ms"]) == {"1", "8"}
    assert data["deadline_misses_per_10k"] >= 0 and 0 <= data["deploy_success"] <= 1 and 0 <= data["eval_success"] <= 1
    assert len(data["commit"]) >= 7 and "server round trip" in p.stdout


@pytest.mark.slow  # ~40 s: = scripts/bench.py byo --quick; task=gym runs: test_train_cli.py, test_rl_cli.py
def test_byo_quick_bench_writes_json(tmp_path):
    p, data = quick_bench("byo", tmp_path, timeout=600)
    assert set(data["tasks"]) == {"Reacher-v5", "Pusher-v5"}
    for row in data["tasks"].values():
        assert row["expert"]["env_steps"] == 2000 and row["expert"]["validation_curve"]
        rounds = row["student"]["rounds"]
        assert [r["round"] for r in rounds] == [0, 1] and all(r["eval_return_mean"] < 0 for r in rounds)
        labels = [r["labels_so_far"] for r in rounds]
        assert 0 < labels[0] < labels[1]  # aggregated over rounds
        assert row["student"]["labels_kept"] == rounds[-1]["labels_so_far"]
        assert row["random"]["return_mean"] < 0 and row["student"]["wall_s"] > 0
    # every episode a round asked for is kept, and only those are labelled
    assert data["teacher_calls_per_label"] == {"Reacher-v5": 1.0, "Pusher-v5": 1.0}
    assert data["expert_return"]["Reacher-v5"] > data["random_return"]["Reacher-v5"]  # even 2000 SAC steps beat random
    assert len(data["commit"]) >= 7 and "calls/label" in p.stdout


@pytest.mark.slow  # ~100 s: = scripts/bench.py pixels --quick; camera students: test_cameras.py, test_camera_students.py
def test_pixels_quick_bench_writes_json_and_png(tmp_path):
    p, data = quick_bench("pixels", tmp_path, timeout=900)
    row = data["tasks"]["robodistill/PushCube-v0"]
    assert 0 <= row["teacher_success"] <= 1
    for name in ("cnn_dagger", "cnn_bc", "dp_rgb", "token"):
        assert {"success", "success_std", "teacher_labels", "cpu_s"} <= set(row[name]), name
    assert row["cnn_bc"]["teacher_labels"] >= row["cnn_dagger"]["teacher_labels"]  # BC gets at least DAgger's labels
    assert set(data["ablations"]) == {"no_shift", "front_only"}
    assert all(0 <= data["render_share"][k] <= 1 for k in ("render", "forward", "backward"))
    assert data["peak_rss_ratio_4x"] > 0 and "label buffer peak RSS" in p.stdout
    deploy = data["deploy"]  # the DAgger camera student through the torch-free runtime at 20 Hz, both cameras
    assert deploy["parity_passed"] and deploy["rate_hz"] == 20.0 and deploy["cameras"] == ["front_rgb", "wrist_rgb"]
    assert (tmp_path / "pixels_success.png").read_bytes().startswith(b"\x89PNG")
    assert "cnn_dagger" in p.stdout


def test_device_quick_bench_writes_json(tmp_path):  # ~15 s: in the default run, it is cheap
    p, data = quick_bench("device", tmp_path, timeout=600)
    cpu = data["cpu"]
    assert cpu["updates_per_s"] > 0 and set(cpu["labels_per_s"]) == {"1", "16"}
    assert all(v > 0 for v in cpu["labels_per_s"].values())
    assert (data["cuda"] is None) == (data["gpu"] is None) and data["cpu_threads"] == 1
    assert "updates/s" in p.stdout and len(data["commit"]) >= 7


@pytest.mark.slow  # ~60 s: = scripts/bench.py scale --quick (the Ray collector is covered by test_ray_collector.py)
def test_scale_quick_bench_writes_json(tmp_path):
    p, data = quick_bench("scale", tmp_path, timeout=900)
    assert data["sync_steps_per_s"] > 0 and set(data["ray_steps_per_s"]) == {"1", "2"}
    assert set(data["slow_teacher_labels_per_s"]) == {"sync", "ray_batched", "ray_per_runner"}
    assert data["teacher_batch_mean"] >= 1 and 0 < data["collector_over_raw"]
    assert set(data["ddp_updates_per_s"]) == {"1", "2"} and len(data["commit"]) >= 7
    assert "batching teacher" in p.stdout


@pytest.mark.slow  # ~10 s (~35 s with LEROBOT_PYTHON): = scripts/bench.py convert --quick; test_lerobot.py covers it
def test_convert_quick_bench_writes_json(tmp_path):
    p, data = quick_bench("convert", tmp_path, timeout=600)
    for name in ("state", "camera"):
        row = data["datasets"][name]
        assert row["frames"] > 0 and row["export_fps"] > 0 and row["import_fps"] > 0 and row["hdf5_read_fps"] > 0
        assert row["train_read_lerobot_fps"] > 0 and row["lerobot_mb"] > 0
    assert data["datasets"]["camera"]["image_mae"] < 6
    assert data["lerobot_verified"] or "lerobot_not_verified_because" in data  # lerobot is not a dependency
    assert "->LeRobot f/s" in p.stdout
