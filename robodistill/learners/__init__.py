"""Learners, one readable file each; `LEARNERS[name]` is what `algo=name` selects."""

from __future__ import annotations

from robodistill.learners.base import Learner
from robodistill.learners.bc import BCLearner
from robodistill.learners.dagger import DAggerLearner
from robodistill.learners.rl import RLLearner
from robodistill.learners.rpd import RPDLearner

LEARNERS: dict[str, type[Learner]] = {
    "bc": BCLearner,
    "dagger": DAggerLearner,
    "ppo": RLLearner,
    "sac": RLLearner,
    "rpd": RPDLearner,
}

__all__ = ["LEARNERS", "BCLearner", "DAggerLearner", "Learner", "RLLearner", "RPDLearner"]
