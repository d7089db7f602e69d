"""The one SWAG snapshot schedule, used by the SWAG method and the SWAG prior."""

from __future__ import annotations

import pytest

from sabma.posterior.swag import SWAGSchedule


def test_start_zero_is_half_the_budget_and_every_counts_from_the_first() -> None:
    assert [e for e in range(1, 21) if SWAGSchedule(0, 1, 20).collects(e)] == list(range(10, 21))
    assert [e for e in range(1, 11) if SWAGSchedule(3, 3, 10).collects(e)] == [3, 6, 9]
    assert SWAGSchedule(0, 1, 1).first == 1  # a one-epoch budget still collects its epoch


def test_the_prior_default_is_the_old_explicit_value() -> None:
    """prior.swag.start = 0 over the default 20 epochs starts where the old default 10 did."""
    from sabma.config import PriorConfig

    p = PriorConfig().swag
    assert SWAGSchedule(p.start, p.every, p.epochs).first == 10


@pytest.mark.parametrize(
    ("start", "every", "epochs"), [(-1, 1, 5), (6, 1, 5), (1, 0, 5), (0, 1, 0)]
)
def test_bad_schedules_are_refused_with_the_section_named(
    start: int, every: int, epochs: int
) -> None:
    with pytest.raises(ValueError, match=r"prior\.swag_start must lie in"):
        SWAGSchedule(start, every, epochs).check("prior")
