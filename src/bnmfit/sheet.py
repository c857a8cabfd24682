"""The subjects sheet from derivative folders: find each subject's files and pair them.

:func:`make_sheet` looks through the folders it is given, pairs each subject's structural
connectome (SC) with its time series (or FC), and returns a :class:`Sheet`: one
:class:`SubjectPairing` per subject found — its sheet row, or what is missing — and a line
per folder saying what was found there. :func:`write_sheet` validates the rows against the
subjects schema (:func:`bnmfit.config.validate_subjects`) and writes the TSV.

Sources (any combination: a subject is paired when one source gives its SC and one its time
series or FC; subjects are matched by label):

* ``bids_sc`` — QSIRecon: ``sub-X[_ses-Y]_..._connectivity.mat`` anywhere below the folder;
  the atlas (``atlas``, needed when the file holds several) and the weights and tract-length
  measures (``measure``, ``lengths_measure``, needed when the file holds several of a kind; a
  measure with ``length`` in its name is a tract length) are chosen inside the file and
  written to the sheet columns atlas, measure and lengths_measure. Without a ``.mat``, BIDS
  connectivity tables without a task entity (``sub-X_..._relmat.tsv``): the one with
  ``length`` in an entity value is sc_lengths, the other sc_weights (``measure`` and
  ``lengths_measure`` then choose by the desc/meas/stat value).
* ``bids_func`` — XCP-D (or any BIDS derivative): ``sub-X[_ses-Y]_task-<task>[_run-Z]_...
  _timeseries.tsv[.gz]`` or ``.ptseries.nii`` (``stat`` absent or ``mean``) are bold; a
  ``..._relmat.tsv`` with the task (``stat`` absent or ``pearsoncorrelation``, not
  ``desc-<N>volumes``) is fc, used only for a subject without time series. Files with an
  ``atlas-``/``seg-`` entity must match ``func_atlas`` (default ``atlas``); ``match``
  (``space-fsLR``, ...) entities must be present and equal.
* ``hcp`` — the HCP layout: ``<hcp>/<subject>/MNINonLinear/Results/rfMRI_REST<k>_<dir>/
  *.ptseries.nii`` (one per run folder; ``func_atlas``/``atlas`` choose by a part of the
  name) and the SC in ``<hcp>/<subject>/connectome/``: one weights file and at most one file
  with ``length`` in its name (any SC format: ``.pconn.nii``, TSV/CSV, ``.npy``, ``.mat``).
  REST1 is bold, REST2 validation_bold.
* ``tvb`` — a folder of TVB connectivity zips, ``<subject>*.zip`` or ``sub-<subject>*.zip``:
  sc_weights and sc_lengths are the zip, sc_format tvb.
* ``func`` — a flat folder of time series found by subject label: BIDS-named files follow the
  ``bids_func`` rules; any other BOLD file (TSV/CSV, ``.npy``/``.npz``, ``.mat``,
  ``.ptseries.nii``) whose name starts with the label of a subject that has an SC (``01_...``
  or ``sub-01_...``) is one run, in name order.

Runs and sessions: a subject's runs are ordered by session, then run (natural order: run-2
before run-10); the first is bold (or fc), the second validation_bold (or validation_fc),
and further runs are reported as not used. Of several SC sessions the first is used (and
the others reported). Nothing ambiguous is guessed: several atlases, measures or variants of
one run (another space, desc, ...) leave the subject unpaired, with the option that chooses.

TR: a file that carries its TR (its own JSON sidecar, a CIFTI header) needs no sheet column;
otherwise the column tr is ``tr`` when given, else the RepetitionTime of a ``*_bold.json``
of the same run in the same folder (XCP-D's denoised-BOLD sidecar). A run with no TR
anywhere is paired with a note (the workflow then needs ``bold.default_tr``).

Paths in the rows are relative to ``base`` (the directory the workflow will run in).

Why not pybids: the sheet maker needs only the entities in file names (sub, ses, task, run,
atlas/seg, space, ...), which a regular expression parses exactly. pybids would add a heavy
dependency (SQLAlchemy, formulaic, bids-validator) and index whole derivative trees into a
database, it wants a ``dataset_description.json`` in every folder, and its derivative
configuration does not know XCP-D's and QSIRecon's entities (atlas, seg, stat) in every
version; HCP folders and TVB zips are not BIDS at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bnmfit.errors import ConfigError, DataError, short_list

__all__ = ["Sheet", "SubjectPairing", "make_sheet", "write_sheet"]

PathLike = str | os.PathLike

# entities that identify a run (they are the same in every derivative of the run)
_SOURCE_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "part")
_RUN_ORDER = ("ses", "run", "acq", "ce", "rec", "dir", "echo", "part")
_ENTITY = re.compile(r"^([a-zA-Z]+)-([a-zA-Z0-9]+)$")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
_LEADING_LABEL = re.compile(r"^(?:sub-)?([A-Za-z0-9]+)")
_HCP_RUN = re.compile(r"^rfMRI_REST(\d+)_([A-Za-z]+)$")
_VOLUMES_DESC = re.compile(r"^\d+volumes$")
# preferred extensions among files of one run and variant (XCP-D writes a TSV and a CIFTI)
_EXTENSIONS = (".tsv", ".tsv.gz", ".csv", ".csv.gz", ".ptseries.nii", ".mat")


# =========================================================================== records


@dataclass(frozen=True)
class SubjectPairing:
    """What the sheet maker found for one subject and what it made of it.

    Attributes:
        subject: the label (without ``sub-``).
        row: the sheet row (column → value, paths relative to the base directory), or
            ``None`` when the subject could not be paired.
        found: every file found for the subject (relative to the base directory).
        notes: the choices made (runs used and not used, where the TR comes from, ...).
        missing: why there is no row (what is missing or ambiguous, and how to choose).
    """

    subject: str
    row: Mapping[str, str | float] | None
    found: tuple[str, ...]
    notes: tuple[str, ...] = ()
    missing: str = ""

    @property
    def paired(self) -> bool:
        return self.row is not None

    def lines(self) -> list[str]:
        """The report of this subject: a head line, then one indented line per note."""
        if self.row is None:
            head = f"sub-{self.subject}: not paired: {self.missing}"
            if self.found:
                head += f"; found {short_list(self.found, 6)}"
        else:
            cells = ", ".join(f"{k} {v}" for k, v in self.row.items() if k != "subject")
            head = f"sub-{self.subject}: paired: {cells}"
        return [head] + [f"    {note}" for note in self.notes]


@dataclass(frozen=True)
class Sheet:
    """The pairings of every subject found (in natural label order) and, per source folder,
    a line saying what was found there."""

    subjects: tuple[SubjectPairing, ...]
    sources: tuple[str, ...]

    @property
    def rows(self) -> list[dict[str, str | float]]:
        """The sheet rows of the paired subjects."""
        return [dict(p.row) for p in self.subjects if p.row is not None]

    def report(self) -> list[str]:
        """What was found, paired and not paired, as lines of text."""
        lines = list(self.sources)
        for p in self.subjects:
            lines += p.lines()
        n = sum(p.paired for p in self.subjects)
        lines.append(f"{n} of {len(self.subjects)} subjects paired")
        return lines


# =========================================================================== internals


class _Unpaired(Exception):
    """A subject that cannot be paired; the message says why and how to choose."""


@dataclass(frozen=True)
class _Options:
    atlas: str | None
    func_atlas: str | None
    measure: str | None
    lengths_measure: str | None
    task: str
    match: tuple[tuple[str, str], ...]
    tr: float | None
    base: Path

    def rel(self, path: Path) -> str:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(self.base))).as_posix()


@dataclass(frozen=True)
class _Name:
    """A BIDS file name taken apart: entities, suffix and extension."""

    path: Path
    entities: Mapping[str, str]
    suffix: str
    ext: str

    @property
    def subject(self) -> str:
        return self.entities["sub"]

    def run_key(self) -> tuple:
        return tuple(_natural(self.entities.get(e, "")) for e in _RUN_ORDER)

    def run_label(self) -> str:
        """``ses-1_task-rest_run-2``: the run's entities after sub (empty when none)."""
        return "_".join(
            f"{e}-{self.entities[e]}" for e in _SOURCE_ENTITIES[1:] if e in self.entities
        )

    def where(self) -> str:
        """The subject and run, for messages."""
        return " ".join(x for x in (f"sub-{self.subject}", self.run_label()) if x)

    def source(self) -> tuple[str, ...]:
        return tuple(self.entities.get(e, "") for e in _SOURCE_ENTITIES)

    def variant(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, v) for k, v in self.entities.items() if k not in _SOURCE_ENTITIES))


