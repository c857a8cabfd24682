"""Every result file of the workflow: typed records with ``write`` and ``read``, one atomic
writer.

Records (one per file; ``record.write(path)`` / ``Record.read(path)``):

* :class:`ConnectomeFile` — ``sub-X_connectome.h5``: normalised and raw SC, labels.
* :class:`EmpiricalFile` — ``sub-X_desc-empirical_fc.h5``: preprocessed BOLD, FC, FCD, QC;
  :class:`QualityFile` — ``sub-X_desc-empirical_qc.json``: its QC numbers alone.
* :class:`ExploreChunk` — ``explore/chunk-k.h5``: the losses of one chunk of the space.
* :class:`Landscape` — ``sub-X_explore.h5``: the joined chunks (:meth:`Landscape.gather`)
  and the refinement starts.
* :class:`FitFile` — ``sub-X_fit.h5``: the loss history of every stage and start, and the
  simulated observables of the fit on its first held-out seed.
* :class:`FittedParams` — ``sub-X_desc-fitted_params.json``: the fitted and fixed
  parameters, held-out metrics per stage, warnings, provenance.

Loss values in every record are those of the configured loss expression (its constant
included, :attr:`bnmfit.losses.LossSpec.offset`); they are added in :meth:`ExploreChunk.of`,
:meth:`Landscape.extended` and :meth:`FitFile.of`, the only places where library results
become records.

Every writer goes through :func:`atomic_path`: the data are written to a hidden temporary
file in the target's directory, flushed, then renamed over the target in one step, so a
failure never leaves a partial file under the target name and Snakemake never sees a
half-written output as complete.

HDF5 layout (:func:`write_h5`): one dataset per key (a nested dict is a group, whose
``"@attrs"`` entry holds the group's attributes); strings and lists of strings are UTF-8
string datasets; ``None`` is an empty dataset. Attributes are numbers, strings and booleans
as themselves, anything else (lists, dicts, ``None``) as JSON text listed in the group's
``__json__`` attribute so that :func:`read_h5` decodes them back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import io
import json
import math
import os
import pickle
import platform
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bnmfit.errors import ConfigError, DataError, short_list

__all__ = [
    "ConnectomeFile",
    "EmpiricalFile",
    "ExploreChunk",
    "FitFile",
    "FittedParams",
    "Landscape",
    "LossRecord",
    "QualityFile",
    "StageFile",
    "ValidationData",
    "atomic_path",
    "dataset_description",
    "git_commit",
    "provenance",
    "read_h5",
    "read_json",
    "sha256",
    "unreadable",
    "versions",
    "write_bytes",
    "write_h5",
    "write_json",
    "write_resolved_config",
    "write_together",
]

PathLike = str | os.PathLike
_JSON_ATTRS = "__json__"
_GROUP_ATTRS = "@attrs"
_COMPRESS_MIN = 4096  # gzip datasets with at least this many elements
#: errno values of a full disk or quota: reported as one line, naming the file
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


# =========================================================================== atomic writes


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _host() -> str:
    return "".join(c for c in socket.gethostname().split(".")[0] if c.isalnum()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def _remove_stale(target: Path, suffixes: str) -> None:
    """Delete temporaries of ``target`` left by a killed writer (SIGKILL, power loss) on this
    host: ``.<name>.<host>-<pid>.*.tmp<suffixes>`` whose process no longer exists. Writers on
    other hosts (a shared file system) are never touched."""
    prefix = f".{target.name}.{_host()}-"
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for e in entries:
        name = e.name
        if not (name.startswith(prefix) and name.endswith(f".tmp{suffixes}")):
            continue
        pid = name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                e.unlink()


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write instead of ``path``; on success it replaces ``path``.

    The temporary file is in the same directory (so the final rename is atomic), is hidden
    (``.<name>.<host>-<pid>.<random>.tmp<suffixes>``, keeping the suffixes so that writers
    that look at the extension still work), and is created empty. On a normal exit it is
    fsynced and renamed over ``path`` (with the usual permissions); on an exception it is
    deleted and the exception propagates (a full disk as a one-line DataError). Parent
    directories are created. A later write of the same target removes what a killed writer
    (SIGKILL) left behind.

    Example::

        with atomic_path("results/x.npy") as tmp:
            np.save(tmp, array)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(target.suffixes[-2:])
    _remove_stale(target, suffixes)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.{_host()}-{os.getpid()}.",
        suffix=f".tmp{suffixes}",
        dir=target.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno in _FULL:
            kept = "the previous file is unchanged" if target.exists() else "nothing was written"
            raise DataError(
                f"{target}: expected to write the result, got {os.strerror(e.errno)}; {kept}. "
                f"Free space on the file system of {target.parent} (or raise the quota) and "
                "re-run"
            ) from None
        raise


def write_together(records: Sequence[tuple[Any, PathLike]]) -> None:
    """``record.write(path)`` for each pair, all or none: when one fails, the files already
    written by this call are removed, so a rule never leaves part of its outputs."""
    done: list[Path] = []
    try:
        for record, path in records:
            record.write(path)
            done.append(Path(path))
    except BaseException:
        for p in done:
            p.unlink(missing_ok=True)
        raise


def write_bytes(path: PathLike, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """The state of a long run (a refinement, an evolutionary exploration) pickled to
    ``directory/name`` with :func:`write_bytes`, stamped with ``version`` and the
    ``fingerprint`` of the run's inputs; :meth:`load` refuses a file of another version or
    fingerprint. ``directory`` None: nothing is saved and nothing loaded.

    Attributes:
        directory: the checkpoint directory, created on the first save.
        fingerprint: a digest of everything that makes the run's result.
        name: the file name in ``directory``.
        version: the format of the saved state; a file of another version is refused.
        run: the run, for messages ("refinement").
        other: what a foreign fingerprint means, for messages ("a different refinement
            (other data, stages, starts or seed)").
    """

    directory: PathLike | None
    fingerprint: str
    name: str
    version: int
    run: str
    other: str

    @property
    def path(self) -> Path | None:
        return None if self.directory is None else Path(self.directory) / self.name

    def load(self) -> dict | None:
        """The saved state, or None when there is none (or no directory)."""
        path = self.path
        if path is None or not path.exists():
            return None
        try:
            data = pickle.loads(path.read_bytes())
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same error
            raise DataError(
                f"cannot read the checkpoint {path} ({type(e).__name__}): delete it to start "
                f"the {self.run} over"
            ) from None
        if not isinstance(data, dict) or data.get("version") != self.version:
            raise DataError(
                f"the checkpoint {path} has an unknown format: delete it to start the "
                f"{self.run} over"
            )
        if data.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"the checkpoint {path} belongs to {self.other}: delete it or choose another "
                "checkpoint directory"
            )
        return data

    def save(self, data: Mapping[str, Any]) -> None:
        """Replace the saved state by ``data`` atomically (nothing without a directory)."""
        path = self.path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**data, "version": self.version, "fingerprint": self.fingerprint}
        write_bytes(path, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))


# =========================================================================== provenance


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (hex)."""
    st = os.stat(path)
    return _sha256_cached(os.fspath(path), st.st_size, st.st_mtime)


def versions() -> dict[str, str]:
    """Versions of Python, bnmfit and the numerical packages."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("bnmfit", "jax", "jaxlib", "numpy", "scipy", "optax", "h5py"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def git_commit(directory: str | os.PathLike | None = None) -> str | None:
    """The git commit of the source tree (``+dirty`` when it has local changes), or None."""
    d = Path(directory) if directory else Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(d), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(d), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha


def provenance(
    config: Mapping[str, Any], inputs: Iterable[str | os.PathLike] = (), seeds: Any = None
) -> dict[str, Any]:
    """What every result file records: config hash, versions, seeds, input checksums, and
    the XLA_FLAGS the numbers were computed with (bnmfit's own, :mod:`bnmfit.xla_defaults`,
    and any the user set: they change results at the level of float rounding)."""
    from bnmfit.config import config_hash

    return {
        "config_hash": config_hash(config),
        "versions": versions(),
        "seeds": seeds,
        "inputs": {os.fspath(p): sha256(p) for p in inputs if p},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def dataset_description(
    config: Mapping[str, Any], subjects: Sequence[str], config_file: str | None
) -> dict[str, Any]:
    """The BIDS ``dataset_description.json`` of a results folder: what made it (bnmfit's
    version and git commit, the config's hash and file) and for which subjects."""
    from bnmfit import __version__
    from bnmfit.config import config_hash

    return {
        "Name": "bnmfit: personalised brain network model fits",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "bnmfit",
                "Version": __version__,
                "Description": "Grid exploration and gradient refinement of whole-brain "
                f"network models ({config['model']['name']}) per subject.",
                "GitCommit": git_commit(),
            }
        ],
        "ConfigHash": config_hash(config),
        "ConfigFile": config_file,
        "Subjects": [f"sub-{s}" for s in subjects],
        "Versions": versions(),
    }


