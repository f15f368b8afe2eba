"""Learners, one readable file each; `LEARNERS[name]` is what `algo=name` selects."""

from __future__ import annotations

from robodistill.learners.base import Learner
from robodistill.learners.bc import BCLearner
from robodistill.learners.dagger import DAggerLearner

LEARNERS: dict[str, type[Learner]] = {"bc": BCLearner, "dagger": DAggerLearner}

__all__ = ["LEARNERS", "BCLearner", "DAggerLearner", "Learner"]
