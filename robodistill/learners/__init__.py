"""Learners, one readable file each; `LEARNERS[name]` is what `algo=name` selects. Each is built as
`cls(cfg, comps, services)` and run with `fit()` (the `Learner` protocol in learners/services.py)."""

from __future__ import annotations

from robodistill.learners.bc import BCLearner
from robodistill.learners.consistency import ConsistencyLearner
from robodistill.learners.dagger import DAggerLearner
from robodistill.learners.diffusion import DiffusionLearner
from robodistill.learners.opd import OPDLearner
from robodistill.learners.rl import RLLearner
from robodistill.learners.rpd import RPDLearner
from robodistill.learners.services import Learner
from robodistill.learners.sft import SFTLearner

LEARNERS: dict[str, type[Learner]] = {
    "bc": BCLearner,
    "dagger": DAggerLearner,
    "ppo": RLLearner,
    "sac": RLLearner,
    "rpd": RPDLearner,
    "diffusion": DiffusionLearner,
    "consistency": ConsistencyLearner,
    "sft": SFTLearner,
    "opd": OPDLearner,
}

__all__ = [
    "LEARNERS",
    "BCLearner",
    "ConsistencyLearner",
    "DAggerLearner",
    "DiffusionLearner",
    "Learner",
    "OPDLearner",
    "RLLearner",
    "RPDLearner",
    "SFTLearner",
]
