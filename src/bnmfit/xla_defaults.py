"""XLA settings for bnmfit's simulations, applied by its scripts or by an explicit :func:`apply`.

On CPU, XLA's runtime runs every operation of a loop body as a separate task (a "thunk"). A
simulation step of an 80-region network is a few dozen of these tiny operations, and the fixed
cost of running each one is larger than the arithmetic. XLA can instead compile a *small*
while loop into one function (``xla_cpu_small_while_loop_byte_threshold``; default 256 bytes,
so no simulation loop qualifies). bnmfit raises the threshold so that its integration loops,
forward and reverse, are compiled whole: a single W1 simulation runs about 1.8× faster and its
gradient about 2.5× faster (batched simulations, which are limited by arithmetic, stay the
same).

On CPUs with 512-bit vector registers (AVX-512), XLA's compiler by default still prefers
256-bit vectors (early AVX-512 processors lowered their clock for the wide ones); bnmfit asks
for 512 (``xla_cpu_prefer_vector_width``), which halves the instructions of every elementwise
loop and dot: W1, its gradient and batched simulations run about 1.2× faster on the AMD EPYC
(Zen 4) machines of the benchmarks. Without AVX-512 the setting changes nothing.

Results agree with XLA's defaults to float rounding (the compiled code orders some arithmetic
differently), and a run is as reproducible as before.

Importing bnmfit changes no environment variable and no JAX setting. The workflow's scripts
apply these settings when their command starts (:class:`bnmfit.cli.Command`); in your own
program, call :func:`apply` before JAX runs its first computation (XLA reads ``XLA_FLAGS``
once, when JAX initialises its backend; a later call changes nothing for that process)::

    import bnmfit.xla_defaults
    bnmfit.xla_defaults.apply()   # first, before any jax computation
    import bnmfit, jax
    ...

Each flag is left alone when ``XLA_FLAGS`` already sets it (your own choice wins), and all
of them when ``BNMFIT_XLA_DEFAULTS=0``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

__all__ = ["FLAGS", "OPT_OUT", "SMALL_LOOP_BYTES", "SMALL_LOOP_OPTION", "apply"]

SMALL_LOOP_OPTION = "xla_cpu_small_while_loop_byte_threshold"
#: loops accessing fewer bytes than this are compiled as one function (XLA's default: 256)
SMALL_LOOP_BYTES = 1 << 30
#: XLA flag → bnmfit's value; each is added unless XLA_FLAGS already names the flag
FLAGS = {
    "xla_backend_extra_options": f"{SMALL_LOOP_OPTION}={SMALL_LOOP_BYTES}",
    "xla_cpu_prefer_vector_width": "512",
}
#: set to 0 to keep XLA's own defaults
OPT_OUT = "BNMFIT_XLA_DEFAULTS"


def apply(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Add bnmfit's XLA flags to ``environ["XLA_FLAGS"]``; True when any was added.

    Call it before JAX's first computation (see the module docstring); calling it again is
    harmless (a flag already present is not added twice)."""
    if environ.get(OPT_OUT, "1") == "0":
        return False
    flags = environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, value in FLAGS.items() if name not in flags]
    if added:
        environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    return bool(added)
