"""bnmfit.results: every result record reads back what was written, gathering chunks joins
them in order and refuses what does not belong together, and a failed multi-file write
leaves none of its files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bnmfit import explore, results
from bnmfit.errors import DataError
from bnmfit.losses import LossSpec

SPEC = LossSpec((("fc_corr", 1.0),), 0.5, "1 - correlation(fc, empirical_fc) + 0.5")
PROV = {
    "config_hash": "0123456789abcdef",
    "versions": {"python": "3"},
    "seeds": [7, 8],
    "inputs": {"a.tsv": "ff"},
}


def _equal(a, b):
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f.name)
        elif dataclasses.is_dataclass(x) and not isinstance(x, type):
            _equal(x, y)
        elif isinstance(x, dict) and any(isinstance(v, np.ndarray) for v in x.values()):
            assert x.keys() == y.keys(), f.name
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{f.name}.{k}")
        elif isinstance(x, list) and x and dataclasses.is_dataclass(x[0]):
            for u, v in zip(x, y, strict=True):
                _equal(u, v)
        else:
            assert x == y or (x != x and y != y), f.name


def _space():
    return explore.Space((explore.Axis("G", 0.1, 0.5, n=3), explore.Axis("w", 0.2, 0.8, n=2)))


def _chunk(space, index, k, n_chunks=2, seeds=(7, 8)):
    rng = np.random.default_rng(k)
    loss = rng.uniform(0.2, 0.9, (len(index), len(seeds)))
    res = explore.ExploreResult(
        names=space.names,
        points=space.points()[index],
        seeds=np.asarray(seeds),
        loss=loss,
        mean_loss=loss.mean(1),
        std_loss=loss.std(1),
        fc_r=1 - loss.mean(1),
        diverged=np.zeros(len(index), bool),
    )
    return results.ExploreChunk.of(
        res,
        subject="01",
        space=space,
        index=index,
        chunk=k,
        n_chunks=n_chunks,
        spec=SPEC,
        provenance=PROV,
    )


def test_connectome_and_empirical_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.uniform(size=(4, 4))
    conn = results.ConnectomeFile(
        "01", w / w.max(), w * 10, w, ["A", "B", "C", "D"], "max", False, ["D"], PROV
    )
    conn.write(tmp_path / "c.h5")
    _equal(results.ConnectomeFile.read(tmp_path / "c.h5"), conn)
    assert conn.n_regions == 4
    for bold, fcd, tr, n_tr in (
        (rng.standard_normal((20, 4)), np.eye(3), 0.72, 20),
        (None, None, None, None),
    ):  # FC-only subject
        emp = results.EmpiricalFile(
            "01",
            np.corrcoef(rng.standard_normal((4, 9))),
            ["A", "B", "C", "D"],
            bold,
            fcd,
            tr,
            n_tr,
            0,
            10,
            5,
            {"mean_fc": 0.1},
            PROV,
        )
        emp.write(tmp_path / "e.h5")
        _equal(results.EmpiricalFile.read(tmp_path / "e.h5"), emp)


def test_chunks_gather_into_the_whole_space_with_the_loss_constant(tmp_path):
    space = _space()
    chunks = [_chunk(space, explore.chunk(6, k, 2), k) for k in (1, 0)]  # any order
    paths = [tmp_path / f"chunk-{c.chunk}.h5" for c in chunks]
    for c, p in zip(chunks, paths, strict=True):
        c.write(p)
        _equal(results.ExploreChunk.read(p), c)
    back = [results.ExploreChunk.read(p) for p in paths]
    land = results.Landscape.gather(
        back, paths, starts=2, min_separation=0.1, config_hash="fedcba9876543210"
    )
    np.testing.assert_array_equal(land.points, space.points())
    raw = np.concatenate([np.random.default_rng(k).uniform(0.2, 0.9, (3, 2)) for k in (0, 1)])
    np.testing.assert_allclose(land.loss, raw + 0.5)  # the expression's constant, once
    assert land.loss_spec.offset == 0.5 and land.n_chunks == 2
    assert land.top[0] == int(np.argmin(land.mean_loss))
    assert land.provenance["chunk_config_hash"] == PROV["config_hash"]
    assert set(land.provenance["inputs"]) == {str(p) for p in paths}
    land.write(tmp_path / "explore.h5")
    _equal(results.Landscape.read(tmp_path / "explore.h5"), land)
    starts = land.start_points()
    assert starts[0] == dict(zip(land.names, land.points[land.top[0]], strict=True))


def test_gather_refuses_missing_duplicate_and_foreign_chunks(tmp_path):
    space = _space()
    a, b = (_chunk(space, explore.chunk(6, k, 2), k) for k in range(2))
    kw = dict(starts=1, min_separation=0.1, config_hash="x")
    with pytest.raises(DataError, match=r"cover 3 of 6 points \(missing \[3, 4, 5\]\)"):
        results.Landscape.gather([a], ["a.h5"], **kw)
    with pytest.raises(DataError, match="appear in more than one chunk"):
        results.Landscape.gather([a, a, b], ["a.h5", "a2.h5", "b.h5"], **kw)
    other = _chunk(space, explore.chunk(6, 1, 2), 1, seeds=(9, 10))
    with pytest.raises(DataError, match="^b.h5: expected a chunk of the same exploration"):
        results.Landscape.gather([a, other], ["a.h5", "b.h5"], **kw)
    dead = dataclasses.replace(a, mean_loss=np.full(3, np.inf))
    dead_b = dataclasses.replace(b, mean_loss=np.full(3, np.inf))
    with pytest.raises(DataError, match="every explored point diverged"):
        results.Landscape.gather([dead, dead_b], ["a.h5", "b.h5"], **kw)


def test_a_missing_dataset_names_the_file_and_the_fix(tmp_path):
    results.write_h5(tmp_path / "c.h5", {"weights": np.eye(2)})
    with pytest.raises(
        DataError,
        match=r"c.h5: expected the dataset 'lengths', got none; "
        "delete the file and re-run",
    ):
        results.ConnectomeFile.read(tmp_path / "c.h5")
    results.write_json(tmp_path / "p.json", {"x": 1})
    with pytest.raises(DataError, match="expected the fitted parameters"):
        results.FittedParams.read(tmp_path / "p.json")


def test_write_together_leaves_no_part_of_a_failed_write(tmp_path):
    class Broken:
        def write(self, path):
            raise OSError("disk gone")

    good = results.QualityFile({"mean_fc": 0.2}, PROV)
    with pytest.raises(OSError, match="disk gone"):
        results.write_together([(good, tmp_path / "qc.json"), (Broken(), tmp_path / "x.h5")])
    assert list(tmp_path.iterdir()) == []
    results.write_together([(good, tmp_path / "qc.json")])
    assert results.QualityFile.read(tmp_path / "qc.json") == good


def test_an_extended_landscape_reads_back_what_was_written(tmp_path):
    """The box extension's record (extension_round, extend, extensions, edge) survives the
    file, and an older landscape file without it reads as unextended and unchecked."""
    space = _space()
    chunks = [_chunk(space, explore.chunk(6, k, 2), k) for k in range(2)]
    paths = [tmp_path / f"chunk-{k}.h5" for k in range(2)]
    for c, p in zip(chunks, paths, strict=True):
        c.write(p)
    land = results.Landscape.gather(
        chunks, paths, starts=2, min_separation=0.1, config_hash="x", inputs=[paths[0]]
    )
    extra = explore.ExploreResult(
        names=space.names,
        points=np.array([[0.7, 0.2], [0.7, 0.8]]),
        seeds=np.array([7, 8]),
        loss=np.full((2, 2), 0.01),
        mean_loss=np.full(2, 0.01),
        std_loss=np.zeros(2),
        fc_r=np.full(2, 0.99),
        diverged=np.zeros(2, bool),
    )
    face = {"axis": "G", "side": "hi", "from": 0.5, "to": 0.7, "domain": True}
    ext = dataclasses.replace(
        land.extended(extra, round_=1, faces=[face]),
        extend=2,
        edge=[{"axis": "G", "side": "hi", "at": 0.7, "domain": True}],
    )
    assert list(ext.extension_round) == [0] * 6 + [1, 1]
    assert ext.mean_loss[6] == pytest.approx(0.51)  # the loss constant, added once
    assert set(ext.top) <= {6, 7} and ext.extensions == [{"round": 1, "points": 2, "faces": [face]}]
    ext.write(tmp_path / "explore.h5")
    _equal(results.Landscape.read(tmp_path / "explore.h5"), ext)
    assert "G hi (0.7, the domain’s end)" in ext.edge_warning()
    with pytest.raises(DataError, match="seeds"):
        land.extended(dataclasses.replace(extra, seeds=np.array([1, 2])), round_=1, faces=[])
    d, a = results.read_h5(tmp_path / "explore.h5")
    d.pop("extension_round")
    for k in ("extend", "extensions", "edge"):
        a.pop(k)
    results.write_h5(tmp_path / "old.h5", d, a)
    old = results.Landscape.read(tmp_path / "old.h5")
    assert old.edge is None and old.extensions == [] and not old.extension_round.any()
