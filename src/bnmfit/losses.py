"""Losses between simulated and empirical observables, and the configured loss.

Each loss compares one observable of the simulation with the same observable of the data and
returns a scalar; the reductions are explicit (upper triangle with k = 1 for matrices).
:data:`LOSSES` names them (the terms); :func:`combined` weighs named terms into one
objective.

The configured loss is a :class:`LossSpec`: weighted terms plus a constant ``offset`` (added
back to every loss value written to results). :func:`loss_spec` reads it from a config's
``loss`` section; :func:`parse_loss` is the small parser of loss expressions such as
``0.5 * fcd_ks(fcd, empirical_fcd) + rmse(fc, empirical_fc)`` (a tokenizer and a
recursive-descent parser over a fixed table of functions; nothing is ever evaluated by
Python).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from bnmfit.errors import ConfigError, unknown_choice
from bnmfit.observables import unresolved, upper

__all__ = [
    "LOSSES",
    "LossSpec",
    "Observed",
    "check_terms",
    "combined",
    "combined_debiased",
    "debiased_fc_terms",
    "fc_residual_blocks",
    "fc_corr",
    "fc_rmse",
    "fcd_ks",
    "ks_distance",
    "loss_spec",
    "parse_loss",
    "pearson",
]


class Observed(NamedTuple):
    """The observables a loss can compare: FC (N, N) and optionally FCD (W, W)."""

    fc: Array
    fcd: Array | None = None


def pearson(a: Array, b: Array) -> Array:
    """Pearson correlation of two vectors; NaN when either is numerically constant
    (:func:`bnmfit.observables.unresolved`)."""
    flat = unresolved(a) | unresolved(b)
    a = a - a.mean()
    b = b - b.mean()
    return jnp.where(flat, jnp.nan, (a * b).sum() / jnp.sqrt((a * a).sum() * (b * b).sum()))


def fc_corr(sim: Array, emp: Array) -> Array:
    """1 − Pearson r between the upper triangles (k = 1) of two FC matrices; in [0, 2]."""
    return 1.0 - pearson(upper(sim), upper(emp))


def fc_rmse(sim: Array, emp: Array) -> Array:
    """Root mean square difference of the upper triangles (k = 1) of two FC matrices."""
    d = upper(sim) - upper(emp)
    return jnp.sqrt((d * d).mean())


def ks_distance(a: Array, b: Array, smooth: float | None = None) -> Array:
    """Kolmogorov–Smirnov distance between the value distributions of two samples.

    Exact (``smooth=None``): the largest gap between the empirical CDFs, evaluated at every
    sample point. Smooth: each step of the CDFs becomes a logistic of width ``smooth``, so
    the distance (then a soft maximum) has useful gradients. The smooth CDFs are compared
    midway between consecutive pooled sample values, where the exact CDFs are constant (at a
    sample point itself a logistic step is only half-way up), so the smooth distance tends
    to the exact one as ``smooth`` → 0.
    """
    grid = jnp.concatenate([a, b])
    if smooth is None:
        cdf_a = jnp.searchsorted(jnp.sort(a), grid, side="right").astype(grid.dtype) / a.size
        cdf_b = jnp.searchsorted(jnp.sort(b), grid, side="right").astype(grid.dtype) / b.size
        return jnp.abs(cdf_a - cdf_b).max()
    pooled = jnp.sort(grid)
    grid = 0.5 * (pooled[1:] + pooled[:-1])
    cdf_a = jax.nn.sigmoid((grid[:, None] - a[None, :]) / smooth).mean(axis=1)
    cdf_b = jax.nn.sigmoid((grid[:, None] - b[None, :]) / smooth).mean(axis=1)
    gap = jnp.abs(cdf_a - cdf_b)
    return smooth * jax.nn.logsumexp(gap / smooth) - smooth * jnp.log(gap.size)


def fcd_ks(sim: Array, emp: Array, smooth: float | None = None) -> Array:
    """KS distance between the FCD value distributions (upper triangles, k = 1)."""
    return ks_distance(upper(sim), upper(emp), smooth)


LOSSES = {
    "fc_corr": lambda s, e, smooth=None: fc_corr(s.fc, e.fc),
    "fc_rmse": lambda s, e, smooth=None: fc_rmse(s.fc, e.fc),
    "fcd_ks": lambda s, e, smooth=None: fcd_ks(s.fcd, e.fcd, smooth),
}


def combined(
    weights: Mapping[str, float], sim: Observed, emp: Observed, smooth: float | None = None
) -> Array:
    """Σ weight · loss over named terms of :data:`LOSSES` (``smooth`` for the KS terms)."""
    check_terms(weights)
    return sum(w * LOSSES[name](sim, emp, smooth) for name, w in weights.items())


#: the loss terms of FC alone (:func:`debiased_fc_terms` estimates them; FCDs do not average)
FC_TERMS: tuple[str, ...] = ("fc_corr", "fc_rmse")


def debiased_fc_terms(samples: Array, emp: Array) -> dict[str, Array]:
    """fc_corr and fc_rmse of the *expected* simulated FC, estimated from the FCs of K ≥ 2
    independent simulations without the bias their noise gives the loss of their mean.

    ``samples``: (K, N, N) FCs of one simulation each; ``emp``: (N, N). With x_k their upper
    triangles (M entries), m their mean and d_k = x_k − m, the mean's noise adds
    Σ_k ‖d_k‖²/(M K(K − 1)) to its mean square difference from ``emp`` and
    Σ_k var(d_k)/(K(K − 1)) to its variance across entries (var: over the M entries), in
    expectation; both are subtracted, so RMSE² and the variance in Pearson r's denominator
    are those of the expected FC (r's covariance is linear in m: unbiased as it is). The loss
    of the plain mean prefers parameters whose FC is less noisy (closer to criticality:
    stronger, steadier correlations); this one does not. The estimates are floored
    (1 − r ≥ 0, RMSE² ≥ 0, variance ≥ 1 % of the mean's) where the noise estimate exceeds
    the signal."""
    x = upper(samples)
    t = upper(emp)
    k = x.shape[0]
    m = x.mean(axis=0)
    d = x - m
    var_m = m.var()
    var = jnp.maximum(var_m - d.var(axis=1).sum() / (k * (k - 1)), 1e-2 * var_m)
    msd = ((m - t) ** 2).mean() - (d * d).mean(axis=1).sum() / (k * (k - 1))
    tc = t - t.mean()
    r = ((m - m.mean()) * tc).mean() / jnp.sqrt(var * (tc * tc).mean())
    flat = unresolved(m) | unresolved(t)
    return {
        "fc_corr": jnp.where(flat, jnp.nan, jnp.maximum(1.0 - r, 0.0)),
        "fc_rmse": jnp.sqrt(jnp.maximum(msd, 1e-12)),
    }


def fc_residual_blocks(weights: Mapping[str, float], sim: Array, emp: Array) -> dict[str, Array]:
    """One residual vector per FC term of ``weights`` (weights ≥ 0), of FC upper triangles
    ``sim`` against ``emp`` (M entries each), whose squared norms are weight · term:

    * fc_corr: sqrt(w / 2M) · (z(sim) − z(emp)), z the z-scored triangles. With ‖z‖² = M
      and z(a)·z(b) = M·r, ‖z(a) − z(b)‖² = 2M(1 − r).
    * fc_rmse: sqrt(w / (M·RMSE)) · (sim − emp): ‖·‖² = w·‖d‖²/(M·RMSE) = w·RMSE. (The
      plain difference / sqrt(M) would be RMSE², whose optimum differs from the loss's
      whenever fc_rmse is weighed against fc_corr.)

    So the squared norm of all blocks is the loss Σ weight · term: what Gauss–Newton and
    Levenberg–Marquardt fit (:mod:`bnmfit.fit`) and the curvature the standard errors use
    (:mod:`bnmfit.uncertainty`)."""
    m = emp.size

    def z(x):
        return (x - x.mean()) / x.std()

    out = {}
    for name, w in weights.items():
        if name == "fc_corr":
            out[name] = math.sqrt(w / (2.0 * m)) * (z(sim) - z(emp))
        elif name == "fc_rmse":
            d = sim - emp
            out[name] = math.sqrt(w) * d / jnp.sqrt(m * jnp.sqrt(jnp.mean(d * d)))
        else:
            raise ConfigError(
                f"the loss term {name} has no residual form: use only {', '.join(FC_TERMS)}"
            )
    return out


def combined_debiased(weights: Mapping[str, float], samples: Array, emp: Observed) -> Array:
    """Σ weight · term of :func:`debiased_fc_terms` (``samples``: (K, N, N) FCs, K ≥ 2);
    ConfigError for a term it does not estimate (FCD)."""
    check_terms(weights)
    for name in sorted(set(weights) - set(FC_TERMS)):
        raise ConfigError(
            f"the loss term {name} has no noise-debiased form (FCDs do not average): use "
            "noise_average 'loss'"
        )
    terms = debiased_fc_terms(samples, emp.fc)
    return sum(w * terms[name] for name, w in weights.items())


def check_terms(names) -> None:
    """ConfigError naming the first of ``names`` that is not a term of :data:`LOSSES`."""
    for name in sorted(set(names) - set(LOSSES)):
        raise ConfigError(unknown_choice("loss", name, LOSSES))


# =========================================================================== the configured loss


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A loss as named terms of :data:`LOSSES` plus a constant offset.

    The optimised objective is ``Σ weight · term``; ``offset`` is added back to every loss
    value written to results, so they equal the configured expression.
    """

    terms: tuple[tuple[str, float], ...]
    offset: float = 0.0
    expression: str | None = None

    def describe(self) -> str:
        parts = [f"{w:g}·{n}" for n, w in self.terms]
        if self.offset:
            parts.append(f"{self.offset:g}")
        return " + ".join(parts)


# function name of a loss expression → (its arguments (either order), the linear form over
# the terms of LOSSES it stands for)
_FC = ("fc", "empirical_fc")
_FCD = ("fcd", "empirical_fcd")
_FUNCTIONS: dict[str, tuple[tuple[str, str], float, dict[str, float]]] = {
    "correlation": (_FC, 1.0, {"fc_corr": -1.0}),
    "corr": (_FC, 1.0, {"fc_corr": -1.0}),
    "pearson": (_FC, 1.0, {"fc_corr": -1.0}),
    "fc_corr": (_FC, 0.0, {"fc_corr": 1.0}),
    "rmse": (_FC, 0.0, {"fc_rmse": 1.0}),
    "fc_rmse": (_FC, 0.0, {"fc_rmse": 1.0}),
    "fcd_ks": (_FCD, 0.0, {"fcd_ks": 1.0}),
    "ks": (_FCD, 0.0, {"fcd_ks": 1.0}),
}
_OBSERVABLES = ("fc", "empirical_fc", "fcd", "empirical_fcd")
_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>[-+*/(),]))"
)


