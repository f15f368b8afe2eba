"""teacher=router: each task's states go to that task's teacher, batched; a teacher without logits becomes token
targets by the soft-target rule SFT uses."""

import numpy as np
import torch

from policies.tokens import ActionTokenizer
from robodistill.data.collector import Collector, make_vector_env
from robodistill.learners.opd import teacher_logits
from robodistill.tasks import env_fns, make_env
from robodistill.teachers import make_teacher

TASKS = ("robodistill/Reach-v0", "robodistill/PushCube-v0")
EXPERTS = """
import numpy as np
CALLS = {"reach": [], "push": []}
def reach(obs):
    CALLS["reach"].append(obs.shape)
    return np.zeros((len(obs), 4), np.float32)
def push(obs):
    CALLS["push"].append(obs.shape)
    return np.zeros((len(obs), 4), np.float32)
"""


def test_the_router_sends_each_tasks_states_to_its_own_teacher_in_one_batched_call_per_step(user_module):
    user_module("two_experts", EXPERTS)
    import two_experts

    cfg = {
        "kind": "router",
        "routes": [
            {"task": TASKS[0], "teacher": {"kind": "callable", "target": "two_experts:reach"}},
            {"task": TASKS[1], "teacher": {"kind": "callable", "target": "two_experts:push"}},
        ],
    }
    steps, dims = {}, {}
    for task_id, name in zip(TASKS, ("reach", "push")):
        task = {"env_id": task_id}
        env = make_env(task, "state")
        dims[name] = env.observation_space.shape[0]
        teacher = make_teacher(cfg, env)
        env.close()
        venv = make_vector_env(env_fns(task, 3))
        stats = Collector(venv, teacher, None, seed=0).collect(3, beta=1.0, seed=0, progress=False)
        venv.close()
        steps[name] = stats.steps
    assert dims["reach"] != dims["push"]  # so the shapes tell which task's states a teacher saw
    for name in ("reach", "push"):
        calls = two_experts.CALLS[name]
        assert {shape[1] for shape in calls} == {dims[name]}  # only its own task's states
        assert sum(shape[0] for shape in calls) == steps[name]  # every labelled state once, in batched calls
        assert calls[0][0] == 3  # the first step: all three envs in one call


def test_a_teacher_without_logits_gives_the_soft_targets_sft_uses():
    class Student:  # what teacher_logits reads of a token student
        tokenizer, bins, label_sigma = ActionTokenizer(64), 64, 2.0

    actions = np.array([[-0.5, 0.0, 0.3, 0.99], [0.1, -0.9, 0.0, -1.0]], np.float32)
    logits = teacher_logits(Student(), {"actions": actions})
    assert logits.shape == (2, 4, 64) and logits.dtype == np.float32
    soft = ActionTokenizer(64).soft_targets(torch.as_tensor(actions), 2.0).numpy()
    np.testing.assert_allclose(np.exp(logits), np.maximum(soft, 1e-6), rtol=1e-5, atol=1e-7)
    decoded = ActionTokenizer(64).detokenize(torch.as_tensor(logits.argmax(-1))).numpy()
    np.testing.assert_allclose(decoded, actions, atol=1.0 / 64 + 1e-6)  # within a bin of the teacher's action
    Student.label_sigma = 0.0  # one-hot: hard tokens
    hard = teacher_logits(Student(), {"actions": actions})
    np.testing.assert_allclose(np.exp(hard).max(-1), 1.0, atol=1e-4)
    stored = np.random.default_rng(0).normal(size=(2, 4, 64)).astype(np.float32)
    assert teacher_logits(Student(), {"actions": actions, "logits": stored}) is stored  # a teacher's own logits