@dataclass(frozen=True)
class _SC:
    weights: Path
    lengths: Path | None
    columns: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Run:
    path: Path
    kind: str  # bold or fc
    label: str
    tr: float | None  # the TR the sheet column must give (None: carried by the file, or unknown)
    tr_from: str  # "file", "tr", a sibling JSON's name, or "" (unknown)


@dataclass(frozen=True)
class _Found:
    """What one source found for one subject."""

    files: tuple[Path, ...]
    sc: _SC | None = None
    runs: tuple[_Run, ...] = ()
    notes: tuple[str, ...] = ()
    problem: str = ""


def _natural(text: str) -> tuple:
    """Sort key that orders the digits in ``text`` as numbers (run-2 before run-10)."""
    return tuple(int(t) if i % 2 else t.lower() for i, t in enumerate(re.split(r"(\d+)", text)))


def _parse(path: Path) -> _Name | None:
    """The BIDS entities, suffix and extension of a file name; None when the name is not
    ``sub-<label>[_<key>-<label>]..._<suffix><extension>``."""
    stem, dot, rest = path.name.partition(".")
    parts = stem.split("_")
    entities: dict[str, str] = {}
    for part in parts[:-1]:
        m = _ENTITY.match(part)
        if m is None or m.group(1) in entities:
            return None
        entities[m.group(1)] = m.group(2)
    if len(parts) < 2 or "sub" not in entities or "-" in parts[-1]:
        return None
    return _Name(path, entities, parts[-1], (dot + rest).lower())


