"""Run the benchmarks (W1-W6 of BENCHMARKS.md, full-size and map recovery, bnmfit's profile,
CMA-ES against cuBNM when its venv exists): one table.

    python -m tests.benchmarks.run_all            # full: over 2 hours on 2 cores
    python -m tests.benchmarks.run_all --quick    # reduced: float32, small grids, few steps
    python -m tests.benchmarks.run_all --only w1,w4 --out DIR

Each workload also prints its own table and writes DIR/<name>.json; this writes
DIR/run_all.json and DIR/run_all.md with the combined table. Run on their own (each with
--help): w9_generalisation_peer (W9, against tvboptim), generalisation, cmaes_explore,
lm_speed and uncertainty_cost.
"""

from __future__ import annotations

import time

from tests.benchmarks import (
    common,
    cubnm_peer,
    map_recovery,
    profile_simulate,
    recovery,
    w1_forward,
    w2_delays,
    w3_gradient,
    w4_grid,
    w5_fit,
    w6_memory,
)

WORKLOADS = {
    "w1": w1_forward,
    "w2": w2_delays,
    "w3": w3_gradient,
    "w4": w4_grid,
    "w5": w5_fit,
    "w6": w6_memory,
    "recovery": recovery,
    "map_recovery": map_recovery,
    "profile": profile_simulate,
    "cubnm": cubnm_peer,
}


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated subset of {', '.join(WORKLOADS)} (default: all; "
        "the profile only without --quick)",
    )
    p.add_argument("--float64", action="store_true", help="W4 in float64 too")
    args = p.parse_args(argv)
    names = (
        args.only.split(",")
        if args.only
        else [n for n in WORKLOADS if not (args.quick and n == "profile")]
    )
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workload {', '.join(sorted(unknown))}: use {', '.join(WORKLOADS)}")
    start, rows, parts, timing = time.perf_counter(), [], {}, {}
    env = common.environment()
    for name in names:
        t = time.perf_counter()
        payload = WORKLOADS[name].run(args)
        timing[name] = time.perf_counter() - t
        parts[name] = payload
        rows += payload["rows"]
    total = time.perf_counter() - start
    env_end = common.environment()
    table = common.markdown(rows)
    dirty = ", src modified" if env["bnmfit_src_dirty"] else ""
    header = (
        f"bnmfit {env['bnmfit']} ({env['bnmfit_commit']}{dirty}) "
        f"vs tvboptim {env['tvboptim']}; jax {env['jax']}; {env['cpu']}, {env['cores']} cores; "
        f"load average {env['loadavg'][0]:.1f} at start, {env_end['loadavg'][0]:.1f} at end; "
        f"{'quick' if args.quick else 'full'} run, {total / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in timing.items())})."
    )
    print("\n## All benchmarks\n")
    print(header + "\n")
    print(table)
    print()
    for n in common.SETUP_NOTES:
        print(f"- {n}")
    md = "\n".join([header, "", table, ""] + [f"- {n}" for n in common.SETUP_NOTES]) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run_all.md").write_text(md)
    common.write_json(
        args.out,
        "run_all",
        {
            "environment": env,
            "environment_end": env_end,
            "quick": args.quick,
            "seconds": timing,
            "total_s": total,
            "rows": rows,
            "setup": common.SETUP_NOTES,
        },
    )
    return {"rows": rows, "total_s": total}


if __name__ == "__main__":
    main()
