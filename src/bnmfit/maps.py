"""Regional maps and groupings: the data behind free parameters of scope ``map`` and ``group``.

A :class:`RegionalMaps` holds, for one subject and in its connectome's region order, named
maps (one number per region) and named groupings (one group name per region).
:meth:`bnmfit.params.ParameterSet.bind` takes from it the z-scored maps of each ``map``
parameter and the group index of each ``group`` parameter.

Where maps come from (:func:`subject_maps`):

* ``strength`` — the SC's node strength (:func:`node_strength`).
* ``fc_strength`` — the node strength of the subject's own training FC (the FC the fit is
  fitted to; never its validation data): each region's summed correlation with the others.
* ``fc_gradient`` — the principal gradient of the cohort's group-average FC, computed
  leaving the subject out (:func:`leave_one_out_gradient`), so that its own FC does not leak
  into its map.
* TSV tables (:func:`read_table`): one row per region matched by label, one column per map
  (numbers) or grouping (names): per atlas in the configuration, per subject in the sheet,
  and the extra columns of the subject's labels file (e.g. ``network``).
* ``homologues`` — a grouping that pairs left and right regions by label name
  (:func:`homologue_groups`).

The principal gradient (Margulies et al. 2016, PNAS 113:12574) here: the FCs are averaged
in Fisher z (the diagonal left out) and turned back into correlations; each region's row
keeps its top 10 % of correlations (:data:`GRADIENT_TOP`, others and negatives set to 0); the
affinity of two regions is the cosine similarity of their thresholded rows; a diffusion map
with α = 0.5 (:data:`DIFFUSION_ALPHA`, Coifman & Lafon 2006) of that affinity gives the
gradient as its first non-trivial component. The gradient is z-scored over regions, and its
sign is chosen so that its largest absolute value is positive (the convention of
scikit-learn's ``svd_flip``), so the same FCs always give the same map.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from bnmfit.errors import ConfigError, DataError, short_list, unknown_choice

__all__ = [
    "DERIVED_GROUPINGS",
    "DERIVED_MAPS",
    "DIFFUSION_ALPHA",
    "GRADIENT_TOP",
    "HOMOLOGUE_CONVENTIONS",
    "RegionalMaps",
    "group_average_fc",
    "homologue_groups",
    "leave_one_out_gradient",
    "node_strength",
    "principal_gradient",
    "read_table",
    "subject_maps",
]

PathLike = str | os.PathLike

#: maps computed from the subject's data
DERIVED_MAPS: tuple[str, ...] = ("strength", "fc_gradient", "fc_strength")
#: groupings computed from the region labels
DERIVED_GROUPINGS: tuple[str, ...] = ("homologues",)
#: fraction of each region's correlations kept before the affinity of the gradient
GRADIENT_TOP = 0.1
#: α of the diffusion map (0.5: the Fokker–Planck normalisation, as Margulies et al. 2016)
DIFFUSION_ALPHA = 0.5
#: (left, right) label patterns of the homologue pairing; the group is the pattern's stem
HOMOLOGUE_CONVENTIONS: tuple[tuple[str, str], ...] = (
    (r"L_(.+)", r"R_(.+)"),  # HCP-MMP: L_V1_ROI
    (r"(.+)_L", r"(.+)_R"),  # AAL, AAL2: Precentral_L
    (r"lh\.(.+)", r"rh\.(.+)"),  # FreeSurfer surfaces: lh.precentral
    (r"Left-(.+)", r"Right-(.+)"),  # FreeSurfer aseg: Left-Thalamus
    (r"(.+)_Left", r"(.+)_Right"),  # Precentral_Left
)
#: header names of a table's label column (first match, case-insensitive)
LABEL_COLUMNS: tuple[str, ...] = ("label", "name", "labels", "region", "roi", "node")


# ---------------------------------------------------------------------------------------------
# the record


@dataclasses.dataclass(frozen=True)
class RegionalMaps:
    """Maps and groupings of one subject's regions, in its connectome's order.

    Attributes:
        labels: the N region labels.
        maps: name → (N,) float values (NaN where a table has no value).
        groupings: name → N group names (text columns of the tables, ``homologues``).
        sources: name → where a map or grouping comes from (a file, or how it was derived),
            for messages.
    """

    labels: tuple[str, ...]
    maps: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    groupings: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        labels = tuple(str(x) for x in self.labels)
        n = len(labels)
        maps = {str(k): np.asarray(v, dtype=np.float64) for k, v in self.maps.items()}
        groupings = {str(k): tuple(str(x) for x in v) for k, v in self.groupings.items()}
        for name, v in [*maps.items(), *groupings.items()]:
            if np.shape(v) != (n,):
                raise DataError(
                    f"regional map or grouping {name!r} has {len(v)} values for {n} regions; "
                    "give one value per region"
                )
        both = sorted(set(maps) & set(groupings))
        if both:
            raise DataError(f"{', '.join(both)}: both a map and a grouping; give each name once")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "maps", maps)
        object.__setattr__(self, "groupings", groupings)
        object.__setattr__(self, "sources", dict(self.sources))

    @property
    def n_regions(self) -> int:
        return len(self.labels)

    def _source(self, name: str) -> str:
        return f" ({self.sources[name]})" if name in self.sources else ""

    def check_map(self, name: str, where: str = "") -> np.ndarray:
        """The (N,) values of map ``name``, checked: it exists, holds a finite number for
        every region, and is not the same for all of them (ConfigError otherwise)."""
        at = f"{where}: " if where else ""
        if name not in self.maps:
            if name in self.groupings:
                value, label = next(
                    (v, lab) for v, lab in zip(self.groupings[name], self.labels, strict=True)
                )
                raise ConfigError(
                    f"{at}map {name!r}{self._source(name)} holds text (e.g. {value!r} for "
                    f"region {label!r}), not numbers: a map needs a number per region; use it "
                    "as groups, or name a numeric column"
                )
            raise ConfigError(
                at
                + unknown_choice("map", name, sorted(self.maps) or ["(none)"])
                + " (a column of a maps TSV: heterogeneity.maps or the sheet's maps column; "
                "or a derived map: strength, fc_gradient, fc_strength)"
            )
        x = self.maps[name]
        bad = [lab for lab, v in zip(self.labels, x, strict=True) if not math.isfinite(v)]
        if bad:
            raise ConfigError(
                f"{at}map {name!r}{self._source(name)} has no finite value for {len(bad)} "
                f"region(s): {short_list(bad)}; give every region a number"
            )
        if np.ptp(x) <= 1e-12 * max(1.0, float(np.max(np.abs(x)))):
            raise ConfigError(
                f"{at}map {name!r}{self._source(name)} has the same value for every region: "
                "it adds nothing to the intercept; choose a map that varies over regions"
            )
        return x

    def design(self, names: Sequence[str], where: str = "") -> np.ndarray:
        """(N, k) the maps ``names``, each z-scored over regions (mean 0, SD 1).

        Raises:
            ConfigError: a map is unknown, not finite or constant (:meth:`check_map`), the
                maps are collinear, or there are fewer regions than coefficients (k + 1).
        """
        at = f"{where}: " if where else ""
        cols = [self.check_map(n, where) for n in names]
        z = np.stack([(c - c.mean()) / c.std() for c in cols], axis=1)
        if len(names) + 1 > self.n_regions:
            raise ConfigError(
                f"{at}{len(names)} maps need {len(names) + 1} coefficients but there are only "
                f"{self.n_regions} regions; name fewer maps"
            )
        if np.linalg.matrix_rank(np.column_stack([np.ones(self.n_regions), z])) < len(names) + 1:
            raise ConfigError(
                f"{at}the maps {', '.join(names)} are collinear over the regions (one is a "
                "linear function of the others), so their coefficients are not determined; "
                "drop one of them"
            )
        return z

    def grouping(self, name: str, where: str = "") -> tuple[np.ndarray, tuple[str, ...]]:
        """(index (N,) int, group names) of grouping ``name``; a numeric column groups the
        regions by equal values. Groups are numbered in order of first appearance.

        Raises:
            ConfigError: the grouping is unknown, or puts every region in one group.
        """
        at = f"{where}: " if where else ""
        if name in self.groupings:
            values = self.groupings[name]
        elif name in self.maps:
            values = tuple(f"{v:g}" for v in self.maps[name])
        else:
            raise ConfigError(
                at
                + unknown_choice("grouping", name, sorted({*self.groupings, *self.maps}))
                + " (a column of the subject's labels file or of a maps TSV, or homologues)"
            )
        names = tuple(dict.fromkeys(values))
        if len(names) < 2:
            raise ConfigError(
                f"{at}grouping {name!r}{self._source(name)} puts every region in one group "
                f"({names[0]!r}): use scope global for one value"
            )
        lookup = {g: i for i, g in enumerate(names)}
        return np.array([lookup[v] for v in values], dtype=np.int32), names

    def write(self, path: PathLike) -> None:
        """A TSV (atomically): ``label``, one column per map (``%.17g``, ``n/a`` for NaN),
        one per grouping."""
        from bnmfit.results import write_bytes

        header = ["label", *self.maps, *self.groupings]
        lines = ["\t".join(header)]
        for i, label in enumerate(self.labels):
            cells = [label]
            cells += [_number(self.maps[m][i]) for m in self.maps]
            cells += [self.groupings[g][i] for g in self.groupings]
            lines.append("\t".join(cells))
        write_bytes(path, "\n".join(lines) + "\n")

    @classmethod
    def read(cls, path: PathLike) -> RegionalMaps:
        """A TSV as :meth:`write` writes it (or any :func:`read_table` table): numeric
        columns are maps, the others groupings."""
        labels, columns = read_table(path)
        return _from_columns(labels, columns, str(path))


def _number(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.17g}"


def _from_columns(labels, columns: Mapping[str, Sequence[str]], source: str) -> RegionalMaps:
    from bnmfit.io._files import MISSING_TOKENS, is_number

    maps, groupings = {}, {}
    for name, cells in columns.items():
        if all(is_number(c) for c in cells):
            maps[name] = np.array([np.nan if c in MISSING_TOKENS else float(c) for c in cells])
        else:
            groupings[name] = tuple(cells)
    return RegionalMaps(
        tuple(labels), maps, groupings, {n: f"column {n} of {source}" for n in columns}
    )


# ---------------------------------------------------------------------------------------------
# tables


def read_table(path: PathLike) -> tuple[list[str], dict[str, list[str]]]:
    """(labels, column name → cells) of a region table: a TSV (or CSV) with a header, a label
    column (``label``, ``name``, ``region``, ... see :data:`LABEL_COLUMNS`) and one column per
    map or grouping. A file of one column (e.g. a plain list of labels) has no columns.

    Raises:
        DataError: no label column, a row of another length, duplicate labels.
    """
    from bnmfit.io._files import check_unique, describe, read_text, split_rows

    name = describe(path)
    text = read_text(path)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines or ("\t" not in lines[0] and "," not in lines[0]):
        return [ln.strip() for ln in lines], {}
    rows = split_rows("\n".join(lines), name)
    header = rows[0]
    if len(header) < 2:
        return [r[0] for r in rows], {}
    lower = [h.lower() for h in header]
    key = next((lower.index(c) for c in LABEL_COLUMNS if c in lower), None)
    if key is None:
        raise DataError(
            f"{name}: expected a label column ({', '.join(LABEL_COLUMNS)}) naming each row's "
            f"region, got columns {short_list(header)}; add one"
        )
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise DataError(
                f"{name}: line {i} has {len(r)} cells but the header has {len(header)}; "
                "give every region a cell in every column (n/a where unknown)"
            )
    labels = [r[key] for r in rows[1:]]
    check_unique(labels, name)
    columns = {h: [r[j] for r in rows[1:]] for j, h in enumerate(header) if j != key}
    dup = sorted({h for h in columns if header.count(h) > 1})
    if dup:
        raise DataError(f"{name}: the columns {', '.join(dup)} appear twice; rename them")
    return labels, columns


def _table_for(path: PathLike, labels: Sequence[str]) -> dict[str, list[str]] | list[str]:
    """The table's columns in the order of ``labels``, or the labels it lacks (a table
    without columns: nothing to match)."""
    rows, columns = read_table(path)
    if not columns:
        return {}
    index = {lab: i for i, lab in enumerate(rows)}
    missing = [lab for lab in labels if lab not in index]
    if missing:
        return missing
    order = [index[lab] for lab in labels]
    return {name: [cells[i] for i in order] for name, cells in columns.items()}


# ---------------------------------------------------------------------------------------------
# derived maps


def node_strength(weights) -> np.ndarray:
    """(N,) each region's node strength: the sum of the weights it receives (row i of the
    SC receives from column j; a symmetric SC: its degree weighted by the weights)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise DataError(f"node strength needs a square SC, got shape {w.shape}")
    return w.sum(axis=1) - np.diag(w)