def _files(root: Path, recursive: bool) -> list[Path]:
    """Regular files below ``root`` (or in it), hidden files and folders left out."""
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        p
        for p in found
        if p.is_file() and not any(x.startswith(".") for x in p.relative_to(root).parts)
    )


def _by_subject(items: Iterable, subject) -> dict[str, list]:
    out: dict[str, list] = {}
    for item in items:
        out.setdefault(subject(item), []).append(item)
    return out


def _atlas_ok(name: _Name, atlas: str | None) -> bool:
    return atlas is None or all(name.entities.get(k, atlas) == atlas for k in ("atlas", "seg"))


def _one_variant(names: Sequence[_Name], what: str, where: str, atlas_option: str) -> _Name:
    """The one file among the variants of a run (files that differ in non-run entities such as
    space, atlas or desc); a TSV is preferred to the CIFTI copy of the same variant."""
    variants = _by_subject(names, _Name.variant)
    if len(variants) > 1:
        keys = sorted({k for v in variants for k, _ in v})
        differ = []
        for k in keys:
            values = sorted({dict(v).get(k, "(none)") for v in variants}, key=_natural)
            if len(values) > 1:
                how = atlas_option if k in ("atlas", "seg") else f"--match {k}-<label>"
                differ.append(f"{k} ({', '.join(values)}; choose with {how})")
        raise _Unpaired(f"{where}: {len(variants)} {what} differing in " + ", ".join(differ))
    (group,) = variants.values()
    return min(group, key=lambda n: (_rank(n.ext), n.path.name))


def _names(paths: Iterable[Path]) -> str:
    return ", ".join(p.name for p in paths)


def _rank(ext: str) -> int:
    return _EXTENSIONS.index(ext) if ext in _EXTENSIONS else len(_EXTENSIONS)


# =========================================================================== SC sources


def _mat_names(path: Path) -> list[str]:
    """The variable names of a MATLAB file (without reading the arrays of a v4-v7.2 file)."""
    import scipy.io

    from bnmfit.io._arrays import load_container

    try:
        return [name for name, _, _ in scipy.io.whosmat(path)]
    except (NotImplementedError, ValueError, OSError, scipy.io.matlab.MatReadError):
        return list(load_container(path, "mat"))  # v7.3 (HDF5), or a DataError that says why


def _choose(
    options: Sequence[str],
    given: str | None,
    pool: Sequence[str],
    what: str,
    option: str,
    where: str,
) -> str | None:
    """``given`` when it is one of ``options``; else the only one in ``pool`` (None if empty)."""
    if given is not None:
        if given not in options:
            raise _Unpaired(
                f"{where}: no {what} {given!r} (there are {short_list(options, 20)}); "
                f"check {option}"
            )
        return given
    if len(pool) > 1:
        raise _Unpaired(
            f"{where}: more than one {what} ({short_list(pool, 20)}); choose one with {option}"
        )
    return pool[0] if pool else None


