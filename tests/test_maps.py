"""Regional maps and groupings: node strength, the leave-one-out FC gradient, homologue
pairs, map tables, one subject's maps and the regional_maps script."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnmfit import maps
from bnmfit.errors import ConfigError, DataError
from bnmfit.maps import RegionalMaps

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "regional_maps.py"


def gradient_fc(g: np.ndarray, width: float = 0.15, noise: float = 0.0, seed: int = 0):
    """An FC whose regions correlate by their distance along the 1-D gradient ``g``."""
    fc = np.exp(-((g[:, None] - g[None, :]) ** 2) / (2 * width**2))
    if noise:
        e = np.random.default_rng(seed).normal(scale=noise, size=fc.shape)
        fc = np.clip(fc + (e + e.T) / 2, -0.99, 0.99)
    np.fill_diagonal(fc, 1.0)
    return fc


def cohort(n: int = 30, subjects: int = 4):
    rng = np.random.default_rng(5)
    g = rng.permutation(np.linspace(0.0, 1.0, n))
    labels = [f"R{i:02d}" for i in range(n)]
    fcs = {f"s{k}": gradient_fc(g, noise=0.1, seed=k) for k in range(subjects)}
    return g, labels, fcs


# ------------------------------------------------------------------------- derived maps


def test_node_strength_is_the_input_each_region_receives():
    w = np.array([[0.0, 1.0, 2.0], [0.5, 0.0, 0.0], [0.0, 3.0, 0.0]])
    np.testing.assert_allclose(maps.node_strength(w), [3.0, 0.5, 3.0])
    with pytest.raises(DataError, match="square SC"):
        maps.node_strength(np.ones((2, 3)))


def test_group_average_is_the_fisher_z_mean():
    a, b = np.full((3, 3), 0.2), np.full((3, 3), 0.8)
    avg = maps.group_average_fc([a, b])
    assert avg[0, 1] == pytest.approx(np.tanh((np.arctanh(0.2) + np.arctanh(0.8)) / 2))
    np.testing.assert_array_equal(np.diag(avg), 1.0)


def test_the_gradient_of_a_one_dimensional_fc_recovers_it():
    g, _, fcs = cohort(n=40)
    est = maps.principal_gradient(maps.group_average_fc(list(fcs.values())))
    assert abs(np.corrcoef(est, g)[0, 1]) > 0.9
    # z-scored, and the sign convention: the largest absolute value is positive
    assert est.mean() == pytest.approx(0.0, abs=1e-12) and est.std() == pytest.approx(1.0)
    assert est[np.argmax(np.abs(est))] > 0
    # the same FC with its regions in another order: the same map, reordered (same sign)
    perm = np.random.default_rng(2).permutation(len(g))
    fc = maps.group_average_fc(list(fcs.values()))
    np.testing.assert_allclose(
        maps.principal_gradient(fc[np.ix_(perm, perm)]), est[perm], atol=1e-9
    )


def test_leave_one_out_ignores_the_subjects_own_fc():
    g, labels, fcs = cohort()
    fcs["other_atlas"] = gradient_fc(np.linspace(0, 1, 10))
    labels_by = {s: labels for s in fcs} | {"other_atlas": [f"X{i}" for i in range(10)]}
    before = maps.leave_one_out_gradient("s0", fcs, labels_by)
    changed = dict(fcs, s0=np.eye(len(labels)))
    np.testing.assert_array_equal(maps.leave_one_out_gradient("s0", changed, labels_by), before)
    # another subject's FC does enter it
    other = dict(fcs, s1=gradient_fc(np.linspace(0.0, 1.0, len(labels))))
    assert not np.allclose(maps.leave_one_out_gradient("s0", other, labels_by), before)
    assert abs(np.corrcoef(before, g)[0, 1]) > 0.9
    # a subject whose regions come in another order is matched by label
    perm = np.random.default_rng(0).permutation(len(labels))
    shuffled = dict(fcs, s3=fcs["s3"][np.ix_(perm, perm)])
    labels_shuffled = dict(labels_by, s3=[labels[i] for i in perm])
    np.testing.assert_allclose(
        maps.leave_one_out_gradient("s0", shuffled, labels_shuffled), before, atol=1e-10
    )


def test_leave_one_out_needs_two_other_subjects_with_the_atlas():
    _, labels, fcs = cohort(subjects=2)
    fcs["x"] = gradient_fc(np.linspace(0, 1, 5))
    labels_by = {"s0": labels, "s1": labels, "x": list("abcde")}
    with pytest.raises(DataError, match=r"fc_gradient of sub-s0: .* 1 share them .*drop fc_grad"):
        maps.leave_one_out_gradient("s0", fcs, labels_by)


def test_fc_strength_is_the_node_strength_of_the_training_fc():
    _, labels, fcs = cohort(n=12)
    w = np.ones((12, 12))
    r = maps.subject_maps("s0", labels, w, training_fc=fcs["s0"], maps=["fc_strength"])
    np.testing.assert_allclose(r.maps["fc_strength"], fcs["s0"].sum(axis=1) - 1.0)
    assert r.sources["fc_strength"] == "node strength of the subject's training FC"
    with pytest.raises(ConfigError, match="fc_strength of sub-s0 needs the subject's training"):
        maps.subject_maps("s0", labels, w, maps=["fc_strength"])
    with pytest.raises(DataError, match=r"fc_strength of sub-s0: expected a training FC of 12"):
        maps.subject_maps("s0", labels, w, training_fc=np.eye(5), maps=["fc_strength"])


# ------------------------------------------------------------------------- homologues


def test_homologues_pair_aal2_style_labels():
    labels = ["Precentral_L", "Precentral_R", "Frontal_Sup_2_L", "Frontal_Sup_2_R", "Vermis_3"]
    labels += ["Cerebelum_Crus1_L", "Thalamus_L"]  # its partner is missing: its own group
    assert maps.homologue_groups(labels) == (
        "Precentral",
        "Precentral",
        "Frontal_Sup_2",
        "Frontal_Sup_2",
        "Vermis_3",
        "Cerebelum_Crus1_L",
        "Thalamus_L",
    )


def test_homologues_pair_hcp_mmp_and_freesurfer_style_labels():
    assert maps.homologue_groups(["L_V1_ROI", "R_V1_ROI", "L_MST_ROI", "R_V2_ROI"]) == (
        "V1_ROI",
        "V1_ROI",
        "L_MST_ROI",
        "R_V2_ROI",
    )
    assert maps.homologue_groups(["lh.insula", "rh.insula", "Left-Thalamus", "Right-Thalamus"]) == (
        "insula",
        "insula",
        "Thalamus",
        "Thalamus",
    )
    assert maps.homologue_groups(["Amygdala_Right", "Amygdala_Left"]) == ("Amygdala", "Amygdala")


# ------------------------------------------------------------------------- tables


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_tables_are_matched_by_label(tmp_path):
    t = write(tmp_path / "m.tsv", "name\tmyelin\tnetwork\nb\t2.5\tdmn\na\t1.5\tvis\nc\tn/a\tdmn\n")
    r = maps.subject_maps("01", ["a", "b"], np.ones((2, 2)), tables=[t])
    np.testing.assert_array_equal(r.maps["myelin"], [1.5, 2.5])
    assert r.groupings["network"] == ("vis", "dmn")
    assert r.sources["myelin"] == f"column myelin of {t}"
    # written and read back
    r.write(tmp_path / "out.tsv")
    back = RegionalMaps.read(tmp_path / "out.tsv")
    assert back.labels == ("a", "b") and back.groupings == r.groupings
    for k in r.maps:
        np.testing.assert_array_equal(back.maps[k], r.maps[k])


def test_table_errors_name_the_file_and_what_is_missing(tmp_path):
    labels = ["a", "b", "c"]
    no_label = write(tmp_path / "x.tsv", "area\tmyelin\na\t1\n")
    with pytest.raises(DataError, match=r"x.tsv: expected a label column .*got columns area, my"):
        maps.subject_maps("01", labels, np.ones((3, 3)), tables=[no_label])
    short = write(tmp_path / "y.tsv", "label\tmyelin\na\t1\n")
    with pytest.raises(
        DataError, match=r"y.tsv: expected a row for every region of sub-01, got none for 2: b, c"
    ):
        maps.subject_maps("01", labels, np.ones((3, 3)), tables=[short])
    ragged = write(tmp_path / "z.tsv", "label\tmyelin\na\t1\nb\n")
    with pytest.raises(DataError, match="z.tsv: line 3 has 1 cells but the header has 2"):
        maps.subject_maps("01", labels, np.ones((3, 3)), tables=[ragged])
    derived = write(tmp_path / "d.tsv", "label\tstrength\na\t1\nb\t2\nc\t3\n")
    with pytest.raises(DataError, match="column 'strength' has the name of a derived map"):
        maps.subject_maps("01", labels, np.ones((3, 3)), tables=[derived])


def test_atlas_tables_cover_the_subject_or_are_skipped(tmp_path):
    labels = ["a", "b", "c"]
    other = write(tmp_path / "other.tsv", "label\tmyelin\nx\t1\ny\t2\nz\t3\n")
    mine = write(tmp_path / "mine.tsv", "label\tthickness\nc\t3\nb\t2\na\t1\n")
    r = maps.subject_maps(
        "01", labels, np.ones((3, 3)), atlas_tables={"other": other, "mine": mine}
    )
    np.testing.assert_array_equal(r.maps["thickness"], [1.0, 2.0, 3.0])
    assert "myelin" not in r.maps
    # a map the stages use but that only a skipped table has: the message says why
    with pytest.raises(
        ConfigError, match=r"unknown map 'myelin'.*skipped: heterogeneity.maps.other"
    ):
        maps.subject_maps(
            "01", labels, np.ones((3, 3)), atlas_tables={"other": other}, maps=["myelin"]
        )


def test_the_maps_the_stages_use_are_checked(tmp_path):
    labels = ["a", "b", "c"]
    t = write(tmp_path / "m.tsv", "label\tflat\tnet\na\t1\tx\nb\t1\tx\nc\t1\ty\n")
    w = np.array([[0, 1, 0], [1, 0, 2], [0, 2, 0]], float)
    with pytest.raises(ConfigError, match=rf"map 'flat' \(column flat of {t}\) has the same"):
        maps.subject_maps("01", labels, w, tables=[t], maps=["flat"])
    with pytest.raises(ConfigError, match="unknown grouping 'network'"):
        maps.subject_maps("01", labels, w, tables=[t], groupings=["network"])
    r = maps.subject_maps("01", labels, w, tables=[t], maps=["strength"], groupings=["net"])
    np.testing.assert_array_equal(r.maps["strength"], [1.0, 3.0, 2.0])
    index, names = r.grouping("net")
    assert names == ("x", "y") and index.tolist() == [0, 0, 1]
    with pytest.raises(ConfigError, match="fc_gradient of sub-01 needs the cohort's"):
        maps.subject_maps("01", labels, w, maps=["fc_gradient"])


# ------------------------------------------------------------------------- the rule's script


def test_regional_maps_script_writes_the_maps_of_one_subject(tmp_path):
    from bnmfit.results import ConnectomeFile, EmpiricalFile

    g, labels, fcs = cohort(n=12)
    labels = [f"{x}_{'L' if i % 2 else 'R'}" for i, x in enumerate(labels)]
    w = np.abs(np.random.default_rng(1).normal(size=(12, 12)))
    np.fill_diagonal(w, 0.0)
    ConnectomeFile("s0", w, np.zeros_like(w), w, labels, "none", False, [], {}).write(
        tmp_path / "c.h5"
    )
    args = []
    for s, fc in fcs.items():
        path = tmp_path / f"{s}.h5"
        EmpiricalFile(s, fc, labels, None, None, 0.72, None, 0, 0, 1, {}, {}).write(path)
        args += ["--fc", s, str(path)]
    table = write(
        tmp_path / "atlas.tsv",
        "label\tnetwork\n"
        + "".join(f"{x}\t{'a' if i < 6 else 'b'}\n" for i, x in enumerate(labels)),
    )
    out = tmp_path / "sub-s0_desc-maps.tsv"
    cmd = [sys.executable, str(SCRIPT), "--subject", "s0", "--connectome", str(tmp_path / "c.h5")]
    cmd += args + ["--atlas-table", "demo", str(table), "--map", "strength", "--map"]
    cmd += ["fc_gradient", "--grouping", "network", "--output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    r = RegionalMaps.read(out)
    assert r.labels == tuple(labels)
    np.testing.assert_allclose(r.maps["strength"], w.sum(axis=1))
    others = {s: fc for s, fc in fcs.items() if s != "s0"}
    expected = maps.principal_gradient(maps.group_average_fc(list(others.values())))
    np.testing.assert_allclose(r.maps["fc_gradient"], expected, atol=1e-12)
    assert r.groupings["network"][:6] == ("a",) * 6
    assert r.groupings["homologues"][0] == "R00_R"  # R00_R's partner would be R00_L
    # fc_strength: the node strength of the subject's training FC (--empirical); its
    # validation data never enter the map
    from bnmfit.results import ValidationData

    own = cmd[:6] + ["--empirical", str(tmp_path / "s0.h5"), "--map", "fc_strength"]
    maps_of = []
    for k, val in enumerate((fcs["s1"], np.eye(12))):
        EmpiricalFile(
            "s0",
            fcs["s0"],
            labels,
            None,
            None,
            0.72,
            None,
            0,
            0,
            1,
            {},
            {},
            ValidationData(val, None, 600, "the last half"),
        ).write(tmp_path / "s0.h5")
        out_k = tmp_path / f"own-{k}.tsv"
        done = subprocess.run(own + ["--output", str(out_k)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        maps_of.append(RegionalMaps.read(out_k).maps["fc_strength"])
    np.testing.assert_allclose(maps_of[0], maps.node_strength(fcs["s0"]), atol=1e-12)
    np.testing.assert_array_equal(maps_of[1], maps_of[0])
    # a map that no source gives: exit 2 and a message that names it
    done = subprocess.run(
        cmd[:-2] + ["--map", "myelin", "--output", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "Error: sub-s0: unknown map 'myelin'" in done.stderr


# ------------------------------------------------------------------------- in a fit


@pytest.mark.slow  # two stages compile (~2 min on 2 loaded cores)
def test_refine_fits_map_and_group_parameters_and_hands_on_regional_values():
    from bnmfit import fit
    from bnmfit.params import FreeParameter
    from tests.test_explore import small_problem

    prob = small_problem()
    n = prob.n_regions
    regions = RegionalMaps(
        tuple(f"R{i}" for i in range(n)),
        {"m": np.linspace(0.0, 1.0, n), "s": maps.node_strength(prob.weights)},
        {"half": tuple("a" if i < n // 2 else "b" for i in range(n))},
    )
    on_map = FreeParameter("w", 0.05, 1.0, scope="map", maps=("m", "s"))
    by_group = FreeParameter("w", 0.05, 1.0, scope="group", groups="half")
    stages = [
        fit.Stage("map", (on_map,), learning_rate=0.2, steps=3, patience=0),
        fit.Stage("group", (by_group,), optimizer="scipy-lbfgsb", steps=2),
    ]
    starts = [{"G": 0.3, "w": 0.4}]
    with pytest.raises(ConfigError, match="needs the subject's regional maps"):
        fit.refine(prob, stages, starts)
    result = fit.refine(prob, stages, starts, heldout_seeds=(1000,), regions=regions)
    # the map stage moved its 3 coefficients (history: steps x starts x 3)
    coef = result.stages[0].history["params"]["w"]
    assert coef.shape == (3, 1, 3) and np.all(np.isfinite(coef))
    assert not np.allclose(coef[-1], coef[0])
    # each stage hands on regional values inside the domain; the group stage's are equal
    # within each half
    assert result.stages[0].params["w"].shape == (n,)
    w = result.params["w"]
    assert w.shape == (n,) and np.all((w > 0.05) & (w < 1.0))
    np.testing.assert_allclose(w[: n // 2], w[0])
    np.testing.assert_allclose(w[n // 2 :], w[-1])
    # other maps, another checkpoint: a resumed fit never reuses state made with other maps
    other = RegionalMaps(regions.labels, {**regions.maps, "m": regions.maps["m"][::-1]})
    args = (prob, stages, [dict(starts[0])], 0, (1000,), 10)
    assert fit._fingerprint(*args, regions) == fit._fingerprint(*args, regions)
    assert fit._fingerprint(*args, regions) != fit._fingerprint(*args, other)


def test_a_map_screen_also_starts_at_the_best_candidates_and_is_judged_against_its_start():
    """map_screen scores the 3^k candidates (each map coefficient, intercept included,
    − s, 0, + s around the start; G as given) by the stage's data loss on its fixed noise
    seeds and runs from the start it was handed and the best map_screen_keep others,
    keeping the lowest end (with no steps: where each began); it still reports and judges
    against the start it was handed."""
    import dataclasses
    import itertools

    import jax.numpy as jnp

    from bnmfit import fit
    from bnmfit.params import FreeParameter, ParameterSet
    from tests.test_explore import small_problem

    prob = small_problem()
    n = prob.n_regions
    regions = RegionalMaps(
        tuple(f"R{i}" for i in range(n)),
        {"m": np.linspace(0.0, 1.0, n), "s": maps.node_strength(prob.weights)},
        {},
    )
    on_map = FreeParameter("w", 0.05, 1.0, scope="map", maps=("m", "s"))
    plain = fit.Stage(
        "map", (on_map,), optimizer="levenberg-marquardt", steps=0, n_noise=2,
        fresh_noise=False, noise_average="fc",
    )  # fmt: skip
    start = [{"G": 0.3, "w": 0.4}]
    kw = {"seed": 3, "heldout_seeds": (1000,), "regions": regions}
    (ref,) = fit.refine(prob, [plain], start, **kw).stages

    # every candidate's data loss, computed here from the stage's first-step keys
    pset = ParameterSet((on_map,)).bind(prob, regions=regions)
    u0 = np.asarray(pset.start_values(prob, start[0])["w"])
    keys = fit._step_keys(fit._root_key(3), 0, 0, 2, fresh=False)
    loss = fit._data_loss(prob, "fc")
    cands = [u0 + np.asarray(c) for c in itertools.product((0.0, -0.8, 0.8), repeat=3)]
    losses = [
        float(loss({"G": 0.3, **pset.constrain({"w": jnp.asarray(c, jnp.float32)})}, keys))
        for c in cands
    ]
    order = np.argsort(losses)
    assert order[0] != 0  # the homogeneous start is not the best candidate here

    for keep in (1, 2):
        stage = dataclasses.replace(plain, map_screen=0.8, map_screen_keep=keep)
        (rec,) = fit.refine(prob, [stage], start, **kw).stages
        # the handed start and the best `keep` others, each ended (no steps) where it began
        assert len(rec.selection_loss) == 1 + keep
        assert rec.screen["candidates"] == 27 and rec.screen["spread"] == 0.8
        begun = [0, *(j for j in order if j != 0)][: 1 + keep]
        chosen = begun[rec.best_start]
        assert rec.screen["handed"] == (chosen == 0)
        assert rec.screen["rank"] == list(order).index(chosen)
        np.testing.assert_allclose(rec.screen["begin"]["w"], cands[chosen], atol=1e-6)
        np.testing.assert_allclose(rec.screen["loss"], losses[chosen], rtol=1e-4)
        np.testing.assert_allclose(rec.screen["start_loss"], losses[0], rtol=1e-4)
        # with no steps the result is the candidate it began from (not worse on the fit noise)
        assert not rec.kept_start
        np.testing.assert_allclose(rec.u["w"], cands[chosen], atol=1e-6)
        # the start it reports and is judged against is the one it was handed
        for got, want in ((rec.heldout, ref.heldout), (rec.acceptance, ref.acceptance)):
            np.testing.assert_allclose(got["start_loss"], want["start_loss"], rtol=1e-6)
    assert ref.screen == {}
    # optax stages run the screened starts together, as one batch of starts
    adam = fit.Stage(
        "map", (on_map,), learning_rate=0.1, steps=2, n_noise=2, noise_average="fc",
        map_screen=0.8, map_screen_keep=2, patience=0,
    )  # fmt: skip
    (rec,) = fit.refine(prob, [adam], start, **kw).stages
    assert rec.history["loss"].shape == (2, 3) and len(rec.selection_loss) == 3
    assert rec.screen["candidates"] == 27 and np.all(np.isfinite(rec.u["w"]))


def test_map_screen_needs_few_map_coefficients():
    from bnmfit.fit import Stage
    from bnmfit.params import FreeParameter

    on_map = FreeParameter("w", 0.05, 1.0, scope="map", maps=("m", "s"))
    with pytest.raises(ConfigError, match="map_screen .* has none"):
        Stage("g", (FreeParameter("G", 0.1, 1.0),), map_screen=1.0)
    with pytest.raises(ConfigError, match="map_screen must be a number > 0"):
        Stage("m", (on_map,), map_screen=0.0)
    many = FreeParameter("w", 0.05, 1.0, scope="map", maps=tuple("abcde"))
    with pytest.raises(ConfigError, match="k = 6 map coefficients"):
        Stage("m", (many,), map_screen=1.0)
    with pytest.raises(ConfigError, match="map_screen_keep must be a whole number ≥ 1"):
        Stage("m", (on_map,), map_screen_keep=2)
    with pytest.raises(ConfigError, match="map_screen_keep must be a whole number ≥ 1"):
        Stage("m", (on_map,), map_screen=1.0, map_screen_keep=0)
    assert Stage("m", (on_map,), map_screen=1.0, map_screen_keep=3).map_screen_keep == 3
