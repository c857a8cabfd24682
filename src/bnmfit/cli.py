"""Shared pieces of the command-line scripts in ``scripts/``.

* :func:`command` — a ``click.command`` with ``-h/--help`` and bnmfit's error handling:
  a :class:`~bnmfit.errors.BnmfitError` (or an unreadable/unwritable file) becomes
  ``Error: <one line>`` on stderr and the exit code 1 (data error) or 2 (configuration or
  usage error); click's own usage errors exit 2. With a ``--subject`` option, errors and the
  library's warnings start with ``sub-X:``. Unexpected exceptions keep their traceback
  (they are bugs).
* :func:`config_options` / :func:`read_config` — ``--config FILE`` or ``--config-json TEXT``
  (the workflow passes the resolved, rule-specific part of the configuration inline).
* :class:`Progress` — a progress bar on a terminal; periodic log lines otherwise (a cluster
  job's log file then shows where a long loop is, without a line per step).
* :func:`log`, :func:`provenance`, :func:`sha256`, :func:`configure_jax`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from bnmfit import xla_defaults
from bnmfit.errors import BnmfitError, ConfigError, DataError, for_subject

__all__ = [
    "CONTEXT_SETTINGS",
    "Progress",
    "StageProgress",
    "command",
    "config_options",
    "configure_jax",
    "describe",
    "log",
    "read_config",
    "read_labels",
]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Failure(click.ClickException):
    """A one-line error with a chosen exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class Terminated(BaseException):  # noqa: N818 - a signal, not an error of the program
    """Raised in the main thread when the process receives SIGTERM (a cluster's scancel, a
    timeout, Snakemake stopping its jobs): unwinding runs every cleanup (temporary output
    files are deleted) instead of dying on the spot. A BaseException, so that no
    ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def _terminate_cleanly():
    """SIGTERM raises :class:`Terminated` while the command runs (main thread only); the
    previous handler is restored afterwards."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (e.g. a test runner's worker)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# where bnmfit's own warnings come from: the library, and the checkout's rule scripts
_OURS = (str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2] / "scripts"))


@contextlib.contextmanager
def _library_warnings_logged(subject: str | None):
    """bnmfit's own warnings (``warnings.warn`` in the library) become ``warning: sub-X: ...``
    log lines while the command runs; other packages' warnings keep Python's format (their
    file and line help whoever reads them)."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not str(filename).startswith(_OURS):
                return shown(message, category, filename, lineno, file, line)
            log(f"warning: {for_subject(_one_line(message), subject)}")

        warnings.showwarning = show
        yield


class Command(click.Command):
    """A click command that turns bnmfit's errors into one-line messages and exit codes.

    Every message names the subject when the command has a ``--subject`` option: errors read
    ``Error: sub-X: ...`` and the library's warnings ``warning: sub-X: ...`` (the library's
    messages already name the sheet column or config key to fix).

    Before the command's function runs, bnmfit's XLA settings are added to ``XLA_FLAGS``
    (:func:`bnmfit.xla_defaults.apply`): scripts import JAX's users inside that function, so
    the settings are in place before JAX's first computation."""

    def invoke(self, ctx: click.Context):
        xla_defaults.apply()
        subject = ctx.params.get("subject")
        subject = subject if isinstance(subject, str) else None  # not a cohort's tuple

        def failure(message: str, exit_code: int) -> _Failure:
            return _Failure(for_subject(_one_line(message), subject), exit_code)

        try:
            with _terminate_cleanly(), _library_warnings_logged(subject):
                return super().invoke(ctx)
        except Terminated as e:
            name = signal.Signals(e.signum).name
            raise failure(
                f"terminated by {name} before finishing; unfinished outputs were "
                "discarded (a re-run resumes refine from its last checkpoint)",
                128 + e.signum,
            ) from None
        except BnmfitError as e:
            raise failure(str(e), e.exit_code) from None
        except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
            raise failure(f"{e.filename or ''}: {e.strerror}; check the path", 1) from None
        except OSError as e:
            if e.errno is None:
                raise
            raise failure(f"{e.filename or ''}: {e.strerror}", 1) from None


def command(**kwargs) -> Callable:
    """``click.command`` with ``-h/--help`` and :class:`Command`'s error handling."""
    kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
    kwargs.setdefault("cls", Command)
    return click.command(**kwargs)


# =========================================================================== logging


def log(message: str) -> None:
    """A timestamped line on stderr (the rule's log file under Snakemake)."""
    click.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