def _qsirecon(path: Path, opts: _Options) -> tuple[_SC, list[str]]:
    from bnmfit.io._arrays import _QSI_LABELS, qsirecon_measures

    where = opts.rel(path)
    names = _mat_names(path)
    atlases = sorted(m.group(1) for k in names if (m := _QSI_LABELS.match(k)))
    if not atlases:
        raise _Unpaired(
            f"{where}: no QSIRecon atlas_<atlas>_region_labels variable (variables "
            f"{short_list(names)}); give QSIRecon's *_connectivity.mat"
        )
    atlas = _choose(atlases, opts.atlas, atlases, "atlas", "--atlas", where)
    measures = qsirecon_measures(dict.fromkeys(names), atlas, atlases)
    lengthy = [m for m in measures if "length" in m]
    weights = _choose(
        measures,
        opts.measure,
        [m for m in measures if "length" not in m],
        "weights measure",
        "--measure",
        where,
    )
    if weights is None:
        raise _Unpaired(
            f"{where}: no weights measure for atlas {atlas} (only {short_list(lengthy)})"
        )
    lengths = _choose(
        measures, opts.lengths_measure, lengthy, "tract-length measure", "--lengths-measure", where
    )
    columns = [("atlas", atlas), ("measure", weights)]
    notes = []
    if lengths is None:
        notes.append(
            f"{where}: no tract-length measure for atlas {atlas}: no sc_lengths (no delays)"
        )
    else:
        columns.append(("lengths_measure", lengths))
    return _SC(path, path if lengths else None, tuple(columns)), notes


def _sc_relmats(names: Sequence[_Name], opts: _Options, where: str) -> _SC:
    def values(n: _Name) -> list[str]:
        return [n.entities[k] for k in ("desc", "meas", "stat") if k in n.entities]

    def is_lengths(n: _Name) -> bool:
        return any("length" in v.lower() for k, v in n.variant())

    def pick(group: list[_Name], given: str | None, what: str, option: str) -> _Name | None:
        if given is not None:
            group = [n for n in group if given in values(n)]
            if not group:
                raise _Unpaired(
                    f"{where}: no {what} relmat with desc/meas/stat {given!r}; check {option}"
                )
        return _one_variant(group, f"{what} relmats", where, "--atlas") if group else None

    weights = pick([n for n in names if not is_lengths(n)], opts.measure, "weights", "--measure")
    if weights is None:
        raise _Unpaired(f"{where}: a tract-length relmat but no weights relmat")
    lengths = pick(
        [n for n in names if is_lengths(n)],
        opts.lengths_measure,
        "tract-length",
        "--lengths-measure",
    )
    return _SC(weights.path, lengths.path if lengths else None)


def _bids_sc(root: Path, opts: _Options) -> tuple[dict[str, _Found], str]:
    names = [n for p in _files(root, True) if (n := _parse(p)) and _atlas_ok(n, opts.atlas)]
    mats = [n for n in names if n.suffix == "connectivity" and n.ext == ".mat"]
    relmats = [
        n
        for n in names
        if n.suffix == "relmat"
        and "task" not in n.entities
        and n.ext in (".tsv", ".tsv.gz", ".csv")
    ]
    found = {}
    for subject, group in _by_subject(mats + relmats, lambda n: n.subject).items():
        files = tuple(n.path for n in group)
        try:
            candidates = [n for n in group if n.ext == ".mat"] or group
            sessions = _by_subject(candidates, _Name.run_key)
            first = sessions[min(sessions)]
            where = first[0].where()
            notes = []
            if candidates[0].ext == ".mat":
                sc, notes = _qsirecon(
                    _one_variant(first, "connectivity .mat files", where, "--atlas").path, opts
                )
            else:
                sc = _sc_relmats(first, opts, where)
            others = [sessions[k][0].run_label() for k in sorted(sessions) if k != min(sessions)]
            if others:
                notes.append(f"SC of {first[0].run_label()} used; not used: {', '.join(others)}")
            found[subject] = _Found(files, sc=sc, notes=tuple(notes))
        except (_Unpaired, DataError) as e:
            found[subject] = _Found(files, problem=str(e))
    line = (
        f"bids-sc {root}: {len(mats)} *_connectivity.mat and {len(relmats)} SC relmat files "
        f"of {len(found)} subjects"
    )
    return found, line


