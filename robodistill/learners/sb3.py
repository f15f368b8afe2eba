"""Stable-Baselines3 training plumbing for the RL learners (ppo, sac, rpd), called by each learner's `fit`: our
tasks as SB3 vector envs, the student's policy spec with its running observation normalisation, state_dict training
state, and `train_in_run`, which runs `model.learn` in the run (seeded evaluation, checkpoints, resume, SB3 .zip
models, learning curves).

The vector env hands the student only the observation keys it reads (a pixel student never sees the privileged
state), while `StudentView` keeps the teacher's view of every state the student acted on, so RPD can label a
whole rollout in one batched teacher call.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecMonitor

from policies.gaussian import GaussianConfig
from robodistill.config import to_dict
from robodistill.devices import resolve_device
from robodistill.errors import UserError
from robodistill.evaluation.curves import plot_learning_curves, steps_to_success
from robodistill.evaluation.rollouts import headline, score
from robodistill.learners.components import Components
from robodistill.learners.services import Services
from robodistill.observations import STATE_KEY, as_dict, view
from robodistill.progress import progress_bar
from robodistill.students import student_config
from robodistill.tasks import env_fns
from robodistill.teachers.sb3 import SB3Student, model_input


class StudentView(VecEnvWrapper):
    """Shows SB3 only the student's observation keys; records the teacher's view of each state acted on.

    With the single key "state" the student sees a Box (SB3's MlpPolicy), otherwise a Dict (MultiInputPolicy).
    """

    def __init__(self, venv: VecEnv, student_keys: Sequence[str], teacher_keys: Sequence[str] = ()):
        full = venv.observation_space
        spaces = dict(full.spaces) if isinstance(full, gym.spaces.Dict) else {STATE_KEY: full}
        missing = [k for k in [*student_keys, *teacher_keys] if k not in spaces]
        if missing:
            raise UserError(f"the task's observations have no {missing}; it offers {sorted(spaces)}")
        self.student_keys, self.teacher_keys = list(student_keys), list(teacher_keys)
        flat = self.student_keys == [STATE_KEY]
        space = spaces[STATE_KEY] if flat else gym.spaces.Dict({k: spaces[k] for k in self.student_keys})
        super().__init__(venv, observation_space=space)
        self._teacher_obs: dict[str, np.ndarray] | None = None
        self._recorded: list[dict[str, np.ndarray]] | None = None

    def _student(self, obs: Any) -> Any:
        return model_input(as_dict(obs), self.student_keys)

    def _seen(self, obs: Any) -> Any:
        if self.teacher_keys:
            self._teacher_obs = {k: np.array(v) for k, v in view(as_dict(obs), self.teacher_keys).items()}
        return self._student(obs)

    def start_recording(self) -> None:
        self._recorded = []

    def stop_recording(self) -> list[dict[str, np.ndarray]]:
        """The teacher's view of each state the student acted on since `start_recording`: one (N, ...) dict per step."""
        recorded, self._recorded = self._recorded or [], None
        return recorded

    def reset(self) -> Any:
        return self._seen(self.venv.reset())

    def step_async(self, actions: np.ndarray) -> None:
        if self._recorded is not None:
            self._recorded.append(self._teacher_obs)
        self.venv.step_async(actions)

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        for info in infos:  # SB3 bootstraps truncated episodes from the terminal observation: give it the student's
            if info.get("terminal_observation") is not None:
                info["terminal_observation"] = self._student(info["terminal_observation"])
        return self._seen(obs), rewards, dones, infos


class AbsorbingSuccess(gym.Wrapper):
    """For RL training: an episode that ends in success is worth staying in success for ever.

    Tasks end episodes on success with one step of the maximum reward. To a discounted RL learner, lingering next to
    the goal then earns more (near-maximal reward every step) than finishing; treating success as an absorbing state
    that keeps paying its reward, r / (1 - gamma), makes finishing (and finishing early) the better choice.
    Evaluation and the returns it reports use the task's own reward.
    """

    def __init__(self, env: gym.Env, gamma: float):
        super().__init__(env)
        self.scale = 1.0 / (1.0 - gamma)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated and info.get("success", False):
            reward = float(reward) * self.scale
        return obs, reward, terminated, truncated, info


def check_sb3_run(cfg: DictConfig) -> None:
    """An SB3 learner trains SB3's own Gaussian policy: no diffusion sampler, a `gaussian` student config, SB3's CNN."""
    if cfg.sampler.kind != "auto":
        raise UserError(
            f"sampler={cfg.sampler.kind} needs a diffusion-family policy, but algo={cfg.algo.name} trains an SB3 policy"
        )
    if cfg.student.kind != "gaussian":
        raise UserError(
            f"algo={cfg.algo.name} trains an SB3 Gaussian policy, but student={cfg.student.name} is a "
            f"{cfg.student.kind!r} policy: use student=mlp (state) or student=cnn (pixels)"
        )
    if cfg.student.obs_horizon != 1:
        raise UserError(
            f"algo={cfg.algo.name} trains an SB3 policy on one observation per step, not student.obs_horizon="
            f"{cfg.student.obs_horizon}: use student.obs_horizon=1, or algo=dagger / algo=bc for stacked frames"
        )
    if cfg.student.encoder != "cnn":  # a gaussian config has one
        raise UserError(
            f"algo={cfg.algo.name} trains SB3's own CNN on camera images, not student.encoder={cfg.student.encoder}: "
            "use student.encoder=cnn, or algo=dagger / algo=bc for another image encoder"
        )
    stop_at = cfg.algo.get("stop_at_success")
    if stop_at is not None and not (isinstance(stop_at, int | float) and 0 <= stop_at <= 1):
        raise UserError(f"algo.stop_at_success must be a success rate in [0, 1] or null, got {stop_at!r}")


def make_vec_env(cfg: DictConfig, comps: Components, teacher_keys: Sequence[str] = ()) -> tuple[VecEnv, StudentView]:
    """SB3 in-process vector env of the run's task, `algo.num_envs` wide (VecMonitor on top for episode stats), and
    its StudentView showing the student its `student.obs_keys` and recording `teacher_keys`."""
    a = cfg.algo
    fns = env_fns(comps.task, int(a.num_envs), comps.obs_mode)
    if a.absorbing_success:
        gamma = float(a.sb3.gamma)
        fns = [lambda f=f: AbsorbingSuccess(f(), gamma) for f in fns]
    student_view = StudentView(DummyVecEnv(fns), list(cfg.student.obs_keys), list(teacher_keys))
    return VecMonitor(student_view), student_view  # episode returns and lengths for SB3's rollout/* logs


class NormalizedFlatten(BaseFeaturesExtractor):
    """SB3 features extractor for state vectors: flatten and normalise by a running mean/std.

    The statistics are buffers of the policy, so a saved policy (state_dict or SB3 .zip) carries its normalisation;
    `RunCallback` updates them from each rollout. Task states mix metres and radians: unnormalised, the cm-scale
    object features that the task depends on are drowned out.
    """

    def __init__(self, observation_space: gym.spaces.Box, clip: float = 10.0):
        super().__init__(observation_space, get_flattened_obs_dim(observation_space))
        self.clip = clip
        self.register_buffer("mean", torch.zeros(self.features_dim))
        self.register_buffer("var", torch.ones(self.features_dim))
        self.register_buffer("count", torch.tensor(0.0))

    @torch.no_grad()
    def update(self, obs: np.ndarray) -> None:
        """Merge a batch of observations (..., D) into the running statistics (parallel Welford)."""
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.mean.device).reshape(-1, self.features_dim)
        n, mean, var = float(len(x)), x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = mean - self.mean
        self.var.copy_((self.var * self.count + var * n + delta**2 * self.count * n / total) / total)
        self.mean.add_(delta * n / total)
        self.count.fill_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.flatten(1).float()
        return ((x - self.mean) / torch.sqrt(self.var + 1e-8)).clamp(-self.clip, self.clip)


ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU, "gelu": torch.nn.GELU}