@dataclasses.dataclass
class _Lin:
    const: float
    coef: dict[str, float]

    @property
    def is_const(self) -> bool:
        return not any(self.coef.values())

    def scale(self, s: float) -> _Lin:
        return _Lin(self.const * s, {k: v * s for k, v in self.coef.items()})

    def add(self, other: _Lin, sign: float = 1.0) -> _Lin:
        coef = dict(self.coef)
        for k, v in other.coef.items():
            coef[k] = coef.get(k, 0.0) + sign * v
        return _Lin(self.const + sign * other.const, coef)


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ;
    unary := ('+'|'-') unary | NUMBER | NAME '(' NAME ',' NAME ')' | '(' expr ')'"""

    def __init__(self, text: str, where: str):
        self.text, self.where = text, where
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        text_s = text.rstrip()
        while pos < len(text_s):
            m = _TOKEN.match(text_s, pos)
            if m is None or m.end() == pos:
                bad = text_s[pos:].lstrip()[:1]
                col = len(text_s) - len(text_s[pos:].lstrip()) + 1
                self.fail(f"unexpected character {bad!r} at column {col}")
            kind = m.lastgroup
            self.toks.append((kind, m.group(kind), m.start(kind) + 1))
            pos = m.end()
        self.i = 0

    def fail(self, msg: str):
        raise ConfigError(f"{self.where}: {msg} in {self.text!r}")

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "", len(self.text) + 1)

    def take(self, value: str | None = None, kind: str | None = None):
        tok = self.peek()
        if (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            want = repr(value) if value else kind
            got = "the end" if tok[0] == "end" else repr(tok[1])
            self.fail(f"expected {want} at column {tok[2]}, got {got}")
        self.i += 1
        return tok

    def parse(self) -> _Lin:
        if not self.toks:
            self.fail("the loss expression is empty")
        out = self.expr()
        if self.peek()[0] != "end":
            tok = self.peek()
            self.fail(f"unexpected {tok[1]!r} at column {tok[2]}")
        return out

    def expr(self) -> _Lin:
        out = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            out = out.add(self.term(), 1.0 if op == "+" else -1.0)
        return out

    def term(self) -> _Lin:
        out = self.unary()
        while self.peek()[1] in ("*", "/"):
            _, op, col = self.take()
            rhs = self.unary()
            if op == "*":
                if out.is_const:
                    out = rhs.scale(out.const)
                elif rhs.is_const:
                    out = out.scale(rhs.const)
                else:
                    self.fail(
                        f"product of two loss terms at column {col}: the loss must be a "
                        "linear combination (number * term)"
                    )
            else:
                if not rhs.is_const:
                    self.fail(f"division by a loss term at column {col}: divide by numbers only")
                if rhs.const == 0:
                    self.fail(f"division by zero at column {col}")
                out = out.scale(1.0 / rhs.const)
        return out

    def unary(self) -> _Lin:
        kind, value, col = self.peek()
        if value in ("+", "-"):
            self.take()
            inner = self.unary()
            return inner if value == "+" else inner.scale(-1.0)
        if kind == "num":
            self.take()
            return _Lin(float(value), {})
        if value == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        if kind == "name":
            return self.call()
        got = "the end" if kind == "end" else repr(value)
        self.fail(f"expected a number, a function or '(' at column {col}, got {got}")

    def call(self) -> _Lin:
        _, name, col = self.take(kind="name")
        if name in _OBSERVABLES:
            self.fail(
                f"the observable {name!r} at column {col} must be an argument of a function: "
                f"{', '.join(_FUNCTIONS)}"
            )
        if name not in _FUNCTIONS:
            self.fail(unknown_choice("function", name, _FUNCTIONS, f" at column {col}"))
        self.take("(")
        args = []
        while True:
            _, arg, acol = self.take(kind="name")
            if arg not in _OBSERVABLES:
                self.fail(unknown_choice("observable", arg, _OBSERVABLES, f" at column {acol}"))
            args.append(arg)
            if self.peek()[1] == ",":
                self.take(",")
                continue
            break
        self.take(")")
        want, const, coef = _FUNCTIONS[name]
        if len(args) != 2 or set(args) != set(want):
            self.fail(
                f"{name}() at column {col} compares {' and '.join(want)}, got "
                f"{', '.join(args)}; write {name}({', '.join(want)})"
            )
        return _Lin(const, dict(coef))


def parse_loss(expression: str, *, where: str = "loss.expression") -> LossSpec:
    """Parse a loss expression into named terms with weights and a constant offset.

    ``correlation(fc, empirical_fc)`` is 1 − fc_corr, so ``1 - correlation(fc, empirical_fc)``
    is exactly the term fc_corr; ``rmse(fc, empirical_fc)`` is fc_rmse; ``fcd_ks(fcd,
    empirical_fcd)`` is fcd_ks. Numbers, + − * /, unary minus and parentheses combine them;
    the result must be linear in the terms with non-negative weights (a loss is minimised).

    Raises:
        ConfigError: a syntax error (with its column), an unknown function or observable,
            a product of two terms, a negative net weight, or no term at all.
    """
    if not isinstance(expression, str):
        raise ConfigError(f"{where}: expected a string, got {expression!r}")
    lin = _Parser(expression, where).parse()
    terms = []
    for name in LOSSES:
        w = lin.coef.get(name, 0.0)
        if abs(w) < 1e-12:
            continue
        if w < 0:
            fix = {"fc_corr": "1 - correlation(fc, empirical_fc)"}.get(name, f"+{name}(...)")
            raise ConfigError(
                f"{where}: {expression!r} gives the term {name} the weight {w:g}; a loss is "
                f"minimised, so every term needs a weight >= 0 (e.g. write {fix})"
            )
        terms.append((name, float(w)))
    if not terms:
        raise ConfigError(
            f"{where}: {expression!r} has no loss term (it is the constant "
            f"{lin.const:g}); use correlation, rmse or fcd_ks"
        )
    return LossSpec(tuple(terms), float(lin.const), expression)


def loss_spec(config: Mapping[str, Any], *, where: str = "config") -> LossSpec:
    """The loss of a validated config: its expression, its terms, or fc_corr."""
    loss = config.get("loss") or {}
    expr, terms = loss.get("expression"), loss.get("terms")
    if expr is not None and terms is not None:
        raise ConfigError(f"{where}: loss has both expression and terms; give one of them")
    if expr is not None:
        return parse_loss(expr, where=f"{where}: loss.expression")
    if terms is not None:
        kept = tuple((k, float(v)) for k, v in terms.items() if v)
        if not kept:
            raise ConfigError(f"{where}: loss.terms are all zero; give a positive weight")
        return LossSpec(kept)
    return LossSpec((("fc_corr", 1.0),))
