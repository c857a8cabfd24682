"""Atomic result files: HDF5 datasets + attributes, and JSON.

Every writer goes through :func:`atomic_path`: the data are written to a hidden temporary
file in the target's directory, flushed to disk, then renamed over the target in one step.
A failure (an exception, a kill before the rename) never leaves a partial file under the
target name, so Snakemake never sees a half-written output as complete.

HDF5 layout written by :func:`write_h5`: one dataset per key of ``datasets`` (a nested dict
becomes a group); strings and lists of strings are UTF-8 variable-length string datasets;
``None`` is an empty dataset. Root attributes hold ``attrs``: numbers, strings and booleans
as themselves, anything else (lists, dicts, ``None``) as JSON text, listed in the root
attribute ``__json__`` so that :func:`read_h5` decodes them back.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bnmfit.errors import DataError

__all__ = ["atomic_path", "h5_file", "read_h5", "read_json", "write_h5", "write_json"]

_JSON_ATTRS = "__json__"
_COMPRESS_MIN = 4096  # gzip datasets with at least this many elements


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
    import socket

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
        pid = name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                e.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write instead of ``path``; on success it replaces ``path``.

    The temporary file is in the same directory (so the final rename is atomic), is hidden
    (``.<name>.<random>.tmp<suffixes>``, keeping the suffixes so that writers that look at
    the extension still work), and is created empty. On a normal exit it is fsynced and
    renamed over ``path`` (created with the usual permissions); on an exception it is
    deleted and the exception propagates. Parent directories are created. The temporary's
    name carries this host and process id, so a later write of the same target removes what
    a killed writer (SIGKILL) left behind.

    Example::

        with atomic_path("results/x.npy") as tmp:
            np.save(tmp, array)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(target.suffixes[-2:])
    _remove_stale(target, suffixes)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.{_host()}-{os.getpid()}.", suffix=f".tmp{suffixes}",
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


#: errno values of a full disk or quota: reported as one line, naming the file
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


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
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def _dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(obj, indent=indent, default=_json_default, ensure_ascii=False)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as JSON atomically (NumPy scalars/arrays and paths are converted).

    Non-finite floats are written as ``NaN``/``Infinity`` (Python's JSON dialect), so they
    read back unchanged with :func:`read_json`.
    """
    text = _dumps(obj, indent) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; DataError (with the file name) when it is missing or invalid."""
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"{path}: expected a JSON file, got no such file; check the path "
            "(or re-run the step that writes it)"
        )
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(
            f"{path}: expected valid JSON, got a parse error ({e}); "
            "delete the file and re-run the step that writes it"
        ) from None


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


def _write_group(group, datasets: Mapping[str, Any]) -> None:
    import h5py

    str_dt = h5py.string_dtype(encoding="utf-8")
    for key, value in datasets.items():
        key = str(key)
        if isinstance(value, Mapping):
            _write_group(group.create_group(key), value)
        elif value is None:
            group.create_dataset(key, data=h5py.Empty("f8"))
        elif isinstance(value, str):
            group.create_dataset(key, data=value, dtype=str_dt)
        elif _is_str_seq(value):
            arr = np.asarray(value, dtype=object)
            group.create_dataset(key, data=arr.astype(str).astype(object), dtype=str_dt)
        else:
            arr = np.asarray(value)
            if arr.dtype.kind not in "biufc":
                raise TypeError(f"dataset {key!r}: cannot write {arr.dtype} to HDF5")
            kw = {}
            if arr.size >= _COMPRESS_MIN:
                kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
            group.create_dataset(key, data=arr, **kw)


@contextlib.contextmanager
def h5_file(path: str | os.PathLike) -> Iterator[Any]:
    """An ``h5py.File`` open for writing that becomes ``path`` atomically when the block ends.

    The file is built in memory and written by Python in one piece (through
    :func:`atomic_path`): a full disk is then a clean ``OSError`` (reported as one line)
    rather than an HDF5 driver failure, which can crash the process. Result files are small
    (MBs), so memory is not a concern.
    """
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        yield f
    data = buf.getbuffer()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def write_h5(
    path: str | os.PathLike,
    datasets: Mapping[str, Any],
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write ``datasets`` (name → array / str / list of str / None / nested dict) and root
    ``attrs`` to an HDF5 file, atomically (see the module docstring for the layout)."""
    with h5_file(path) as f:
        _write_group(f, datasets)
        json_keys = []
        for k, v in (attrs or {}).items():
            if isinstance(v, (bool, np.bool_, str)) or (
                isinstance(v, (int, float, np.integer, np.floating))
            ):
                f.attrs[k] = v
            else:
                f.attrs[k] = _dumps(v)
                json_keys.append(k)
        if json_keys:
            f.attrs[_JSON_ATTRS] = _dumps(json_keys)


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


def _read_group(group) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {}
    for k, item in group.items():
        out[k] = _read_group(item) if isinstance(item, h5py.Group) else _read_value(item)
    return out


def _attr(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def read_h5(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a file written by :func:`write_h5`: ``(datasets, attrs)``.

    Arrays come back as NumPy arrays, scalars as Python numbers, strings as ``str``, string
    datasets as ``list[str]``, groups as dicts; JSON attributes are decoded.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"{path}: expected an HDF5 file, got no such file; check the path "
            "(or re-run the step that writes it)"
        )
    try:
        with h5py.File(p, "r") as f:
            data = _read_group(f)
            raw = {k: _attr(v) for k, v in f.attrs.items()}
    except OSError as e:
        raise DataError(
            f"{path}: expected an HDF5 file, got an unreadable file ({e}); "
            "delete it and re-run the step that writes it"
        ) from None
    json_keys = json.loads(raw.pop(_JSON_ATTRS, "[]"))
    attrs = {k: (json.loads(v) if k in json_keys else v) for k, v in raw.items()}
    return data, attrs
