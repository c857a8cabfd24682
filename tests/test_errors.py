"""bnmfit.errors: the one message for a value outside its allowed set."""

from __future__ import annotations

import pytest

from bnmfit.errors import close_match, unknown_choice


def test_close_match_prefers_a_case_difference_then_a_near_spelling():
    assert close_match("ADAM", ["adamw", "adam"]) == "adam"
    assert close_match("adamm", ["sgd", "adam"]) == "adam"
    assert close_match("rk4", ["heun", "euler"]) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("sampler", "grdi", ("grid", "zip")),
            "unknown sampler 'grdi' (did you mean 'grid'?): use one of grid, zip",
        ),
        (
            ("integrator", "rk4", ("heun", "euler")),
            "unknown integrator 'rk4': use one of heun, euler",
        ),
        (
            ("function", "corelation", ("correlation", "rmse"), " at column 5"),
            "unknown function 'corelation' at column 5 (did you mean 'correlation'?): use one of "
            "correlation, rmse",
        ),
    ],
)
def test_unknown_choice(args, message):
    assert unknown_choice(*args) == message