def group_average_fc(fcs: Sequence[np.ndarray]) -> np.ndarray:
    """The Fisher-z average of FCs: tanh of the mean of arctanh(r) (|r| clipped below 1),
    diagonal 1."""
    if not fcs:
        raise DataError("a group-average FC needs at least one FC")
    stack = np.stack([np.asarray(f, dtype=np.float64) for f in fcs])
    z = np.arctanh(np.clip(stack, -1.0 + 1e-7, 1.0 - 1e-7)).mean(axis=0)
    r = np.tanh(z)
    np.fill_diagonal(r, 1.0)
    return r


def principal_gradient(fc, *, top: float = GRADIENT_TOP, alpha: float = DIFFUSION_ALPHA):
    """(N,) the principal gradient of an FC (see the module docstring): z-scored, with its
    largest absolute value positive.

    Raises:
        DataError: the FC is not square, not finite, or a region has no positive
            correlation (its affinity to every other region would be undefined).
    """
    r = np.asarray(fc, dtype=np.float64)
    n = r.shape[0]
    if r.ndim != 2 or r.shape != (n, n) or n < 3:
        raise DataError(f"a gradient needs a square FC of at least 3 regions, got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise DataError("the FC of the gradient has non-finite values")
    x = r.copy()
    np.fill_diagonal(x, -np.inf)
    keep = max(1, math.ceil(top * (n - 1)))
    order = np.argsort(-x, axis=1)[:, :keep]
    thresholded = np.zeros_like(r)
    rows = np.arange(n)[:, None]
    thresholded[rows, order] = np.maximum(r[rows, order], 0.0)
    norm = np.linalg.norm(thresholded, axis=1)
    if np.any(norm == 0):
        raise DataError(
            f"{int(np.sum(norm == 0))} region(s) have no positive correlation in the FC of "
            "the gradient: their affinity is undefined"
        )
    unit = thresholded / norm[:, None]
    affinity = np.clip(unit @ unit.T, 0.0, None)
    d = affinity.sum(axis=1) ** alpha
    kernel = affinity / np.outer(d, d)
    degree = kernel.sum(axis=1)
    sym = kernel / np.sqrt(np.outer(degree, degree))
    vals, vecs = np.linalg.eigh(sym)
    psi = vecs[:, np.argsort(vals)[::-1][1]] / np.sqrt(degree)  # first non-trivial
    g = (psi - psi.mean()) / psi.std()
    return g if g[np.argmax(np.abs(g))] > 0 else -g


def leave_one_out_gradient(
    subject: str,
    fcs_by_subject: Mapping[str, np.ndarray],
    labels_by_subject: Mapping[str, Sequence[str]],
) -> np.ndarray:
    """(N,) :func:`principal_gradient` of the Fisher-z average FC of the OTHER subjects whose
    regions carry the same labels as ``subject``'s (in any order; reordered to its own).

    Raises:
        DataError: fewer than 2 other subjects share the subject's region labels.
    """
    own = list(labels_by_subject[subject])
    others = []
    for s, fc in fcs_by_subject.items():
        labels = list(labels_by_subject[s])
        if s == subject or sorted(labels) != sorted(own):
            continue
        pos = {lab: i for i, lab in enumerate(labels)}
        order = [pos[lab] for lab in own]
        others.append(np.asarray(fc, dtype=np.float64)[np.ix_(order, order)])
    if len(others) < 2:
        raise DataError(
            f"map fc_gradient of sub-{subject}: the leave-one-out gradient averages the FC of "
            f"the other subjects with its region labels, and {len(others)} share them (at "
            "least 2 needed): add subjects with the same atlas, or drop fc_gradient from the "
            "stage's maps (or give a gradient in a maps TSV)"
        )
    return principal_gradient(group_average_fc(others))


def homologue_groups(labels: Sequence[str]) -> tuple[str, ...]:
    """One group name per region: the stem of a left/right pair matched by label name
    (:data:`HOMOLOGUE_CONVENTIONS`, e.g. ``Precentral`` for ``Precentral_L`` and
    ``Precentral_R``); a region without its counterpart is its own group (its label)."""
    labels = [str(x) for x in labels]
    present = set(labels)
    groups = []
    for lab in labels:
        group = lab
        for left, right in HOMOLOGUE_CONVENTIONS:
            for mine, other in ((left, right), (right, left)):
                m = re.fullmatch(mine, lab)
                if m is None:
                    continue
                stem = m.group(1)
                partner = other.replace("(.+)", stem).replace("\\", "")
                if partner in present and partner != lab:
                    group = stem
                    break
            if group != lab:
                break
        groups.append(group)
    return tuple(groups)


# ---------------------------------------------------------------------------------------------
# one subject


def subject_maps(
    subject: str,
    labels: Sequence[str],
    weights,
    *,
    tables: Sequence[PathLike] = (),
    atlas_tables: Mapping[str, PathLike] | None = None,
    fcs: Mapping[str, tuple[Sequence[str], np.ndarray]] | None = None,
    training_fc=None,
    maps: Sequence[str] = (),
    groupings: Sequence[str] = (),
) -> RegionalMaps:
    """One subject's :class:`RegionalMaps`: ``strength`` and ``homologues`` always,
    ``fc_gradient`` and ``fc_strength`` when ``maps`` names them, and the columns of the
    tables.

    Args:
        subject, labels, weights: the subject and its connectome (labels, (N, N) weights).
        tables: tables that must have a row for every region (the sheet's ``maps`` and
            ``labels`` files).
        atlas_tables: atlas → table (``heterogeneity.maps``); a table is used when it has
            a row for every region, skipped otherwise.
        fcs: subject → (labels, FC) of the cohort, for ``fc_gradient``.
        training_fc: the subject's own (N, N) training FC, in its connectome's region order,
            for ``fc_strength`` (the FC the fit sees, never the validation data).
        maps, groupings: the maps and groupings the stages use: each is checked here
            (:meth:`RegionalMaps.check_map`, :meth:`RegionalMaps.grouping`).

    Raises:
        DataError: a required table lacks regions, two tables give the same column.
        ConfigError: a used map or grouping is missing or unusable.
    """
    labels = tuple(str(x) for x in labels)
    values: dict[str, np.ndarray] = {"strength": node_strength(weights)}
    sources = {"strength": "the SC's node strength", "homologues": "left/right label pairs"}
    if "fc_gradient" in maps:
        if fcs is None:
            raise ConfigError(
                f"map fc_gradient of sub-{subject} needs the cohort's empirical FCs; give them"
            )
        values["fc_gradient"] = leave_one_out_gradient(
            subject, {s: fc for s, (_, fc) in fcs.items()}, {s: lab for s, (lab, _) in fcs.items()}
        )
        sources["fc_gradient"] = "principal gradient of the other subjects' mean FC"
    if "fc_strength" in maps:
        if training_fc is None:
            raise ConfigError(
                f"map fc_strength of sub-{subject} needs the subject's training FC: give its "
                "sub-X_desc-empirical_fc.h5 (scripts/regional_maps.py --empirical)"
            )
        if np.shape(training_fc) != (len(labels), len(labels)):
            raise DataError(
                f"map fc_strength of sub-{subject}: expected a training FC of "
                f"{len(labels)} × {len(labels)} regions (its connectome's), got "
                f"{np.shape(training_fc)}; give the subject's own empirical FC"
            )
        values["fc_strength"] = node_strength(training_fc)
        sources["fc_strength"] = "node strength of the subject's training FC"
    columns: dict[str, list[str]] = {}
    skipped = []
    named = [(str(p), str(p), True) for p in tables]
    named += [
        (f"heterogeneity.maps.{a}: {p}", str(p), False) for a, p in (atlas_tables or {}).items()
    ]
    for where, path, required in named:
        table = _table_for(path, labels)
        if isinstance(table, list):
            if required:
                raise DataError(
                    f"{path}: expected a row for every region of sub-{subject}, got none for "
                    f"{len(table)}: {short_list(table)}; add rows with these labels in its "
                    "label column"
                )
            skipped.append(f"{where} lacks {short_list(table, 3)}")
            continue
        for col, cells in table.items():
            if col in DERIVED_MAPS or col in DERIVED_GROUPINGS:
                raise DataError(
                    f"{path}: column {col!r} has the name of a derived map or grouping; rename it"
                )
            if col in columns:
                raise DataError(
                    f"{path}: column {col!r} is also given by {sources[col]}; rename one"
                )
            columns[col] = cells
            sources[col] = f"column {col} of {path}"
    table_maps = _from_columns(labels, columns, "")
    result = RegionalMaps(
        labels,
        {**values, **table_maps.maps},
        {"homologues": homologue_groups(labels), **table_maps.groupings},
        sources,
    )
    hint = f" (skipped: {'; '.join(skipped)})" if skipped else ""
    try:
        for name in maps:
            result.check_map(name, f"sub-{subject}")
        for name in groupings:
            result.grouping(name, f"sub-{subject}")
    except ConfigError as e:
        raise ConfigError(f"{e}{hint}") from None
    return result