def policy_spec(student: GaussianConfig, normalize_obs: bool, extra: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """SB3 policy name and policy_kwargs from our student config (hidden sizes, image features) and `extra`
    (SB3 policy_kwargs from the algo config; `activation_fn` by name)."""
    kwargs: dict[str, Any] = {"net_arch": list(student.hidden), **extra}
    if isinstance(kwargs.get("activation_fn"), str):
        name = kwargs["activation_fn"]
        if name not in ACTIVATIONS:
            raise UserError(f"unknown activation_fn {name!r}; choose one of {', '.join(ACTIVATIONS)}")
        kwargs["activation_fn"] = ACTIVATIONS[name]
    if list(student.obs_keys) == [STATE_KEY]:
        return "MlpPolicy", {**kwargs, "features_extractor_class": NormalizedFlatten} if normalize_obs else kwargs
    kwargs["features_extractor_kwargs"] = {"cnn_output_dim": int(student.image_feature_dim)}
    return "MultiInputPolicy", kwargs


M = TypeVar("M", bound=BaseAlgorithm)


def make_model(algorithm: type[M], cfg: DictConfig, venv: VecEnv, **extra: Any) -> M:
    """`algorithm(policy, venv, **extra, **algo.sb3)` for the run's student (policy and policy_kwargs from
    `student.*` and `algo.policy_kwargs`), seeded with `seed`, on the run's `device`."""
    a = cfg.algo
    policy, policy_kwargs = policy_spec(student_config(cfg.student), bool(a.normalize_obs), to_dict(a.policy_kwargs))
    device = resolve_device(cfg.get("device"))
    kwargs = {**to_dict(a.sb3), "policy_kwargs": policy_kwargs, "seed": int(cfg.seed), "device": device, "verbose": 0}
    try:
        return algorithm(policy, venv, **extra, **kwargs)
    except TypeError as exc:
        raise UserError(f"algo.sb3 has an argument {a.name.upper()} does not take: {exc}") from exc


def training_state(model: BaseAlgorithm) -> dict[str, Any]:
    """Everything to continue training, as state_dicts and tensors: networks, optimizers, counters, entropy coef."""
    state: dict[str, Any] = {"sb3": model.get_parameters(), "num_timesteps": model.num_timesteps}
    state["n_updates"] = int(getattr(model, "_n_updates", 0))
    if getattr(model, "log_ent_coef", None) is not None:  # SAC's learned entropy coefficient
        state["log_ent_coef"] = model.log_ent_coef.detach().clone()
    return state


def load_training_state(model: BaseAlgorithm, state: dict[str, Any]) -> None:
    model.set_parameters(state["sb3"], exact_match=True, device=model.device)
    model.num_timesteps = int(state["num_timesteps"])
    model._n_updates = int(state["n_updates"])
    if "log_ent_coef" in state:
        with torch.no_grad():
            model.log_ent_coef.copy_(state["log_ent_coef"])


def save_model_zip(model: BaseAlgorithm, path: Path) -> None:
    """SB3's own .zip (for `PPO.load` and `teacher=sb3`), written atomically."""
    buf = io.BytesIO()
    model.save(buf)
    tmp = path.with_suffix(".zip.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


class RunCallback(BaseCallback):
    """SB3 callback that connects a model to our run: progress bar, seeded evaluation every `eval_every` env steps,
    `checkpoints/last.pt` at every rollout boundary (or every `checkpoint_every` steps), best model kept; training
    stops at the first evaluation whose success rate reaches `stop_at_success` (None: never).

    Everything runs at the start of a rollout, i.e. after the previous rollout has been trained on.
    """

    def __init__(
        self,
        total_timesteps: int,
        eval_every: int,
        evaluate: Callable[[int], dict[str, Any]],
        checkpoint: Callable[[str], None],
        checkpoint_every: int,
        after_update: Callable[[], None] | None,
        progress: bool,
        stop_at_success: float | None = None,
    ):
        super().__init__()
        self.stop_at_success, self.stopped = stop_at_success, False
        self.total, self.eval_every, self.checkpoint_every = total_timesteps, eval_every, checkpoint_every
        self._evaluate, self._checkpoint, self._after_update = evaluate, checkpoint, after_update
        self.progress = progress
        self.bar = None
        self.next_eval = self.next_ckpt = 0
        self.best = -float("inf")  # the best evaluation score so far (evaluation.rollouts.score)

    def _on_training_start(self) -> None:
        done = self.model.num_timesteps
        self.bar = progress_bar(total=self.total, initial=done, desc="train", unit="step", enabled=self.progress)
        self.next_eval = done + self.eval_every if self.eval_every > 0 else self.total + 1
        self.next_ckpt = done + max(self.checkpoint_every, 1)
        self.start = done

    def _on_rollout_start(self) -> None:
        # the previous rollout has been trained on: a consistent point to checkpoint and evaluate
        t = self.model.num_timesteps
        if t == self.start:
            return
        if self._after_update is not None:
            self._after_update()
        if t >= self.next_eval:
            self.next_eval = t + self.eval_every
            evaluation = self._evaluate(t)
            result = score(evaluation)
            if self.reached(evaluation.get("success_rate")):
                self.stopped = True  # the next step returns False: SB3 ends learn() there
            if result > self.best:
                self.best = result
                self._checkpoint("best")
        if t >= self.next_ckpt:
            self.next_ckpt = t + max(self.checkpoint_every, 1)
            self._checkpoint("last")

    def _on_rollout_end(self) -> None:
        extractor = getattr(self.model.policy, "features_extractor", None)
        if isinstance(extractor, NormalizedFlatten) and hasattr(self.model, "rollout_buffer"):
            buf = self.model.rollout_buffer
            extractor.update(buf.observations[: buf.pos if not buf.full else None])

    def reached(self, success_rate: float | None) -> bool:
        """Whether an evaluation's success rate ends training (`stop_at_success`)."""
        return self.stop_at_success is not None and success_rate is not None and success_rate >= self.stop_at_success

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.training_env.num_envs)
        return not self.stopped

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train_in_run(
    model: BaseAlgorithm,
    venv: VecEnv,
    services: Services,
    ckpt: dict[str, Any] | None,
    teacher_success: float | None = None,
    state: Callable[[], dict[str, Any]] = dict,
    after_update: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train `model` on `venv` up to `algo.total_timesteps` env steps in the run, then evaluate it; returns the
    summary (its headline: success_rate, or return_mean for a task without success; env_steps, teacher_success:
    the teacher's score on the same scale; steps_to_80).

    `ckpt` is a resumed run's checkpoint (`services.resume()`): training continues from its SB3 state and learning
    curve. Along the way: seeded evaluation every `algo.eval_every` env steps (the best model kept as
    checkpoints/best.pt and sb3/best_model.zip), checkpoints/last.pt at rollout boundaries with `state()` added, and
    `after_update()` after every update; at the end the final evaluation (videos, eval.json), sb3/final_model.zip and
    learning_curves.png with `teacher_success` as the line to cross.
    """
    cfg, a, run = services.cfg, services.cfg.algo, services.run
    total = int(a.total_timesteps)
    model.set_logger(configure(str(run.dir / "tb"), ["tensorboard"]))
    student = SB3Student(model, list(cfg.student.obs_keys))
    history: list[dict[str, float]] = []
    if ckpt is not None:
        load_training_state(model, ckpt["train_state"])
        history = ckpt["history"]
        venv.seed(int(cfg.seed) + model.num_timesteps)  # fresh episodes, not a replay of the first ones

    def checkpoint(name: str) -> None:
        services.checkpoint(
            name,
            {"train_state": training_state(model), "history": history, "teacher_success": teacher_success, **state()},
        )
        if name == "best":
            save_model_zip(model, run.sb3_model_path("best_model.zip"))

    def evaluate(step: int, final: bool = False) -> dict[str, Any]:
        """Evaluate and keep the point for the learning curve (and the teacher's line in TensorBoard)."""
        result = services.evaluate(student, step, final=final, episodes=None if final else int(a.eval_episodes))
        history.append(
            {"env_steps": step, "success_rate": result["success_rate"], "return_mean": result["return_mean"]}
        )
        if teacher_success is not None:  # on the scale of the student's headline: success rate, or mean return
            services.log(step, {f"eval/teacher_{next(iter(headline(result)))}": teacher_success})
        return result

    stop_at = a.get("stop_at_success")
    callback = RunCallback(
        total,
        int(a.eval_every),
        evaluate,
        checkpoint,
        int(a.checkpoint_every),
        after_update,
        services.progress,
        None if stop_at is None else float(stop_at),
    )
    if history:  # a resumed run: its curve so far
        callback.best = max(score(h) for h in history)
        callback.stopped = any(callback.reached(h["success_rate"]) for h in history)
    try:
        if total > model.num_timesteps and not callback.stopped:
            model.learn(total - model.num_timesteps, callback=callback, reset_num_timesteps=ckpt is None)
    finally:
        venv.close()
    if after_update is not None:
        after_update()
    checkpoint("last")

    final = evaluate(model.num_timesteps, final=True)
    save_model_zip(model, run.sb3_model_path("final_model.zip"))
    if score(final) >= callback.best:
        checkpoint("best")
    plot_learning_curves(history, run.dir / "learning_curves.png", teacher_success, tb=run.tb)
    return {
        **headline(final),
        "env_steps": model.num_timesteps,
        "teacher_success": teacher_success,
        "steps_to_80": steps_to_success(history, 0.8),
    }