def _tvb(root: Path, opts: _Options) -> tuple[dict[str, _Found], str]:
    zips = [p for p in _files(root, False) if p.name.lower().endswith(".zip")]
    found = {}
    for subject, group in _by_subject(zips, _label_of).items():
        if len(group) > 1:
            problem = f"sub-{subject}: several TVB zips ({_names(group)}); keep one per subject"
            found[subject] = _Found(tuple(group), problem=problem)
        else:
            sc = _SC(group[0], group[0], (("sc_format", "tvb"),))
            found[subject] = _Found(tuple(group), sc=sc)
    return found, f"tvb {root}: {len(zips)} zips of {len(found)} subjects"


def _label_of(path: Path) -> str:
    """The subject label a zip's name starts with (after an optional ``sub-``)."""
    m = _LEADING_LABEL.match(path.name)
    return m.group(1) if m else ""


# =========================================================================== time series


def _bold_formats() -> tuple[str, ...]:
    from bnmfit.io._bold import BOLD_FORMATS

    return tuple(f for f in BOLD_FORMATS if f != "nifti")  # a 4-D NIfTI needs its dseg


def _kind(n: _Name, opts: _Options) -> str | None:
    """bold, fc or None (not a time series or FC of the chosen task, atlas and match)."""
    if not _atlas_ok(n, opts.func_atlas) or any(n.entities.get(k) != v for k, v in opts.match):
        return None
    stat, task = n.entities.get("stat"), n.entities.get("task")
    if n.suffix == "timeseries" and n.ext in (".tsv", ".tsv.gz", ".ptseries.nii"):
        return "bold" if stat in (None, "mean") and task in (None, opts.task) else None
    if n.suffix == "relmat" and n.ext in (".tsv", ".tsv.gz") and task == opts.task:
        volumes = _VOLUMES_DESC.match(n.entities.get("desc", ""))
        return "fc" if stat in (None, "pearsoncorrelation") and not volumes else None
    return None


def _sidecar_tr(path: Path) -> float | None:
    """The TR in s that the JSON sidecar of ``path`` (or the JSON file ``path``) gives, read
    as the BOLD reader reads it; None without a sidecar or a TR in it."""
    from bnmfit.io import resolve_tr
    from bnmfit.io._files import read_sidecar

    side = read_sidecar(path)
    if side is None or all(side.get(k) is None for k in ("RepetitionTime", "SamplingFrequency")):
        return None
    return resolve_tr(path, None, None)[0]


def _tr(path: Path, siblings: Sequence[Path], opts: _Options) -> tuple[float | None, str]:
    """The TR the sheet must give for ``path`` and where it comes from (module docstring)."""
    if path.name.lower().endswith(".ptseries.nii") or _sidecar_tr(path) is not None:
        return None, "file"
    if opts.tr is not None:
        return opts.tr, "tr"
    values = {p.name: _sidecar_tr(p) for p in siblings}
    values = {k: v for k, v in values.items() if v is not None}
    if len(set(values.values())) > 1:
        raise _Unpaired(
            f"{opts.rel(path)}: the *_bold.json files of its run give different TRs "
            f"({', '.join(f'{k}: {v:g} s' for k, v in values.items())}); give the TR with --tr"
        )
    if values:
        name, value = next(iter(values.items()))
        return value, name
    return None, ""


def _bids_runs(names: Sequence[_Name], jsons: Mapping, opts: _Options) -> tuple[_Run, ...]:
    """One file per run of a subject (time series, else FC), in session/run order."""
    kind = "bold" if any(_kind(n, opts) == "bold" for n in names) else "fc"
    runs = _by_subject([n for n in names if _kind(n, opts) == kind], _Name.run_key)
    what = "time series" if kind == "bold" else "FC relmats"
    out = []
    for key in sorted(runs):
        n = _one_variant(runs[key], what, runs[key][0].where(), "--func-atlas (or --atlas)")
        tr, tr_from = _tr(n.path, jsons.get((n.path.parent, n.source()), ()), opts)
        out.append(_Run(n.path, kind, n.run_label() or n.path.name, tr, tr_from))
    return tuple(out)


