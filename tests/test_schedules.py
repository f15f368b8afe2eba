import pytest

from robodistill.learners.schedules import BetaSchedule


def test_linear_goes_from_start_to_end_over_horizon():
    s = BetaSchedule("linear", start=1.0, end=0.0, horizon=4)
    assert [s(i) for i in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_exponential_and_constant():
    assert BetaSchedule("exponential", start=1.0, end=0.1, decay=0.5)(2) == 0.25
    assert BetaSchedule("exponential", start=1.0, end=0.1, decay=0.5)(10) == 0.1
    assert BetaSchedule("constant", start=0.3)(7) == 0.3


def test_bad_schedule_is_rejected():
    with pytest.raises(ValueError, match="unknown beta schedule"):
        BetaSchedule("cosine")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BetaSchedule("constant", start=1.5)
