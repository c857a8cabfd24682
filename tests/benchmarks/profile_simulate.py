"""Where bnmfit's simulate spends its time: W1's forward (to BOLD), one simulation, in float32
and float64 (--quick: float32 only).

Each row changes one thing against the default and times the jitted forward; the differences
attribute the time to noise generation, the second Heun stage, the Balloon–Windkessel update and
loop unrolling. One child process per precision, so its rows are comparable with one another.

    python -m tests.benchmarks.profile_simulate [--quick] [--out DIR] [--repeats N]
"""

from __future__ import annotations

from tests.benchmarks import common
from tests.benchmarks.w1_forward import DT, N_TR

NAME = "profile_simulate"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "Profile — bnmfit simulate, W1 forward to BOLD, one simulation"


class _CheapBold:
    """A one-multiply-add stand-in for Balloon–Windkessel (keeps the output dependent on S)."""

    def initial_state(self, n, dtype):
        import jax.numpy as jnp

        return jnp.zeros((4, n), dtype)

    def step(self, h, z, dt_s):
        return h + dt_s * (z - h)

    def signal(self, h):
        return h[0]


def case_profile(repeats: int, unrolls: list[int], batch: int = 64, dtype: str = "float32") -> dict:
    import dataclasses
    import importlib

    import jax
    import jax.numpy as jnp

    from bnmfit.bold import BalloonWindkessel

    sim = importlib.import_module("bnmfit.simulate")  # the module, not the function

    subject = common.load_subject()
    problem = common.bnmfit_problem(subject, dtype, dt=DT, n_tr=N_TR)
    spec0 = problem.spec
    n_steps = spec0.n_tr * spec0.steps_per_tr
    key = jax.random.key(0)

    def forward(spec=spec0, bold=None):
        def f(key, G=common.G0):
            return sim.simulate(
                problem.model, problem.weights, key, spec, G=G, sigma=common.SIGMA, bold=bold
            ).bold

        return f

    def batched(f):  # one key, a batch of G values: the W4 situation on one device
        return lambda key, G: jax.vmap(lambda g: f(key, g))(G)

    def no_rng(f):  # traced with simulate's normals replaced by zeros
        def g(*args):
            original = sim._standard_normal
            sim._standard_normal = lambda k, shape: jnp.zeros(shape, jnp.float32)
            try:
                return f(*args)
            finally:
                sim._standard_normal = original

        return g

    def rng_only(key):  # the same normals, drawn per TR block (in float32) as simulate does
        keys = jax.random.split(key, spec0.n_tr)

        def draw(c, k):
            xi = sim._standard_normal(k, (spec0.steps_per_tr, 1, subject.n))
            return c + xi.astype(dtype).sum(), None

        return jax.lax.scan(draw, jnp.zeros((), dtype), keys)[0]

    bw = BalloonWindkessel()

    def bw_alone(z):  # the Balloon–Windkessel Euler steps alone, driven by a stored S
        def step(h, zt):
            return bw.step(h, zt, DT / 1000.0), None

        return bw.signal(jax.lax.scan(step, bw.initial_state(subject.n, dtype), z)[0])

    euler = dataclasses.replace(spec0, integrator="euler")
    single = {
        "default": (forward(), (key,)),
        "no RNG (zeros for ξ)": (no_rng(forward()), (key,)),
        "RNG alone (per-TR blocks)": (rng_only, (key,)),
        "Euler (one stage)": (forward(euler), (key,)),
        "Heun, coupling per stage": (
            forward(dataclasses.replace(spec0, heun_coupling="per_stage")),
            (key,),
        ),
        "cheap BOLD stand-in": (forward(bold=_CheapBold()), (key,)),
        "Balloon–Windkessel alone": (
            bw_alone,
            (jax.random.uniform(key, (n_steps, subject.n), dtype),),
        ),
    }
    for u in unrolls:
        if u != spec0.unroll:
            single[f"unroll={u}"] = (forward(dataclasses.replace(spec0, unroll=u)), (key,))
    Gs = jnp.linspace(0.5, 1.0, batch, dtype=dtype)
    many = {
        f"default, vmap {batch}": (batched(forward()), (key, Gs)),
        f"no RNG, vmap {batch}": (batched(no_rng(forward())), (key, Gs)),
        f"Euler, vmap {batch}": (batched(forward(euler)), (key, Gs)),
        f"cheap BOLD, vmap {batch}": (batched(forward(bold=_CheapBold())), (key, Gs)),
    }
    rows = {}
    for group, sims in ((single, 1), (many, batch)):
        calls, compile_s = {}, {}
        for name, (fn, args) in group.items():
            compiled, compile_s[name] = common.compile_aot(jax.jit(fn), *args)
            calls[name] = (lambda c, a: lambda i: c(*a))(compiled, args)
        timed = common.paired_runs(calls, repeats)  # round robin over all variants
        for name in group:
            r = {**timed[name], "compile_s": compile_s[name], "sims": sims}
            r["per_step_us"] = r["median_s"] / n_steps / sims * 1e6
            r["per_step_us_min"] = r["min_s"] / n_steps / sims * 1e6
            rows[name] = r
    return {
        "rows": rows,
        "n_steps": n_steps,
        "default_unroll": spec0.unroll,
        "checkpoint": spec0.checkpoint,
        "batch": batch,
    }


def run(args) -> dict:
    repeats = args.repeats or (3 if args.quick else 5)
    rows, cases = [], {}
    for dtype in common.precisions(args.quick):
        res = cases[f"profile/{dtype}"] = common.run_case(
            MODULE,
            "case_profile",
            {
                "repeats": repeats,
                "unrolls": [1, 2, 4],
                "batch": 16 if args.quick else 32,
                "dtype": dtype,
            },
            x64=True,
            timeout_s=900,
        )
        if res.get("error"):
            rows.append(common.row("profile", "bnmfit", dtype, "all", res))
            continue
        base = {
            1: res["rows"]["default"]["median_s"],
            res["batch"]: res["rows"][f"default, vmap {res['batch']}"]["median_s"],
        }
        for name, r in res["rows"].items():
            label = name if name != "default" else f"default (unroll={res['default_unroll']})"
            per = "µs/step" if r["sims"] == 1 else "µs/step/sim"
            rows.append(
                common.row(
                    "profile",
                    "bnmfit",
                    dtype,
                    label,
                    {**r, "peak_rss_mb": None},
                    f"{r['per_step_us']:.2f} {per}; "
                    f"{100 * r['median_s'] / base[r['sims']]:.0f}% of default",
                )
            )
    notes = [
        "Forward to BOLD only (no FC/loss). All variants of a group are compiled first, then "
        "run round-robin (one run of each per round) so that the machine's load hits them "
        "alike; the vmap group is one device, one key, a batch of G values.",
        "'no RNG' patches simulate's normals to zeros while tracing: default − no RNG = the "
        "cost of drawing ξ inside the loop; 'RNG alone' draws the same normals with nothing "
        "else. The default couples once per step (as tvboptim's default); 'coupling per stage' "
        "adds the second mat-vec at the predictor. default − Euler ≈ the second Heun stage "
        "(vector field + clip); 'cheap BOLD' swaps Balloon–Windkessel for one multiply-add in "
        "the loop; "
        "'Balloon–Windkessel alone' scans only its Euler steps.",
    ]
    return common.report(NAME, TITLE, rows, cases, args, notes)


def main(argv=None) -> dict:
    return run(common.parser(__doc__.splitlines()[0]).parse_args(argv))


if __name__ == "__main__":
    main()