def _func(
    root: Path, opts: _Options, recursive: bool, known: Iterable[str] = ()
) -> tuple[dict[str, _Found], str]:
    """Time series of a BIDS derivative tree (``recursive``) or of a flat folder, where a
    file not named by BIDS belongs to the subject of ``known`` (labels with an SC) that its
    name starts with."""
    from bnmfit.io._files import detect_format

    files = _files(root, recursive)
    names = [n for p in files if (n := _parse(p))]
    jsons: dict[tuple, list[Path]] = {}
    for n in names:
        if n.suffix == "bold" and n.ext == ".json":
            jsons.setdefault((n.path.parent, n.source()), []).append(n.path)
    bids = [n for n in names if _kind(n, opts)]
    plain: dict[str, list[Path]] = {}
    unknown = 0
    parsed = {n.path for n in names}
    for p in [] if recursive else [p for p in files if p not in parsed]:
        try:
            detect_format(p, None, _bold_formats(), "BOLD")
        except DataError:  # not a BOLD file name
            continue
        owner = next(
            (s for s in known if re.match(rf"(sub-)?{re.escape(s)}(?![A-Za-z0-9])", p.name)), None
        )
        if owner is None:
            unknown += 1
        else:
            plain.setdefault(owner, []).append(p)
    found = {}
    groups = _by_subject(bids, lambda n: n.subject)
    for subject in set(groups) | set(plain):
        mine = plain.get(subject, [])
        files_s = tuple(n.path for n in groups.get(subject, ())) + tuple(mine)
        try:
            runs = _bids_runs(groups.get(subject, ()), jsons, opts)
            runs += tuple(_Run(p, "bold", p.name, *_tr(p, (), opts)) for p in mine)
            found[subject] = _Found(files_s, runs=runs)
        except (_Unpaired, DataError) as e:
            found[subject] = _Found(files_s, problem=str(e))
    n_plain = sum(map(len, plain.values()))
    n_bold = sum(_kind(n, opts) == "bold" for n in bids) + n_plain
    n_fc = len(bids) + n_plain - n_bold
    label = "bids-func" if recursive else "func"
    line = (
        f"{label} {root}: {n_bold} time series and {n_fc} FC files (task-{opts.task}) of "
        f"{len(found)} subjects"
    )
    if unknown:
        line += f"; {unknown} files left out: their names start with no subject label of the SC"
    return found, line


def _hcp(root: Path, opts: _Options) -> tuple[dict[str, _Found], str]:
    from bnmfit.io._files import detect_format
    from bnmfit.io._matrix import MATRIX_FORMATS

    def named(paths: Iterable[Path], part: str | None) -> list[Path]:
        return [p for p in paths if part is None or part.lower() in p.name.lower()]

    dirs = sorted(
        (
            d
            for d in root.iterdir()
            if (d / "MNINonLinear" / "Results").is_dir() or (d / "connectome").is_dir()
        ),
        key=lambda d: _natural(d.name),
    )
    found = {}
    skipped = [d.name for d in dirs if not _LABEL.match(d.name)]
    for d in dirs:
        if not _LABEL.match(d.name):
            continue
        results = d / "MNINonLinear" / "Results"
        run_dirs = sorted(
            (r for r in (results.iterdir() if results.is_dir() else ()) if _HCP_RUN.match(r.name)),
            key=lambda r: (int(_HCP_RUN.match(r.name).group(1)), _natural(r.name)),
        )
        conn = d / "connectome"
        sc_files = []
        for p in _files(conn, False) if conn.is_dir() else ():
            try:
                detect_format(p, None, MATRIX_FORMATS, "a matrix")
                sc_files.append(p)
            except DataError:
                continue
        sc_files = named(sc_files, opts.atlas)
        series = {r: named(sorted(r.glob("*.ptseries.nii")), opts.func_atlas) for r in run_dirs}
        files = tuple(sc_files) + tuple(p for s in series.values() for p in s)
        empty = [r.name for r, paths in series.items() if not paths]
        notes = (f"no .ptseries.nii in {', '.join(empty)}",) if empty else ()
        try:
            runs = []
            for r, paths in series.items():
                if len(paths) > 1:
                    raise _Unpaired(
                        f"{opts.rel(r)}: several .ptseries.nii ({_names(paths)}); choose one "
                        "with --func-atlas (a part of its name)"
                    )
                runs += [_Run(p, "bold", r.name, None, "file") for p in paths]
            # REST1 → bold, REST2 → validation: the first run of another REST session second
            rest = [_HCP_RUN.match(r.label).group(1) for r in runs]
            other = next((i for i, k in enumerate(rest) if k != rest[0]), None)
            if other is not None:
                runs.insert(1, runs.pop(other))
            lengths = [p for p in sc_files if "length" in p.name.lower()]
            weights = [p for p in sc_files if p not in lengths]
            for what, group in (("weights", weights), ("tract-length", lengths)):
                if len(group) > 1:
                    raise _Unpaired(
                        f"{opts.rel(conn)}: several {what} files ({_names(group)}); keep one, "
                        "or choose with --atlas (a part of the name)"
                    )
            sc = _SC(weights[0], lengths[0] if lengths else None) if weights else None
            found[d.name] = _Found(files, sc=sc, runs=tuple(runs), notes=notes)
        except _Unpaired as e:
            found[d.name] = _Found(files, problem=str(e))
    line = f"hcp {root}: {len(found)} subject folders"
    if skipped:
        line += f" (left out, not a label of letters and digits: {short_list(skipped)})"
    return found, line