def write_resolved_config(path: PathLike, config: Mapping[str, Any]) -> None:
    """The configuration that produced a results folder (YAML, every default filled in)."""
    import yaml

    write_bytes(
        path,
        "# The resolved configuration of these results (every default filled "
        "in).\n" + yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True),
    )


# =========================================================================== JSON


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def dumps(obj: Any, indent: int | None = None) -> str:
    """JSON text of ``obj`` (NumPy scalars and arrays, paths, sets, dataclasses converted;
    non-finite floats as ``NaN``/``Infinity``, Python's JSON dialect)."""
    return json.dumps(obj, indent=indent, default=_json_default, ensure_ascii=False)


def write_json(path: PathLike, obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as JSON atomically (see :func:`dumps`)."""
    write_bytes(path, dumps(obj, indent) + "\n")


def _missing(path: PathLike, what: str) -> DataError:
    return DataError(
        f"{path}: expected {what}, got no such file; check the path "
        "(or re-run the step that writes it)"
    )


def read_json(path: PathLike) -> Any:
    """Read a JSON file; DataError (with the file name) when it is missing or invalid."""
    p = Path(path)
    if not p.is_file():
        raise _missing(path, "a JSON file")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(
            f"{path}: expected valid JSON, got a parse error ({e}); "
            "delete the file and re-run the step that writes it"
        ) from None


# =========================================================================== HDF5


def _is_str_seq(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "US" or (
            value.dtype == object and all(isinstance(x, str) for x in value.ravel())
        )
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(x, str) for x in value)
    )


def _write_attrs(obj, attrs: Mapping[str, Any]) -> None:
    json_keys = []
    for k, v in attrs.items():
        if isinstance(v, (bool, np.bool_, str, int, float, np.integer, np.floating)):
            obj.attrs[k] = v
        else:
            obj.attrs[k] = dumps(v)
            json_keys.append(k)
    if json_keys:
        obj.attrs[_JSON_ATTRS] = dumps(json_keys)


def _write_group(group, datasets: Mapping[str, Any]) -> None:
    import h5py

    str_dt = h5py.string_dtype(encoding="utf-8")
    for key, value in datasets.items():
        key = str(key)
        if key == _GROUP_ATTRS:
            _write_attrs(group, value)
        elif isinstance(value, Mapping):
            _write_group(group.create_group(key), value)
        elif value is None:
            group.create_dataset(key, data=h5py.Empty("f8"), track_times=False)
        elif isinstance(value, str):
            group.create_dataset(key, data=value, dtype=str_dt, track_times=False)
        elif _is_str_seq(value):
            arr = np.asarray(value, dtype=object)
            group.create_dataset(
                key, data=arr.astype(str).astype(object), dtype=str_dt, track_times=False
            )
        else:
            arr = np.asarray(value)
            if arr.dtype.kind not in "biufc":
                raise TypeError(f"dataset {key!r}: cannot write {arr.dtype} to HDF5")
            kw = {}
            if arr.size >= _COMPRESS_MIN:
                kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
            # no object timestamps (h5py's default too): the same numbers give the same bytes
            group.create_dataset(key, data=arr, track_times=False, **kw)


def write_h5(
    path: PathLike, datasets: Mapping[str, Any], attrs: Mapping[str, Any] | None = None
) -> None:
    """Write ``datasets`` (name → array / str / list of str / None / nested dict) and root
    ``attrs`` to an HDF5 file, atomically (see the module docstring for the layout).

    The file is built in memory and written by Python in one piece, so a full disk is a
    clean one-line error rather than an HDF5 driver failure. Result files are small (MBs).
    """
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        _write_group(f, datasets)
        _write_attrs(f, attrs or {})
    write_bytes(path, bytes(buf.getbuffer()))


def _read_value(ds) -> Any:
    import h5py

    if ds.shape is None:  # h5py.Empty
        return None
    if h5py.check_string_dtype(ds.dtype) is not None:
        v = ds.asstr()[()]
        return v if isinstance(v, str) else [str(x) for x in np.asarray(v).ravel()]
    v = ds[()]
    if isinstance(v, np.ndarray):
        return v
    return v.item() if hasattr(v, "item") else v


def _attr(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.generic):
        return v.item()
    return v


def _read_attrs(obj) -> dict[str, Any]:
    raw = {k: _attr(v) for k, v in obj.attrs.items()}
    json_keys = json.loads(raw.pop(_JSON_ATTRS, "[]"))
    return {k: (json.loads(v) if k in json_keys else v) for k, v in raw.items()}


def _read_group(group) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {}
    if group.name != "/" and len(group.attrs):
        out[_GROUP_ATTRS] = _read_attrs(group)
    for k, item in group.items():
        out[k] = _read_group(item) if isinstance(item, h5py.Group) else _read_value(item)
    return out


def read_h5(path: PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a file written by :func:`write_h5`: ``(datasets, attrs)``.

    Arrays come back as NumPy arrays, scalars as Python numbers, strings as ``str``, string
    datasets as ``list[str]``, groups as dicts (their attributes under ``"@attrs"``); JSON
    attributes are decoded.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise _missing(path, "an HDF5 file")
    try:
        with h5py.File(p, "r") as f:
            return _read_group(f), _read_attrs(f)
    except OSError as e:
        raise DataError(
            f"{path}: expected an HDF5 file, got an unreadable file ({e}); "
            "delete it and re-run the step that writes it"
        ) from None


def unreadable(paths: Iterable[PathLike]) -> list[tuple[str, str]]:
    """``(path, why)`` for each existing ``.h5``/``.json`` result file of ``paths`` that cannot
    be opened (truncated, emptied, overwritten by something else): the workflow removes them
    before it plans, so that the plain command rebuilds them. Cheap: HDF5 files are only
    opened (HDF5 checks their length), JSON files parsed."""
    import h5py

    bad = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            continue
        try:
            if p.suffix == ".h5":
                with h5py.File(p, "r"):
                    pass
            elif p.suffix == ".json":
                json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            bad.append((os.fspath(path), str(e).splitlines()[0][:200]))
    return bad


# =========================================================================== records


def _nan_to_none(x: Any) -> Any:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _required(path: PathLike, data: Mapping[str, Any], keys: Sequence[str]) -> None:
    for k in keys:
        if data.get(k) is None:
            raise DataError(
                f"{path}: expected the dataset {k!r}, got none; delete the file "
                "and re-run the step that writes it"
            )


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@dataclasses.dataclass(frozen=True)
class ConnectomeFile:
    """``sub-X_connectome.h5``: the subject's SC as the model uses it.

    Attributes:
        weights, lengths: (N, N) normalised weights and tract lengths (mm).
        weights_raw: (N, N) the weights as read.
        labels: N region labels.
        normalisation, symmetric, isolated: how the SC was normalised, whether it is
            symmetric, the labels of regions without any connection.
        provenance: config hash, versions, seeds, input checksums, XLA flags.
        centres: (N, 3) region centres in mm (world coordinates), None when unknown.
        networks: N network names of the regions (from the labels file), None when unknown.
        warnings: what the user must know about this SC, one sentence each (see :meth:`of`).
    """

    subject: str
    weights: np.ndarray
    lengths: np.ndarray | None
    weights_raw: np.ndarray
    labels: list[str]
    normalisation: str
    symmetric: bool
    isolated: list[str]
    provenance: dict[str, Any]
    centres: np.ndarray | None = None
    networks: list[str] | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def of(
        cls,
        subject: str,
        conn,
        weights_raw: np.ndarray,
        *,
        provenance: Mapping[str, Any],
        centres: np.ndarray | None = None,
        networks: Sequence[str] | None = None,
    ) -> ConnectomeFile:
        """The record of a :class:`~bnmfit.connectome.Connectome` made from ``weights_raw``,
        with the warnings on what was accepted: regions without any connection, a non-zero
        diagonal set to 0, asymmetric weights kept as directed. Each names the subject, the
        sheet column and the config key, and the regions by label."""
        pre, col = f"sub-{subject}", "the SC weights (sheet column sc_weights)"
        labels, raw = list(conn.labels), np.asarray(weights_raw, dtype=np.float64)
        warnings = []
        if conn.isolated:
            warnings.append(
                f"{pre}: {len(conn.isolated)} region(s) of {col} have no connection, so they "
                f"receive no input from the network: {short_list(conn.isolated)}; "
                "connectome.isolated: error refuses such subjects"
            )
        self_conn = [lab for lab, d in zip(labels, np.diag(raw), strict=True) if d != 0]
        if self_conn:
            warnings.append(
                f"{pre}: {col} have non-zero self-connections at {len(self_conn)} of "
                f"{len(labels)} regions ({short_list(self_conn)}); set to 0 (the model "
                "couples regions only to others)"
            )
        off = np.where(np.eye(len(labels), dtype=bool), 0.0, raw)
        gap = np.abs(off - off.T)
        if not conn.symmetric and off.max() > 0 and gap.max() > 1e-6 * off.max():
            i, j = np.unravel_index(np.argmax(gap), gap.shape)
            warnings.append(
                f"{pre}: {col} are asymmetric (|W - Wᵀ| up to {gap.max() / off.max():.2g} of "
                f"the largest weight, between {labels[i]} and {labels[j]}); kept as directed "
                "(row receives from column); connectome.symmetrise: true averages W and Wᵀ"
            )
        return cls(
            subject=subject,
            weights=conn.weights,
            lengths=conn.lengths,
            weights_raw=raw,
            labels=labels,
            normalisation=conn.normalisation,
            symmetric=bool(conn.symmetric),
            isolated=list(conn.isolated),
            provenance=dict(provenance),
            centres=None if centres is None else np.asarray(centres, dtype=np.float64),
            networks=None if networks is None else [str(x) for x in networks],
            warnings=warnings,
        )

    @property
    def n_regions(self) -> int:
        return len(self.labels)

    def write(self, path: PathLike) -> None:
        write_h5(
            path,
            {
                "weights": self.weights,
                "lengths": self.lengths,
                "weights_raw": self.weights_raw,
                "labels": list(self.labels),
                # written only when known: files without them keep their layout
                **({} if self.centres is None else {"centres": self.centres}),
                **({} if self.networks is None else {"networks": list(self.networks)}),
            },
            {
                "subject": self.subject,
                "normalisation": self.normalisation,
                "symmetric": bool(self.symmetric),
                "n_regions": self.n_regions,
                "isolated": list(self.isolated),
                "warnings": list(self.warnings),
                **self.provenance,
            },
        )

    @classmethod
    def read(cls, path: PathLike) -> ConnectomeFile:
        d, a = read_h5(path)
        _required(path, d, ("weights", "lengths", "labels"))
        return cls(
            subject=str(a.get("subject", "")),
            weights=d["weights"],
            lengths=d.get("lengths"),
            weights_raw=d.get("weights_raw", d["weights"]),
            labels=list(d["labels"]),
            normalisation=str(a.get("normalisation", "")),
            symmetric=bool(a.get("symmetric", False)),
            isolated=list(a.get("isolated") or []),
            provenance=_provenance(a),
            centres=d.get("centres"),
            networks=None if d.get("networks") is None else list(d["networks"]),
            warnings=list(a.get("warnings") or []),
        )


_PROVENANCE = ("config_hash", "versions", "seeds", "inputs", "xla_flags")


def _provenance(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: attrs[k] for k in _PROVENANCE if k in attrs}


@dataclasses.dataclass(frozen=True)
class ValidationData:
    """Observables the fit never sees, on which it is judged (group ``validation`` of
    ``sub-X_desc-empirical_fc.h5``).

    Attributes:
        fc: (N, N) FC; fcd: (W, W) FCD or None; n_tr: volumes behind them (None for an FC
        file); source: where they came from, in words (a second run, or which volumes).
    """

    fc: np.ndarray
    fcd: np.ndarray | None
    n_tr: int | None
    source: str

    def _tree(self) -> dict[str, Any]:
        return {
            "fc": self.fc,
            "fcd": self.fcd,
            _GROUP_ATTRS: {
                "n_tr": -1 if self.n_tr is None else int(self.n_tr),
                "source": self.source,
            },
        }

    @classmethod
    def _from_tree(cls, g: Mapping[str, Any]) -> ValidationData:
        a = g.get(_GROUP_ATTRS, {})
        n_tr = int(a.get("n_tr", -1))
        return cls(g["fc"], g.get("fcd"), None if n_tr < 0 else n_tr, str(a.get("source", "")))


@dataclasses.dataclass(frozen=True)
class EmpiricalFile:
    """``sub-X_desc-empirical_fc.h5``: the target observables of one subject.

    Attributes:
        fc: (N, N) empirical FC in the connectome's region order.
        labels: N region labels (the connectome's).
        bold: (T', N) preprocessed BOLD, None when only an FC was given.
        fcd: (W, W) FCD, None without BOLD or without an FCD window.
        tr: the TR in s (None when unknown); n_tr: T' (None without BOLD).
        discard, fcd_window, fcd_step: how the BOLD was cut and windowed.
        qc: quality numbers (mean FC, SC–FC r, interpolated volumes, ...).
        validation: the subject's validation data (:class:`ValidationData`), or None.
    """

    subject: str
    fc: np.ndarray
    labels: list[str]
    bold: np.ndarray | None
    fcd: np.ndarray | None
    tr: float | None
    n_tr: int | None
    discard: int
    fcd_window: int
    fcd_step: int
    qc: dict[str, Any]
    provenance: dict[str, Any]
    validation: ValidationData | None = None

    def describe(self) -> str:
        """One line for the log: size, length, mean FC, SC–FC r and the validation data."""
        length = f"{self.n_tr} TRs of {self.tr} s" if self.n_tr else "an FC file (no BOLD)"
        mean_fc = float(self.qc.get("mean_fc", float("nan")))
        out = f"{len(self.labels)} regions, {length}, mean FC {mean_fc:.3f}"
        if self.qc.get("sc_fc_r") is not None:
            out += f", SC–FC r {self.qc['sc_fc_r']:.3f}"
        v = self.qc.get("validation")
        if v is None:
            return out + "; no validation data (give a second run in validation_bold/_fc)"
        return out + f"; validation: {v['source']} (FC r with training {v['fc_r_training']:.3f})"

    def write(self, path: PathLike) -> None:
        tree = {"bold": self.bold, "fc": self.fc, "fcd": self.fcd, "labels": list(self.labels)}
        if self.validation is not None:
            tree["validation"] = self.validation._tree()
        write_h5(
            path,
            tree,
            {
                "subject": self.subject,
                "tr": self.tr if self.tr is not None else float("nan"),
                "n_tr": self.n_tr if self.n_tr is not None else -1,
                "discard": self.discard,
                "fcd_window": self.fcd_window,
                "fcd_step": self.fcd_step,
                "qc": self.qc,
                **self.provenance,
            },
        )

    @classmethod
    def read(cls, path: PathLike) -> EmpiricalFile:
        d, a = read_h5(path)
        _required(path, d, ("fc",))
        n_tr = a.get("n_tr")
        return cls(
            subject=str(a.get("subject", "")),
            fc=d["fc"],
            labels=list(d.get("labels") or []),
            bold=d.get("bold"),
            fcd=d.get("fcd"),
            tr=_nan_to_none(a.get("tr")),
            n_tr=None if n_tr is None or int(n_tr) < 0 else int(n_tr),
            discard=int(a.get("discard", 0)),
            fcd_window=int(a.get("fcd_window", 0)),
            fcd_step=int(a.get("fcd_step", 1)),
            qc=dict(a.get("qc") or {}),
            provenance=_provenance(a),
            validation=ValidationData._from_tree(d["validation"]) if "validation" in d else None,
        )


@dataclasses.dataclass(frozen=True)
class QualityFile:
    """``sub-X_desc-empirical_qc.json``: the quality numbers of :class:`EmpiricalFile`."""

    qc: dict[str, Any]
    provenance: dict[str, Any]

    @classmethod
    def of(cls, empirical: EmpiricalFile) -> QualityFile:
        return cls(dict(empirical.qc), dict(empirical.provenance))

    def write(self, path: PathLike) -> None:
        write_json(path, {**self.qc, "provenance": self.provenance})

    @classmethod
    def read(cls, path: PathLike) -> QualityFile:
        d = dict(read_json(path))
        return cls(d, d.pop("provenance", {}))


@dataclasses.dataclass(frozen=True)
class LossRecord:
    """The configured loss a result was computed with: weighted terms and the constant."""

    terms: list[list[Any]]
    offset: float
    expression: str | None

    @classmethod
    def of(cls, spec) -> LossRecord:
        """From a :class:`bnmfit.losses.LossSpec`."""
        return cls([list(t) for t in spec.terms], float(spec.offset), spec.expression)

    def attrs(self) -> dict[str, Any]:
        return {
            "loss_terms": self.terms,
            "loss_offset": self.offset,
            "loss_expression": self.expression or "",
        }

    @classmethod
    def from_attrs(cls, a: Mapping[str, Any]) -> LossRecord:
        return cls(
            list(a.get("loss_terms") or []),
            float(a.get("loss_offset", 0.0)),
            a.get("loss_expression") or None,
        )


_LANDSCAPE_ARRAYS = ("points", "loss", "mean_loss", "std_loss", "fc_r", "diverged")


def _write_exploration(path: PathLike, rec, datasets: dict, attrs: dict) -> None:
    """What :class:`ExploreChunk` and :class:`Landscape` files share: the points and their
    losses, the space and seeds, the loss, the provenance and (cmaes/nsga2) the group
    ``evolution``; plus their own ``datasets`` and ``attrs``."""
    evolution = {} if rec.evolution is None else {"evolution": _evolution_group(rec.evolution)}
    write_h5(
        path,
        {
            "names": list(rec.names),
            **{k: getattr(rec, k) for k in _LANDSCAPE_ARRAYS},
            **datasets,
            **evolution,
        },
        {
            "subject": rec.subject,
            "axes": rec.axes,
            "sampler": rec.sampler,
            "n_samples": rec.n_samples,
            "seeds": rec.seeds,
            "n_points": rec.n_points,
            **rec.loss_spec.attrs(),
            **attrs,
            **rec.provenance,
        },
    )


def _evolution_group(gen) -> dict[str, Any]:
    """The ``evolution`` group of an explore file: a :class:`bnmfit.explore.Generations`."""
    return {
        "generation": gen.generation,
        "best_loss": gen.best_loss,
        "mean_loss": gen.mean_loss,
        "sigma": gen.sigma,
        "objectives": gen.objectives,
        "front": gen.front,
        "@attrs": {
            "population": gen.population,
            "stop": gen.stop,
            "objective_names": list(gen.objective_names),
        },
    }


def _read_evolution(group: Mapping[str, Any] | None):
    """:class:`bnmfit.explore.Generations` of an ``evolution`` group (None: a fixed space)."""
    if group is None:
        return None
    from bnmfit.explore import Generations

    a = group["@attrs"]
    return Generations(
        generation=np.asarray(group["generation"], dtype=np.int64),
        best_loss=np.asarray(group["best_loss"]),
        mean_loss=np.asarray(group["mean_loss"]),
        sigma=np.asarray(group["sigma"]),
        population=int(a["population"]),
        stop=str(a["stop"]),
        objective_names=tuple(a["objective_names"]),
        objectives=np.asarray(group["objectives"], dtype=np.float64),
        front=np.asarray(group["front"], dtype=np.int64),
    )


def _space(rec):
    """The :class:`bnmfit.explore.Space` of an exploration record (its axes and sampler)."""
    from bnmfit.explore import Axis, Space

    return Space(
        tuple(Axis(a["name"], a["lo"], a["hi"], n=a["n"], scale=a["scale"]) for a in rec.axes),
        sampler=rec.sampler,
        n_samples=rec.n_samples,
    )


@dataclasses.dataclass(frozen=True)
class ExploreChunk:
    """``explore/chunk-k.h5``: chunk ``chunk`` of ``n_chunks`` of one exploration.

    Attributes:
        names: (D) the explored parameters; points: (P_k, D); index: (P_k) the points'
            positions in the whole space of ``n_points``.
        loss: (P_k, R) the configured loss per noise seed (inf where it diverged);
            mean_loss, std_loss, fc_r, diverged: (P_k) per point.
        axes: the axes (name, lo, hi, n, scale); sampler, n_samples: how the space was
            sampled; seeds: the R noise seeds.
        evolution: cmaes/nsga2 (one chunk holding every evaluated point, in order of
            generation): a :class:`bnmfit.explore.Generations` (group ``evolution``): each
            point's ``generation``, per generation ``best_loss``, ``mean_loss`` (loss
            constant added) and ``sigma``, NSGA-II's ``objectives`` (P × K, named by
            ``objective_names``) and ``front`` (indices of the Pareto front), ``population``
            and ``stop``; None for a fixed space.

    No wall time: timings live in the logs and Snakemake's benchmark files, so that the
    same inputs and config give a byte-identical file.
    """

    subject: str
    names: list[str]
    points: np.ndarray
    index: np.ndarray
    loss: np.ndarray
    mean_loss: np.ndarray
    std_loss: np.ndarray
    fc_r: np.ndarray
    diverged: np.ndarray
    axes: list[dict[str, Any]]
    sampler: str
    n_samples: int
    seeds: list[int]
    chunk: int
    n_chunks: int
    n_points: int
    loss_spec: LossRecord
    provenance: dict[str, Any]
    evolution: Any = None

    @classmethod
    def of(
        cls,
        result,
        *,
        subject: str,
        space,
        index,
        chunk: int,
        n_chunks: int,
        spec,
        provenance: Mapping[str, Any],
    ) -> ExploreChunk:
        """From a :class:`bnmfit.explore.ExploreResult` of ``space``'s points ``index`` and the
        :class:`bnmfit.losses.LossSpec` it was computed with (its constant added here); of
        :func:`bnmfit.explore.evolve`, ``index`` is every evaluated point's."""
        gen = result.generations
        if gen is not None:
            gen = dataclasses.replace(
                gen, best_loss=gen.best_loss + spec.offset, mean_loss=gen.mean_loss + spec.offset
            )
        return cls(
            subject=subject,
            names=list(space.names),
            points=result.points,
            index=np.asarray(index),
            loss=result.loss + spec.offset,
            mean_loss=result.mean_loss + spec.offset,
            std_loss=result.std_loss,
            fc_r=result.fc_r,
            diverged=result.diverged,
            axes=[
                {"name": a.name, "lo": a.lo, "hi": a.hi, "n": a.n, "scale": a.scale}
                for a in space.axes
            ],
            sampler=space.sampler,
            n_samples=int(space.n_samples),
            seeds=[int(s) for s in result.seeds],
            chunk=int(chunk),
            n_chunks=int(n_chunks),
            n_points=len(result.points) if space.evolutionary else len(space.points()),
            loss_spec=LossRecord.of(spec),
            provenance=dict(provenance),
            evolution=gen,
        )

    def write(self, path: PathLike) -> None:
        _write_exploration(
            path, self, {"index": self.index}, {"chunk": self.chunk, "n_chunks": self.n_chunks}
        )

    @classmethod
    def read(cls, path: PathLike) -> ExploreChunk:
        d, a = read_h5(path)
        _required(path, d, ("names", "index", *_LANDSCAPE_ARRAYS))
        return cls(
            subject=str(a.get("subject", "")),
            names=list(d["names"]),
            index=np.asarray(d["index"], dtype=np.int64),
            **{k: np.asarray(d[k]) for k in _LANDSCAPE_ARRAYS if k != "diverged"},
            diverged=np.asarray(d["diverged"], dtype=bool),
            axes=list(a["axes"]),
            sampler=str(a["sampler"]),
            n_samples=int(a.get("n_samples", 0)),
            seeds=list(a["seeds"]),
            chunk=int(a["chunk"]),
            n_chunks=int(a["n_chunks"]),
            n_points=int(a["n_points"]),
            loss_spec=LossRecord.from_attrs(a),
            provenance=_provenance(a),
            evolution=_read_evolution(d.get("evolution")),
        )

    def space(self):
        """The :class:`bnmfit.explore.Space` the chunk's points come from."""
        return _space(self)

    def _same_exploration(self, other: ExploreChunk) -> bool:
        return (
            self.names == other.names
            and self.seeds == other.seeds
            and self.n_points == other.n_points
            and self.axes == other.axes
            and self.sampler == other.sampler
            and self.provenance.get("config_hash") == other.provenance.get("config_hash")
        )


@dataclasses.dataclass(frozen=True)
class Landscape:
    """``sub-X_explore.h5``: the whole explored space and the refinement starts.

    Attributes:
        names, points, loss, mean_loss, std_loss, fc_r, diverged: as in
            :class:`ExploreChunk`, for every point of the space in order.
        top: indices into ``points`` (all of them, extension included) of the refinement
            starts, best first.
        axes, sampler, n_samples, seeds, n_points, loss_spec: the exploration's
            (``n_points``: of the space, before any extension).
        n_chunks: how many chunk files were joined; starts, min_separation: how ``top`` was
            chosen (no wall time: see :class:`ExploreChunk`).
        extension_round: (P) 0 for the space's points, r for those added by extension round
            r (:func:`bnmfit.explore.extend_landscape`); extend: the rounds allowed
            (``exploration.extend``); extensions: per round done, ``round``, ``points`` (how
            many were added) and ``faces``: ``axis``, ``side`` (lo/hi), ``from``, ``to`` (the
            face's value before and after) and ``domain`` (the parameter's domain ends at
            ``to``). edge: the faces of the final box that the best point lies on (``axis``,
            ``side``, ``at``, ``domain``: whether the domain ends there, so the box could
            not grow); empty when the best point is inside, None when never checked.
        evolution: as in :class:`ExploreChunk` (cmaes/nsga2; None for a fixed space).
        provenance: of the chunks (config hash of this step, versions, seeds, the inputs'
            SHA-256), with ``chunk_config_hash``.
    """

    subject: str
    names: list[str]
    points: np.ndarray
    loss: np.ndarray
    mean_loss: np.ndarray
    std_loss: np.ndarray
    fc_r: np.ndarray
    diverged: np.ndarray
    top: np.ndarray
    axes: list[dict[str, Any]]
    sampler: str
    n_samples: int
    seeds: list[int]
    n_points: int
    loss_spec: LossRecord
    n_chunks: int
    starts: int
    min_separation: float
    extension_round: np.ndarray
    extend: int
    extensions: list[dict[str, Any]]
    edge: list[dict[str, Any]] | None
    provenance: dict[str, Any]
    evolution: Any = None

    @classmethod
    def gather(
        cls,
        chunks: Sequence[ExploreChunk],
        paths: Sequence[PathLike],
        *,
        starts: int,
        min_separation: float,
        config_hash: str,
        inputs: Sequence[PathLike] = (),
    ) -> Landscape:
        """Join the chunk files ``paths`` (read as ``chunks``, in any order) into the whole
        landscape and pick the ``starts`` best points at least ``min_separation`` apart (in
        the unit box of the axes) as refinement starts. ``inputs``: further files the
        landscape depends on (checksummed in its provenance, e.g. the connectome and
        empirical FC of a box extension); its edge is not checked yet (``edge`` None).

        Raises:
            DataError: chunks of different explorations, points given twice or missing,
                several chunks of a cmaes/nsga2 search, or every point diverged.
        """
        from bnmfit.explore import top_k

        first = chunks[0]
        if first.evolution is not None and len(chunks) > 1:
            raise DataError(
                f"{paths[1]}: a {first.sampler} search is one chunk file, got {len(chunks)}; "
                "delete the stale chunks and re-run"
            )
        for path, c in zip(paths, chunks, strict=True):
            if not c._same_exploration(first):
                raise DataError(
                    f"{path}: expected a chunk of the same exploration as {paths[0]} (names, "
                    "axes, sampler, seeds, config hash), got another; delete the stale chunks "
                    "and re-run"
                )
        index = np.concatenate([c.index for c in chunks])
        counts = np.bincount(index, minlength=first.n_points)
        if index.size and counts.max() > 1:
            dup = np.flatnonzero(counts > 1)[:5].tolist()
            raise DataError(f"points {dup} appear in more than one chunk; give each chunk once")
        if (counts == 0).any():
            miss = np.flatnonzero(counts == 0)
            raise DataError(
                f"the chunks cover {first.n_points - miss.size} of {first.n_points} points "
                f"(missing {miss[:5].tolist()}{' ...' if miss.size > 5 else ''}); give every "
                "chunk file"
            )
        order = np.argsort(index, kind="stable")
        data = {
            k: np.concatenate([getattr(c, k) for c in chunks])[order] for k in _LANDSCAPE_ARRAYS
        }
        data["diverged"] = data["diverged"].astype(bool)
        if not np.isfinite(data["mean_loss"]).any():
            raise DataError(
                f"sub-{first.subject}: every explored point diverged (non-finite BOLD); "
                "narrow the exploration ranges, lower simulation.dt or the noise"
            )
        top = top_k(
            data["points"],
            data["mean_loss"],
            starts,
            min_separation=min_separation,
            space=first.space(),
        )
        prov = {
            **first.provenance,
            "inputs": {str(p): sha256(p) for p in (*paths, *inputs)},
            "chunk_config_hash": first.provenance.get("config_hash"),
            "config_hash": config_hash,
        }
        return cls(
            subject=first.subject,
            names=list(first.names),
            **data,
            top=top,
            axes=first.axes,
            sampler=first.sampler,
            n_samples=first.n_samples,
            seeds=first.seeds,
            n_points=first.n_points,
            loss_spec=first.loss_spec,
            n_chunks=len(chunks),
            starts=int(starts),
            min_separation=float(min_separation),
            extension_round=np.zeros(len(data["points"]), dtype=np.int64),
            extend=0,
            extensions=[],
            edge=None,
            provenance=prov,
            evolution=first.evolution,
        )

    def space(self):
        """The :class:`bnmfit.explore.Space` the explored points (before any extension) come
        from."""
        return _space(self)

    def extended(self, result, *, round_: int, faces: Sequence[Mapping[str, Any]]) -> Landscape:
        """The landscape with the points of ``result`` (a :class:`bnmfit.explore.ExploreResult`
        on this landscape's seeds, without the loss constant, which is added here) added as
        extension round ``round_`` beyond ``faces``, and the refinement starts chosen again
        among all points."""
        from bnmfit.explore import top_k

        if list(result.names) != list(self.names) or [int(s) for s in result.seeds] != [
            int(s) for s in self.seeds
        ]:
            raise DataError(
                f"sub-{self.subject}: expected extension points on the landscape's parameters "
                f"({', '.join(self.names)}) and seeds {self.seeds}, got "
                f"{', '.join(result.names)} and {list(result.seeds)}"
            )
        off = self.loss_spec.offset
        new = {
            "loss": result.loss + off,
            "mean_loss": result.mean_loss + off,
            "std_loss": result.std_loss,
            "fc_r": result.fc_r,
            "diverged": result.diverged,
            "points": result.points,
        }
        data = {k: np.concatenate([getattr(self, k), v]) for k, v in new.items()}
        data["extension_round"] = np.concatenate(
            [self.extension_round, np.full(len(result.points), int(round_), dtype=np.int64)]
        )
        top = top_k(
            data["points"],
            data["mean_loss"],
            self.starts,
            min_separation=self.min_separation,
            space=self.space(),
        )
        record = {"round": int(round_), "points": len(result.points), "faces": list(faces)}
        return dataclasses.replace(self, **data, top=top, extensions=[*self.extensions, record])

    def edge_warning(self) -> str | None:
        """The flag "best explored point on the edge of the explored box", with the faces
        and whether the domain ends there; None when it lies inside (or was never
        checked)."""
        if not self.edge:
            return None
        from bnmfit.explore import describe_faces

        grown = f" after {len(self.extensions)} extension(s)" if self.extensions else ""
        return (
            f"best explored point on the edge of the explored box{grown}: "
            f"{describe_faces(self.edge)}"
        )

    def write(self, path: PathLike) -> None:
        _write_exploration(
            path,
            self,
            {"top": self.top, "extension_round": self.extension_round},
            {
                "n_chunks": self.n_chunks,
                "starts": self.starts,
                "min_separation": self.min_separation,
                "extend": self.extend,
                "extensions": self.extensions,
                "edge": self.edge,
            },
        )

    @classmethod
    def read(cls, path: PathLike) -> Landscape:
        d, a = read_h5(path)
        _required(path, d, ("names", *_LANDSCAPE_ARRAYS))
        prov = _provenance(a)
        if "chunk_config_hash" in a:
            prov["chunk_config_hash"] = a["chunk_config_hash"]
        return cls(
            subject=str(a.get("subject", "")),
            names=list(d["names"]),
            **{k: np.asarray(d[k]) for k in _LANDSCAPE_ARRAYS if k != "diverged"},
            diverged=np.asarray(d["diverged"], dtype=bool),
            top=np.asarray(d.get("top") if d.get("top") is not None else [], dtype=np.int64),
            axes=list(a.get("axes") or []),
            sampler=str(a.get("sampler", "")),
            n_samples=int(a.get("n_samples", 0)),
            seeds=list(a.get("seeds") or []),
            n_points=int(a.get("n_points", len(d["points"]))),
            loss_spec=LossRecord.from_attrs(a),
            n_chunks=int(a.get("n_chunks", 1)),
            starts=int(a.get("starts", 0)),
            min_separation=float(a.get("min_separation", 0)),
            extension_round=np.asarray(
                d["extension_round"]
                if d.get("extension_round") is not None
                else np.zeros(len(d["points"])),
                dtype=np.int64,
            ),
            extend=int(a.get("extend", 0)),
            extensions=list(a.get("extensions") or []),
            edge=a.get("edge"),
            provenance=prov,
            evolution=_read_evolution(d.get("evolution")),
        )

    def start_points(self) -> list[dict[str, float]]:
        """The refinement starts as parameter dicts, best first, chosen among all points
        (extension included) (DataError when none)."""
        if len(self.top) == 0:
            raise DataError(
                f"sub-{self.subject}: the exploration has no refinement starts "
                "(every explored point diverged?); re-run it with other ranges"
            )
        return [{n: float(self.points[i, d]) for d, n in enumerate(self.names)} for i in self.top]


_HISTORY = ("loss", "objective", "heldout_loss", "grad_norm", "rejected", "lr_scale")
#: a fit's metrics (:data:`bnmfit.scoring.METRICS` and its validation metrics)
_FIT_METRICS = ("fc_r", "fc_rmse", "fcd_ks", "loss") + tuple(
    f"validation_{k}" for k in ("fc_r", "fc_rmse", "fcd_ks", "loss")
)
_LOSS_VALUED = ("loss", "objective", "heldout_loss", "selection_loss")


@dataclasses.dataclass(frozen=True)
class StageFile:
    """One refinement stage in ``sub-X_fit.h5`` (group ``stage-<i>-<name>``).

    Attributes:
        history: ``loss``, ``objective``, ``heldout_loss`` (configured loss values),
            ``grad_norm``, ``rejected``, ``lr_scale``: (steps, n_starts) arrays (those the
            optimiser records); selection_loss: (n_starts,) what chose the best start.
        traj: global parameters → (steps, n_starts); traj_regional: → (steps, n_starts, N).
        best_start, steps_run, n_rejected, kept_start: see
            :class:`bnmfit.fit.StageRecord` (its wall time goes to the log, not the file).
        heldout_fc_r, heldout_loss: the stage's result on the held-out seeds.
        free: the names of the stage's free parameters.
        scores: the stage's result and start on the held-out seeds, against the target and
            the validation data (:attr:`bnmfit.scoring.Heldout.stages`).
        acceptance: how the stage was judged (:attr:`bnmfit.fit.StageRecord.acceptance`).
        uncertainty: the standard errors of its free numbers
            (:meth:`bnmfit.uncertainty.Uncertainty.to_dict`), empty when not computed.
        screen: the map-start screen it began from (:attr:`bnmfit.fit.StageRecord.screen`),
            empty when it screened none.
    """

    name: str
    optimizer: str
    free: list[str]
    history: dict[str, np.ndarray]
    selection_loss: np.ndarray
    traj: dict[str, np.ndarray]
    traj_regional: dict[str, np.ndarray]
    best_start: int
    steps_run: int
    n_rejected: int
    kept_start: bool
    heldout_fc_r: float
    heldout_loss: float
    scores: dict[str, Any] = dataclasses.field(default_factory=dict)
    acceptance: dict[str, Any] = dataclasses.field(default_factory=dict)
    uncertainty: dict[str, Any] = dataclasses.field(default_factory=dict)
    screen: dict[str, Any] = dataclasses.field(default_factory=dict)

    def _tree(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in self.history.items()}
        out["selection_loss"] = self.selection_loss
        out["traj"] = dict(self.traj)
        if self.traj_regional:
            out["traj_regional"] = dict(self.traj_regional)
        out[_GROUP_ATTRS] = {
            "best_start": self.best_start,
            "steps_run": self.steps_run,
            "n_rejected": self.n_rejected,
            "kept_start": bool(self.kept_start),
            "optimizer": self.optimizer,
            "heldout_fc_r": self.heldout_fc_r,
            "heldout_loss": self.heldout_loss,
            "free": list(self.free),
            "scores": dict(self.scores),
            "acceptance": dict(self.acceptance),
            "uncertainty": dict(self.uncertainty),
            "screen": dict(self.screen),
        }
        return out

    @classmethod
    def _from_tree(cls, name: str, g: Mapping[str, Any]) -> StageFile:
        a = g.get(_GROUP_ATTRS, {})
        return cls(
            name=name,
            optimizer=str(a.get("optimizer", "")),
            free=list(a.get("free") or []),
            history={k: np.asarray(g[k]) for k in _HISTORY if g.get(k) is not None},
            selection_loss=np.asarray(g.get("selection_loss", [])),
            traj={k: np.asarray(v) for k, v in (g.get("traj") or {}).items()},
            traj_regional={k: np.asarray(v) for k, v in (g.get("traj_regional") or {}).items()},
            best_start=int(a.get("best_start", 0)),
            steps_run=int(a.get("steps_run", 0)),
            n_rejected=int(a.get("n_rejected", 0)),
            kept_start=bool(a.get("kept_start", False)),
            heldout_fc_r=float(a.get("heldout_fc_r", float("nan"))),
            heldout_loss=float(a.get("heldout_loss", float("nan"))),
            scores=dict(a.get("scores") or {}),
            acceptance=dict(a.get("acceptance") or {}),
            uncertainty=dict(a.get("uncertainty") or {}),
            screen=dict(a.get("screen") or {}),
        )


def _offset_losses(d: Mapping[str, Any], offset: float) -> dict[str, Any]:
    """``d`` with the loss-valued entries (keys ``loss`` and ``*_loss``) moved by the
    loss expression's constant ``offset`` (the values the optimiser saw omit it)."""
    return {k: v + offset if k == "loss" or k.endswith("_loss") else v for k, v in d.items()}


def _stage_group(i: int, name: str) -> str:
    return f"stage-{i}-{name}"


@dataclasses.dataclass(frozen=True)
class FitFile:
    """``sub-X_fit.h5``: how the fit went, and what the fitted model simulates.

    Attributes:
        stages: one :class:`StageFile` per refinement stage, in order.
        sim_fc, sim_fcd, sim_bold, sim_bold_raw: the fit's simulated FC, FCD (None without
            an FCD window), preprocessed and raw BOLD on the first held-out seed.
        start_names, start_points: the refinement starts (their explored coordinates).
        best_start: which start the fit descends from.
        heldout: the fit's metrics averaged over the held-out seeds: ``fc_r``, ``fc_rmse``,
            ``fcd_ks``, ``loss`` (NaN where unavailable); heldout_seed: the first seed.
        loss_spec: the configured loss. No wall time (see :class:`ExploreChunk`).
        flags: what to know before trusting the fit (:func:`bnmfit.scoring.fit_flags`).
    """

    subject: str
    stages: list[StageFile]
    sim_fc: np.ndarray
    sim_fcd: np.ndarray | None
    sim_bold: np.ndarray
    sim_bold_raw: np.ndarray
    start_names: list[str]
    start_points: np.ndarray
    best_start: int
    heldout: dict[str, float]
    heldout_seed: int
    loss_spec: LossRecord
    provenance: dict[str, Any]
    flags: list[dict[str, str]] = dataclasses.field(default_factory=list)

    @classmethod
    def of(
        cls,
        result,
        heldout,
        *,
        subject: str,
        stages,
        landscape: Landscape,
        spec,
        provenance: Mapping[str, Any],
        flags: Sequence[Mapping[str, str]] = (),
    ) -> FitFile:
        """From a :class:`bnmfit.fit.FitResult` (None when no stage ran) of ``stages``
        started from ``landscape``'s top points, its :class:`bnmfit.scoring.Heldout` and its
        ``flags``; the loss constant of ``spec`` is added to every loss value here."""
        files = []
        for i, rec in enumerate(result.stages if result is not None else ()):
            hist = dict(rec.history)
            params = {k: np.asarray(v) for k, v in (hist.get("params") or {}).items()}
            h = heldout.stages[rec.name]
            # only regional parameters' trajectories are per region (map and group ones are
            # coefficients: the history is not drawn per region, the final values are)
            regional = {p.name for p in stages[i].free if p.scope == "regional"}
            files.append(
                StageFile(
                    name=rec.name,
                    optimizer=rec.optimizer,
                    free=[p.name for p in stages[i].free],
                    history={
                        k: np.asarray(hist[k]) + spec.offset
                        if k in _LOSS_VALUED
                        else np.asarray(hist[k])
                        for k in _HISTORY
                        if hist.get(k) is not None
                    },
                    selection_loss=np.asarray(rec.selection_loss) + spec.offset,
                    traj={k: v for k, v in params.items() if v.ndim == 2},
                    traj_regional={
                        k: v for k, v in params.items() if v.ndim == 3 and k in regional
                    },
                    best_start=int(rec.best_start),
                    steps_run=int(rec.steps_run),
                    n_rejected=int(rec.n_rejected),
                    kept_start=bool(rec.kept_start),
                    heldout_fc_r=h["fc_r"],
                    heldout_loss=h["loss"],
                    scores={k: v for k, v in h.items() if k not in ("kept_start", "judged_on")},
                    acceptance=_offset_losses(rec.acceptance, spec.offset),
                    uncertainty=rec.uncertainty.to_dict() if rec.uncertainty else {},
                    screen=_offset_losses(rec.screen, spec.offset),
                )
            )
        return cls(
            subject=subject,
            stages=files,
            sim_fc=heldout.fc,
            sim_fcd=heldout.fcd,
            sim_bold=heldout.bold,
            sim_bold_raw=heldout.bold_raw,
            start_names=list(landscape.names),
            start_points=landscape.points[landscape.top],
            best_start=result.best_start if result is not None else 0,
            heldout=dict(heldout.metrics),
            heldout_seed=int(heldout.seeds[0]),
            loss_spec=LossRecord.of(spec),
            provenance=dict(provenance),
            flags=[dict(f) for f in flags],
        )

    def write(self, path: PathLike) -> None:
        tree: dict[str, Any] = {
            _stage_group(i, s.name): s._tree() for i, s in enumerate(self.stages)
        }
        tree.update(
            {
                "sim_fc": self.sim_fc,
                "sim_bold": self.sim_bold,
                "sim_bold_raw": self.sim_bold_raw,
                "start_points": self.start_points,
                "start_names": list(self.start_names),
            }
        )
        if self.sim_fcd is not None:
            tree["sim_fcd"] = self.sim_fcd
        nan = float("nan")
        write_h5(
            path,
            tree,
            {
                "subject": self.subject,
                "best_start": self.best_start,
                **{f"heldout_{k}": self.heldout.get(k, nan) for k in _FIT_METRICS},
                "heldout_seed": self.heldout_seed,
                "flags": list(self.flags),
                **self.loss_spec.attrs(),
                **self.provenance,
            },
        )

    @classmethod
    def read(cls, path: PathLike) -> FitFile:
        d, a = read_h5(path)
        _required(path, d, ("sim_fc",))
        groups = []
        for key, g in d.items():
            parts = key.split("-", 2)
            if (
                isinstance(g, dict)
                and len(parts) == 3
                and parts[0] == "stage"
                and parts[1].isdigit()
            ):
                groups.append((int(parts[1]), StageFile._from_tree(parts[2], g)))
        return cls(
            subject=str(a.get("subject", "")),
            stages=[s for _, s in sorted(groups)],
            sim_fc=d["sim_fc"],
            sim_fcd=d.get("sim_fcd"),
            sim_bold=d.get("sim_bold"),
            sim_bold_raw=d.get("sim_bold_raw"),
            start_names=list(d.get("start_names") or []),
            start_points=np.asarray(d.get("start_points", np.zeros((0, 0)))),
            best_start=int(a.get("best_start", 0)),
            heldout={k: float(a.get(f"heldout_{k}", float("nan"))) for k in _FIT_METRICS},
            heldout_seed=int(a.get("heldout_seed", 0)),
            loss_spec=LossRecord.from_attrs(a),
            provenance=_provenance(a),
            flags=list(a.get("flags") or []),
        )


def _plain(v: Any) -> Any:
    """A JSON-able value: float for scalars, list for arrays."""
    a = np.asarray(v, dtype=np.float64)
    return float(a) if a.ndim == 0 else a.tolist()


@dataclasses.dataclass(frozen=True)
class FittedParams:
    """``sub-X_desc-fitted_params.json``: the subject's personalised model.

    Attributes:
        params: fitted parameters (name → number, or list per region / SC matrix).
        fixed: the network's and model's parameters that were not fitted.
        model: the neural mass's name.
        metrics: held-out ``fc_r``, ``fc_rmse``, ``fcd_ks``, ``loss`` of the fit, and
            ``stages``: per stage ``fc_r``, ``loss``, ``start_fc_r``, ``start_loss``
            (the last stage also the fit's metrics).
        best_start, starts: the start the fit descends from, and every start.
        loss: the configured loss (terms, offset, expression).
        warnings: what the user must know about this fit (e.g. a degenerate simulation).
        flags: ``{"code", "message"}`` (:func:`bnmfit.scoring.fit_flags`): not moved, at a
            bound, box edge, stage rejected, not identified.
        uncertainty: per stage, the standard errors and correlations of its free numbers
            (:meth:`bnmfit.uncertainty.Uncertainty.to_dict`).
    """

    subject: str
    params: dict[str, Any]
    fixed: dict[str, Any]
    model: str
    metrics: dict[str, Any]
    best_start: int
    starts: list[dict[str, float]]
    loss: dict[str, Any]
    warnings: list[str]
    provenance: dict[str, Any]
    flags: list[dict[str, str]] = dataclasses.field(default_factory=list)
    uncertainty: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(
        cls,
        fit: FitFile,
        heldout,
        *,
        params: Mapping[str, Any],
        fixed: Mapping[str, Any],
        model: str,
        starts,
        warnings: Sequence[str],
    ):
        """The JSON record of a fit (see :meth:`FitFile.of`)."""
        return cls(
            subject=fit.subject,
            params={k: _plain(v) for k, v in params.items()},
            fixed={k: _plain(v) for k, v in fixed.items()},
            model=model,
            metrics={**heldout.metrics, "stages": heldout.stages},
            best_start=fit.best_start,
            starts=list(starts),
            loss=dataclasses.asdict(fit.loss_spec),
            warnings=list(warnings),
            provenance=fit.provenance,
            flags=list(fit.flags),
            uncertainty={s.name: s.uncertainty for s in fit.stages if s.uncertainty},
        )

    def write(self, path: PathLike) -> None:
        write_json(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: PathLike) -> FittedParams:
        d = read_json(path)
        if not isinstance(d, dict) or "params" not in d:
            raise DataError(
                f"{path}: expected the fitted parameters (a JSON object with "
                "'params'), got another file; re-run the refine step"
            )
        return cls(**{k: d.get(k, _EMPTY.get(k)) for k in _field_names(cls)})


_EMPTY: dict[str, Any] = {
    "subject": "",
    "fixed": {},
    "model": "",
    "metrics": {},
    "best_start": 0,
    "starts": [],
    "loss": {},
    "warnings": [],
    "provenance": {},
    "flags": [],
    "uncertainty": {},
}
