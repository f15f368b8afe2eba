"""Each bad input gets one clear line (exit code != 0, no traceback), and nothing already written is lost."""

import ctypes.util

import h5py
import pytest
from conftest import one_clear_error


def test_unknown_task_lists_the_available_ones(train_cli):
    p = train_cli("task=nosuchtask")
    one_clear_error(p, "Could not find 'task/nosuchtask'", "pushcube", "pickcube")
    p = train_cli("task=gym", "task.env_id=NoSuchEnv-v0")
    one_clear_error(p, "unknown task 'NoSuchEnv-v0'", "robodistill/PushCube-v0")


def test_bad_override_and_bad_mode(train_cli, tmp_path):
    one_clear_error(train_cli("algo.no_such_key=3"), "no_such_key")
    p = train_cli("task=reach", "task.kwargs.control_mode=teleport", f"hydra.run.dir={tmp_path / 'r'}")
    one_clear_error(p, "unknown control_mode 'teleport'", "pd_ee_delta_pos")


def test_teacher_whose_actions_do_not_fit_the_task(train_cli, tmp_path):
    (tmp_path / "wrong_teacher.py").write_text(
        "import numpy as np\ndef act(obs):\n    return np.zeros((len(obs), 7), np.float32)\n"
    )
    p = train_cli("task=reach", "teacher=callable", "teacher.target=wrong_teacher:act",
                  f"hydra.run.dir={tmp_path / 'r'}", env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    one_clear_error(p, "do not match", "(1, 4)")
    p = train_cli("task=reach", "teacher=callable", "teacher.target=wrong_teacher:nope", f"hydra.run.dir={tmp_path / 'r'}",
                  env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    one_clear_error(p, "cannot import teacher.target")


def test_pixel_student_on_a_state_only_generic_task(train_cli, tmp_path):
    p = train_cli("task=gym", "task.env_id=Pusher-v5", "student=cnn", f"hydra.run.dir={tmp_path / 'r'}")
    one_clear_error(p, "offers only its own observation")


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is not None, reason="OSMesa is installed here")
def test_missing_gl_backend_names_the_debian_package(train_cli, tmp_path):
    p = train_cli("task=reach", f"hydra.run.dir={tmp_path / 'r'}", env={"MUJOCO_GL": "osmesa"})
    one_clear_error(p, "MUJOCO_GL=osmesa", "apt-get install -y libosmesa6")


def test_missing_and_corrupt_dataset(train_cli, tmp_path):
    p = train_cli(
        "task=reach", "algo=bc", f"algo.dataset={tmp_path / 'missing.hdf5'}", f"hydra.run.dir={tmp_path / 'r'}"
    )
    one_clear_error(p, "does not exist")
    bad = tmp_path / "corrupt.hdf5"
    bad.write_bytes(b"not an hdf5 file at all" * 100)
    p = train_cli("task=reach", "algo=bc", f"algo.dataset={bad}", f"hydra.run.dir={tmp_path / 'r2'}")
    one_clear_error(p, "not a readable HDF5 file")
    assert bad.read_bytes().startswith(b"not an hdf5")  # the user's file is left as it was


def test_dataset_with_wrong_action_dim(train_cli, tmp_path):
    path = tmp_path / "wrong.hdf5"
    with h5py.File(path, "w") as f:
        g = f.create_group("data/demo_0")
        f["data"].attrs["total"] = 5
        f["data"].attrs["env_args"] = "{}"
        g.attrs["num_samples"] = 5
        g["obs/state"] = __import__("numpy").zeros((5, 28), "float32")
        g["actions"] = __import__("numpy").zeros((5, 9), "float32")
    p = train_cli("task=reach", "algo=bc", f"algo.dataset={path}", f"hydra.run.dir={tmp_path / 'r'}")
    one_clear_error(p, "the task needs")