# =========================================================================== pairing


def _pair(subject: str, offers: Sequence[tuple[str, _Found]], opts: _Options) -> SubjectPairing:
    """The pairing of one subject from what each source found for it."""
    found = tuple(opts.rel(p) for _, f in offers for p in f.files)
    notes = [n for _, f in offers for n in f.notes]

    def unpaired(why: str) -> SubjectPairing:
        return SubjectPairing(subject, None, found, tuple(notes), why)

    problems = [f.problem for _, f in offers if f.problem]
    if problems:
        return unpaired("; ".join(problems))
    scs = [(src, f.sc) for src, f in offers if f.sc is not None]
    runs = [(src, f.runs) for src, f in offers if f.runs]
    if not scs:
        return unpaired("no structural connectome found (SC)")
    if not runs:
        return unpaired(f"no time series or FC found (task-{opts.task})")
    for what, used in (("SC", scs), ("time series", runs)):
        if len(used) > 1:
            notes.append(
                f"{what} of {used[0][0]} used; not used: those of "
                f"{', '.join(src for src, _ in used[1:])}"
            )
    sc, chosen = scs[0][1], list(runs[0][1])
    kind = chosen[0].kind
    if len(chosen) > 2:
        notes.append(
            f"{len(chosen)} runs: used {chosen[0].label} ({kind}) and {chosen[1].label} "
            f"(validation_{kind}); not used: {', '.join(r.label for r in chosen[2:])}"
        )
    chosen = chosen[:2]
    if len(chosen) == 2 and len({r.tr for r in chosen if r.tr is not None}) > 1:
        notes.append(
            f"{chosen[1].label} not used for validation: its TR ({chosen[1].tr:g} s) "
            f"differs from that of {chosen[0].label}, and the sheet has one tr column"
        )
        chosen = chosen[:1]
    if len(chosen) == 1:
        notes.append(f"one run: no validation_{kind} (the fit holds out the run's last part)")
    row: dict[str, str | float] = {"subject": subject, "sc_weights": opts.rel(sc.weights)}
    if sc.lengths is not None:
        row["sc_lengths"] = opts.rel(sc.lengths)
    row.update(sc.columns)
    row[kind] = opts.rel(chosen[0].path)
    if len(chosen) == 2:
        row[f"validation_{kind}"] = opts.rel(chosen[1].path)
    trs = [r.tr for r in chosen if r.tr is not None]
    if trs:
        row["tr"] = trs[0]
    for r in chosen:
        if r.tr_from not in ("file", "tr", ""):
            notes.append(f"TR {r.tr:g} s of {r.label} from {r.tr_from}")
        elif r.tr_from == "":
            notes.append(
                f"no TR for {opts.rel(r.path)} (no sidecar, no *_bold.json of its run "
                "beside it): give --tr, or set bold.default_tr in the config"
            )
    return SubjectPairing(subject, row, found, tuple(notes))