class Progress:
    """Progress of a long loop: a bar on a terminal, else a log line every ``interval`` s.

    Example::

        with Progress("explore sub-01 chunk 0", total=72) as p:
            for i in ...:
                p.update(i + 1)

    ``update(done, total=None, info="")`` may be called as often as wanted; off a terminal
    it writes a line only when ``interval`` seconds have passed (and always at the end).
    ``start`` (a ``time.monotonic()`` value) backdates the clock, e.g. to include the
    compilation before the first update.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        interval: float = 15.0,
        stream=None,
        tty: bool | None = None,
        start: float | None = None,
    ):
        self.label = label
        self.total = total
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.t0 = time.monotonic() if start is None else start
        self.last = -float("inf")
        self.done = 0
        self.info = ""
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(ok=exc_type is None)

    def _text(self) -> str:
        el = time.monotonic() - self.t0
        if self.total:
            frac = min(1.0, self.done / self.total)
            eta = el / frac * (1 - frac) if frac > 0 else float("nan")
            eta_s = f", ETA {_secs(eta)}" if frac < 1 and eta == eta else ""
            core = f"{self.done}/{self.total} ({100 * frac:.0f}%), {_secs(el)} elapsed{eta_s}"
        else:
            core = f"{self.done} done, {_secs(el)} elapsed"
        return f"{self.label}: {core}" + (f" — {self.info}" if self.info else "")

    def update(self, done: int, total: int | None = None, info: str = "") -> None:
        self.done = int(done)
        if total is not None:
            self.total = int(total)
        self.info = info
        now = time.monotonic()
        final = self.total is not None and self.done >= self.total
        if self.tty:
            width = 24
            frac = min(1.0, self.done / self.total) if self.total else 0.0
            bar = "#" * int(round(width * frac)) + "." * (width - int(round(width * frac)))
            self.stream.write(f"\r[{bar}] {self._text()}\033[K")
            self.stream.flush()
            self._drawn = True
        elif final or now - self.last >= self.interval:
            self.stream.write(f"[{time.strftime('%H:%M:%S')}] {self._text()}\n")
            self.stream.flush()
            self.last = now

    def close(self, ok: bool = True) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


class StageProgress:
    """The ``progress(stage, step, steps, loss)`` callback of :func:`bnmfit.fit.refine`: one
    :class:`Progress` per stage, each started when the previous one ended (so the first
    includes the compilation), showing the configured loss (the fit's plus ``offset``)."""

    def __init__(self, label: str, *, offset: float = 0.0):
        self.label, self.offset = label, offset
        self.bars: dict[str, Progress] = {}
        self.t = time.monotonic()

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        for b in self.bars.values():
            b.close(ok=exc_type is None)

    def __call__(self, stage: str, step: int, steps: int, loss: float) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            for b in self.bars.values():
                b.close()
            bar = self.bars[stage] = Progress(f"{self.label} {stage}", total=steps, start=self.t)
        self.t = time.monotonic()
        bar.update(step, steps, info=f"loss {float(loss) + self.offset:.4f}")


def describe(values: Mapping[str, Any]) -> str:
    """``name=value, ...`` for a log line (arrays by their mean)."""
    import numpy as np

    return ", ".join(
        f"{k}={np.mean(v):.4g}" + ("" if np.ndim(v) == 0 else " (mean)") for k, v in values.items()
    )


def _secs(s: float) -> str:
    if s != s:
        return "?"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


# =========================================================================== configuration


def config_options(f: Callable) -> Callable:
    """Add ``--config FILE`` and ``--config-json TEXT`` (exactly one is required)."""
    f = click.option(
        "--config-json",
        "config_json",
        metavar="JSON",
        help="The configuration as inline JSON (what the workflow passes: the resolved part "
        "of config/config.yaml this step depends on).",
    )(f)
    f = click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False),
        help="A YAML configuration file (config/config.yaml); missing keys take the defaults "
        "of workflow/schemas/config.schema.yaml.",
    )(f)
    return f


def read_config(config_file: str | None, config_json: str | None) -> dict[str, Any]:
    """The validated configuration from ``--config`` or ``--config-json``."""
    from bnmfit import config as bconfig

    if (config_file is None) == (config_json is None):
        raise click.UsageError("give exactly one of --config FILE and --config-json TEXT")
    if config_file is not None:
        return bconfig.load_config(config_file)
    try:
        raw = json.loads(config_json)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config-json: invalid JSON ({e.msg} at column {e.colno})") from None
    return bconfig.validate_config(raw, where="--config-json")


def read_labels(path: str | os.PathLike) -> list[str]:
    """Region labels from a text file: one per line, or a TSV with a name/label column."""
    lines = [ln.rstrip("\n") for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise DataError(
            f"{path} (sheet column labels): expected region labels, one per line, got an empty "
            "file; write one label per line"
        )
    head = [h.strip().lower() for h in lines[0].split("\t")]
    if len(head) > 1:
        for col in ("name", "label", "labels", "region"):
            if col in head:
                k = head.index(col)
                return [ln.split("\t")[k].strip() for ln in lines[1:]]
        raise DataError(
            f"{path} (sheet column labels): expected a TSV of labels to have a name or label "
            f"column, got {', '.join(head)}; name the column of region labels 'name'"
        )
    return [ln.strip() for ln in lines]


# =========================================================================== JAX


def configure_jax(config: Mapping[str, Any], *, gpu: int | None = None) -> None:
    """Platform, precision and compilation cache of JAX, before any array is made.

    Only switches on what the configuration needs (CPU-only when no GPU is asked for,
    64-bit floats for ``precision: float64``, the persistent compilation cache); it never
    switches 64-bit floats off, since float32 problems are float32 by their arrays' dtype.
    """
    compute = config.get("compute") or {}
    plat = compute.get("platform", "auto")
    if gpu is None:
        gpu = int((config.get("resources") or {}).get("gpu", 0))
    import jax

    if (plat == "cpu" or (plat == "auto" and not gpu)) and jax.config.jax_platforms != "cpu":
        jax.config.update("jax_platforms", "cpu")
    if plat == "gpu":
        try:
            jax.devices("gpu")
        except RuntimeError:
            raise ConfigError(
                "compute.platform is gpu but JAX sees no GPU; install jax with CUDA support "
                "or set compute.platform: auto"
            ) from None
    if (config.get("simulation") or {}).get("precision") == "float64":
        jax.config.update("jax_enable_x64", True)
    cache = compute.get("compilation_cache")
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(Path(cache).resolve()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
