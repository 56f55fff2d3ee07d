"""Shared contract of the feature groups.

Every group module declares ``GROUP`` (its name), ``FEATURES`` (base feature name -> meaning and unit,
without band suffix) and ``PER_BAND`` (True: the orchestrator appends ``_1`` for g and ``_2`` for r).
A group's compute function returns a dict {base name: float or Missing}. A feature that cannot be
computed is ``Missing(reason)``, never 0 or -999; the orchestrator stores it as NaN and counts the reason.
"""
from dataclasses import dataclass

import numpy as np

TOO_FEW_POINTS = "too_few_points"
FIT_FAILED = "fit_did_not_converge"
NO_WISE_MATCH = "no_allwise_match"
NO_PERIOD = "no_period"
NO_DATA = "no_data"
NOT_FINITE = "not_finite"


@dataclass(frozen=True)
class Missing:
    reason: str

    def __float__(self):
        return float("nan")


def all_missing(names, reason):
    """Every feature of ``names`` missing for the same reason."""
    missing = Missing(reason)
    return {name: missing for name in names}


def value_or_missing(value, reason=NOT_FINITE):
    """A finite float, or Missing(reason)."""
    value = float(value)
    return value if np.isfinite(value) else Missing(reason)
