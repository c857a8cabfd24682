"""Scoring a fit: held-out noise and validation data from the same simulations, and the
flags that say what to know before trusting a fit."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from bnmfit.fit import FitResult, Stage, StageRecord
from bnmfit.losses import Observed
from bnmfit.params import FreeParameter
from bnmfit.scoring import fit_flags, score_heldout
from tests.test_explore import small_problem

FREE = (FreeParameter("G", 0.05, 1.0), FreeParameter("w", 0.05, 1.0, scope="regional"))
STAGE = Stage("s", FREE)


def _result(params, kept_start=False):
    record = StageRecord(
        name="s",
        optimizer="adam",
        history={},
        best_start=0,
        selection_loss=np.zeros(1),
        heldout={},
        params=params,
        wall_time=0.0,
        steps_run=1,
        n_rejected=0,
        kept_start=kept_start,
        acceptance={
            "judged_on": "validation",
            "start_loss": 0.4,
            "end_loss": 0.5,
            "p_value": 0.001,
            "draws": 8,
        },
    )
    return FitResult(params=params, stages=[record], seed=0, heldout_seeds=(1,))


def test_flags_name_what_happened():
    problem = small_problem()
    labels = [f"R{i}" for i in range(6)]
    start = {"G": 0.3, "w": 0.4}
    w = np.array([0.0505, 0.3, 0.4, 0.999, 0.5, 0.6])  # one region at each bound
    moved = _result({"G": np.asarray(0.35), "w": w})
    flags = fit_flags(moved, [STAGE], problem, start, labels=labels)
    codes = [f["code"] for f in flags]
    assert codes == ["at_bound", "at_bound"]
    assert "w in 1 of 6 regions (R0) at the lower bound 0.05 of stage 's'" in flags[0]["message"]
    assert "(R3) at the upper bound 1" in flags[1]["message"]
    # a fit that handed on its start, a rejected stage, a box edge, an unidentified number
    still = _result({"G": np.asarray(0.3), "w": np.full(6, 0.4)}, kept_start=True)
    flags = fit_flags(
        still, [STAGE], problem, start, box_edge=["best on G's upper face"], unidentified=["w"]
    )
    assert [f["code"] for f in flags] == [
        "box_edge",
        "stage_rejected",
        "not_moved",
        "not_identified",
    ]
    assert "stage 's' ended worse on the validation data (loss 0.4 → 0.5" in flags[1]["message"]
    # a start value the start does not give is the problem's (w: the model's default 0.6)
    assert (
        fit_flags(
            _result({"G": np.asarray(0.3), "w": np.full(6, 0.6)}), [STAGE], problem, {"G": 0.3}
        )[-1]["code"]
        == "not_moved"
    )
    assert [f["code"] for f in fit_flags(None, [], problem, start)] == ["not_moved"]


@pytest.mark.slow
def test_validation_metrics_come_from_the_same_simulations():
    """score_heldout scores the same simulations against the target and the validation
    data: with validation data equal to the target, both sets of metrics agree exactly."""
    problem = small_problem()
    params = {"G": 0.3, "w": 0.4}
    plain = score_heldout(problem, params, [1000, 1001])
    assert not any(k.startswith("validation") for k in plain.metrics)
    same = dataclasses.replace(problem, validation=problem.empirical)
    both = score_heldout(same, params, [1000, 1001], offset=1.0)
    for k in ("fc_r", "fc_rmse", "loss"):
        assert both.metrics[f"validation_{k}"] == pytest.approx(both.metrics[k], abs=1e-6)
    assert both.metrics["loss"] == pytest.approx(plain.metrics["loss"] + 1.0, abs=1e-6)
    n = problem.n_regions
    other = dataclasses.replace(problem, validation=Observed(jnp.eye(n) * 2 - problem.empirical.fc))
    flipped = score_heldout(other, params, [1000, 1001])
    assert flipped.metrics["validation_fc_r"] == pytest.approx(-flipped.metrics["fc_r"], abs=1e-5)
