"""Child-process entry point: ``python -m tests.benchmarks._case [--serve] MODULE FUNC KWARGS``.

Runs one measurement in a fresh interpreter (JAX configured by the parent's environment;
KWARGS as JSON) and prints its result as one ``BENCH_RESULT {json}`` line, with this
process's peak RSS.

With ``--serve``, ``FUNC(**kwargs)`` returns ``(call, facts)``: the child prints
``BENCH_READY {facts}``, then runs ``call(i)`` once for every integer i read from stdin and
answers each with ``BENCH_TIME seconds``, so that a parent can alternate the runs of several
such children (:func:`tests.benchmarks.common.interleaved_runs`); at the end of stdin it prints
``BENCH_RESULT`` with its peak RSS.
"""

import importlib
import json
import os
import sys
import time


def main() -> None:
    serve = sys.argv[1] == "--serve"
    module, func, kwargs = sys.argv[1 + serve], sys.argv[2 + serve], json.loads(sys.argv[3 + serve])
    t0 = time.perf_counter()
    import jax  # configured from the environment before anything else

    from tests.benchmarks import common

    baseline = common.rss_mb()
    load_start = os.getloadavg()[0]
    result = getattr(importlib.import_module(module), func)(**kwargs)
    if serve:
        call, facts = result
        print("BENCH_READY " + json.dumps(facts, default=float), flush=True)
        for line in sys.stdin:
            t = time.perf_counter()
            jax.block_until_ready(call(int(line)))
            print(f"BENCH_TIME {time.perf_counter() - t!r}", flush=True)
        result = {}
    result["loadavg_start_end"] = [load_start, os.getloadavg()[0]]
    result.setdefault("peak_rss_mb", common.peak_rss_mb())
    result.setdefault("rss_after_import_mb", baseline)
    result["child_wall_s"] = time.perf_counter() - t0
    result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    print("BENCH_RESULT " + json.dumps(result, default=float), flush=True)


if __name__ == "__main__":
    main()
