"""Each bad input gets one clear error (what the scripts print as one `error:` line and exit 2), and nothing already
written is lost. In-process, except the missing GL backend: that one needs a fresh interpreter and checks the script's
own line and exit code."""

import ctypes.util

import h5py
import numpy as np
import pytest
from conftest import one_clear_error, run_script, train_run, user_error


def test_unknown_task_lists_the_available_ones(tmp_path):
    with user_error("Could not find 'task/nosuchtask'", "pushcube", "pickcube"):
        train_run("task=nosuchtask", run=tmp_path / "r")
    with user_error("unknown task 'NoSuchEnv-v0'", "robodistill/PushCube-v0"):
        train_run("task=gym", "task.env_id=NoSuchEnv-v0", run=tmp_path / "r")


def test_bad_override_and_bad_mode(tmp_path):
    with user_error("no_such_key"):
        train_run("algo.no_such_key=3", run=tmp_path / "r")
    with user_error("unknown control_mode 'teleport'", "pd_ee_delta_pos"):
        train_run("task=reach", "task.kwargs.control_mode=teleport", run=tmp_path / "r")


def test_teacher_whose_actions_do_not_fit_the_task(user_module, tmp_path):
    user_module("wrong_teacher", "import numpy as np\ndef act(obs):\n    return np.zeros((len(obs), 7), np.float32)\n")
    with user_error("do not match", "(1, 4)"):
        train_run("task=reach", "teacher=callable", "teacher.target=wrong_teacher:act", run=tmp_path / "r")
    with user_error("cannot import teacher.target", "wrong_teacher:nope"):
        train_run("task=reach", "teacher=callable", "teacher.target=wrong_teacher:nope", run=tmp_path / "r")


def test_pixel_student_on_a_state_only_generic_task(tmp_path):
    with user_error("offers only its own observation"):
        train_run("task=gym", "task.env_id=Pusher-v5", "student=cnn", run=tmp_path / "r")


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is not None, reason="OSMesa is installed here")
def test_missing_gl_backend_names_the_debian_package(tmp_path):
    # a pixel student renders from the first reset, so the missing backend shows at once (a state run would only
    # meet it when the final evaluation films its videos, minutes later)
    p = run_script(
        "scripts/train.py",
        "progress=false",
        "task=reach",
        "student=cnn",
        f"hydra.run.dir={tmp_path / 'r'}",
        env={"MUJOCO_GL": "osmesa"},
    )
    one_clear_error(p, "MUJOCO_GL=osmesa", "apt-get install -y libosmesa6")
    assert p.returncode == 2 and p.stderr.startswith("error: ") and len(p.stderr.strip().splitlines()) == 1


def test_missing_and_corrupt_dataset(tmp_path):
    with user_error("does not exist"):
        train_run("task=reach", "algo=bc", f"algo.dataset={tmp_path / 'missing.hdf5'}", run=tmp_path / "r")
    bad = tmp_path / "corrupt.hdf5"
    bad.write_bytes(b"not an hdf5 file at all" * 100)
    with user_error("not a readable HDF5 file"):
        train_run("task=reach", "algo=bc", f"algo.dataset={bad}", run=tmp_path / "r2")
    assert bad.read_bytes() == b"not an hdf5 file at all" * 100  # the user's file is left as it was


def one_demo_dataset(path, obs: dict, action_dim: int):
    """A robomimic-layout file holding one 5-step demo with these observations (arrays) and zero actions."""
    with h5py.File(path, "w") as f:
        g = f.create_group("data/demo_0")
        f["data"].attrs["total"] = 5
        f["data"].attrs["env_args"] = "{}"
        g.attrs["num_samples"] = 5
        for k, v in obs.items():
            g.create_dataset(f"obs/{k}", data=v, chunks=(1, *v.shape[1:]))
        g["actions"] = np.zeros((5, action_dim), "float32")
    return path


def test_dataset_with_wrong_action_dim(tmp_path):
    path = one_demo_dataset(tmp_path / "wrong.hdf5", {"state": np.zeros((5, 28), "float32")}, action_dim=9)
    with user_error("the task needs"):
        train_run("task=reach", "algo=bc", f"algo.dataset={path}", run=tmp_path / "r")


def test_dataset_recorded_with_other_cameras_than_the_student_reads(tmp_path):
    obs = {"front_rgb": np.zeros((5, 64, 64, 3), "uint8"), "proprio": np.zeros((5, 9), "float32")}
    path = one_demo_dataset(tmp_path / "front_only.hdf5", obs, action_dim=4)
    with user_error("recorded with cameras [front_rgb]", "the student reads cameras [front_rgb, wrist_rgb]"):
        train_run("task=reach", "student=cnn", "algo=bc", f"algo.dataset={path}", run=tmp_path / "r")
