"""Child-process entry point: ``python -m tests.benchmarks._case MODULE FUNC JSON_KWARGS``.

Runs one measurement in a fresh interpreter (JAX configured by the parent's environment) and
prints its result as one ``BENCH_RESULT {json}`` line, with this process's peak RSS.
"""

import importlib
import json
import os
import sys
import time


def main() -> None:
    module, func, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    t0 = time.perf_counter()
    import jax  # noqa: F401  (configured from the environment before anything else)

    from tests.benchmarks import common

    baseline = common.rss_mb()
    load_start = os.getloadavg()[0]
    result = getattr(importlib.import_module(module), func)(**kwargs)
    result["loadavg_start_end"] = [load_start, os.getloadavg()[0]]
    result.setdefault("peak_rss_mb", common.peak_rss_mb())
    result.setdefault("rss_after_import_mb", baseline)
    result["child_wall_s"] = time.perf_counter() - t0
    result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    print("BENCH_RESULT " + json.dumps(result, default=float), flush=True)


if __name__ == "__main__":
    main()