def _parse_match(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        m = _ENTITY.match(item)
        if m is None:
            raise ConfigError(
                f"--match {item!r}: expected an entity as key-label (letters and digits), e.g. "
                "space-fsLR; fix the value"
            )
        out.append((m.group(1), m.group(2)))
    return tuple(out)


def make_sheet(
    *,
    bids_sc: PathLike | None = None,
    bids_func: PathLike | None = None,
    hcp: PathLike | None = None,
    tvb: PathLike | None = None,
    func: PathLike | None = None,
    atlas: str | None = None,
    func_atlas: str | None = None,
    measure: str | None = None,
    lengths_measure: str | None = None,
    task: str = "rest",
    match: Sequence[str] = (),
    tr: float | None = None,
    base: PathLike = ".",
) -> Sheet:
    """Find the subjects in derivative folders and pair their files into sheet rows.

    Args:
        bids_sc: a QSIRecon derivative folder (``*_connectivity.mat``, or SC relmats).
        bids_func: an XCP-D/BIDS derivative folder (``*_timeseries.tsv``, ``*_relmat.tsv``).
        hcp: a folder of HCP subject folders (time series and SC, module docstring).
        tvb: a folder of TVB connectivity zips named by subject.
        func: a flat folder of time series named by subject.
        atlas: the atlas of the SC (QSIRecon atlas; atlas/seg entity; a part of HCP names).
        func_atlas: the atlas of the time series when named otherwise (default: ``atlas``).
        measure, lengths_measure: the SC weights and tract-length measures.
        task: the BIDS task of the time series.
        match: ``key-label`` entities the time-series file names must carry (``space-fsLR``).
        tr: the TR in seconds of time series that carry none.
        base: the directory the paths of the rows are relative to.

    Returns:
        the :class:`Sheet` (rows, and what could not be paired and why).

    Raises:
        ConfigError: no SC or no time-series folder given, a folder that does not exist, a
            malformed ``match`` or ``tr``.
    """
    folders = {"bids-sc": bids_sc, "bids-func": bids_func, "hcp": hcp, "tvb": tvb, "func": func}
    for name, folder in folders.items():
        if folder is not None and not Path(folder).is_dir():
            raise ConfigError(
                f"--{name} {folder}: expected a folder, got no such folder; check the path"
            )
    if bids_sc is None and hcp is None and tvb is None:
        raise ConfigError(
            "expected a folder of structural connectomes, got none; give --bids-sc, --hcp or --tvb"
        )
    if bids_func is None and hcp is None and func is None:
        raise ConfigError(
            "expected a folder of time series, got none; give --bids-func, --hcp or --func"
        )
    if tr is not None and not tr > 0:
        raise ConfigError(f"--tr {tr}: expected the TR in seconds (> 0); fix the value")
    if not _LABEL.match(task):
        raise ConfigError(
            f"--task {task!r}: expected a BIDS label (letters and digits); fix the value"
        )
    opts = _Options(
        atlas,
        func_atlas or atlas,
        measure,
        lengths_measure,
        task,
        _parse_match(match),
        tr,
        Path(base),
    )
    sources: list[tuple[str, dict[str, _Found]]] = []
    lines = []
    for name, folder, scan in (  # SC first: a flat folder's names are matched to its labels
        ("bids-sc", bids_sc, lambda r: _bids_sc(r, opts)),
        ("hcp", hcp, lambda r: _hcp(r, opts)),
        ("tvb", tvb, lambda r: _tvb(r, opts)),
        ("bids-func", bids_func, lambda r: _func(r, opts, True)),
        ("func", func, lambda r: _func(r, opts, False, {s for _, f in sources for s in f})),
    ):
        if folder is not None:
            found, line = scan(Path(folder))
            sources.append((name, found))
            lines.append(line)
    subjects = sorted({s for _, found in sources for s in found}, key=_natural)
    pairings = tuple(
        _pair(s, [(name, found[s]) for name, found in sources if s in found], opts)
        for s in subjects
    )
    return Sheet(pairings, tuple(lines))


def write_sheet(sheet: Sheet, path: PathLike) -> list[dict[str, str | float]]:
    """Validate the paired rows against the subjects schema and write them as a TSV (the
    columns in the schema's order, only those some row uses; written atomically).

    Returns:
        the rows written.

    Raises:
        DataError: no subject was paired.
        ConfigError: a row the schema refuses (a bug of the sheet maker, named by subject).
    """
    from bnmfit import config, results

    if not sheet.subjects:
        raise DataError(
            f"{path}: expected subjects in the folders, got no file of any subject; check the "
            "folders and --task, --atlas, --match"
        )
    rows = sheet.rows
    if not rows:
        raise DataError(
            f"{path}: expected at least one subject with both SC and time series, got none of "
            f"{len(sheet.subjects)} found; fix what the report says is missing"
        )
    rows = config.validate_subjects(rows, where=str(path))
    columns = [c for c in config.schema("subjects")["properties"] if any(c in r for r in rows)]
    text = "\t".join(columns) + "\n"
    text += "".join("\t".join(str(r.get(c, "")) for c in columns) + "\n" for r in rows)
    results.write_bytes(path, text)
    return rows
