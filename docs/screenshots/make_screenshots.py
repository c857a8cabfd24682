"""Screenshots of the reports (issues 23 and 24): a 100-region subject with region centres,
warnings, flags, validation scores, standard errors and an extended exploration box; an
FC-only subject whose files predate those (so its page says what is absent); and the cohort
page, built from the synthetic results of tests/test_report.py and rendered by headless
Chromium at a 1400 px wide window.

Run from the checkout's root: ``python docs/screenshots/make_screenshots.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bnmfit import report  # noqa: E402
from tests.test_report import CONFIG, brain_centres, make_fitted, make_subject  # noqa: E402

OUT = Path(__file__).resolve().parent
WIDTH = 1400


def shoot(page: Path, png: Path, height: int = 16000) -> None:
    """Render ``page`` in headless Chromium and keep the screenshot down to the page's end."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--screenshot={png}",
                f"--window-size={WIDTH},{height}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    img = np.asarray(Image.open(png).convert("RGB"))
    rows = np.flatnonzero((np.abs(img.astype(int) - img[-1, 0]).sum(axis=2) > 0).any(axis=1))
    Image.fromarray(img[: rows[-1] + 20]).save(png, optimize=True)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bnmfit-screens-"))
    labels = [
        f"7Networks_{h}_{net}_{i}"
        for h in ("LH", "RH")
        for net in ("Vis", "SomMot", "DorsAttn", "Default")
        for i in range(1, 13)
    ] + [f"{h}-subcortex-{i}" for h in ("lh", "rh") for i in range(2)]
    raw = np.abs(np.random.default_rng(5).normal(size=(100, 100)))
    raw = raw + raw.T
    np.fill_diagonal(raw, 0.0)
    raw[0, 1] += 1.0  # an asymmetric SC, kept: a warning
    subs = {
        "100": make_fitted(
            root,
            "100",
            n=100,
            labels=labels,
            centres=brain_centres(labels),
            seed=4,
            raw_weights=raw,
            heldout_seeds=[99, 100, 101],
        ),
        "fc": make_subject(root, "fc", fc_only=True, regional=False, seed=6),
        "01": make_fitted(root, "01", seed=1, flags=[]),
    }
    page = root / "sub-fc" / "sub-fc_report.html"
    page.write_text(report.subject_report("fc", **subs["fc"]["paths"], config=CONFIG), "utf-8")
    ids = list(subs)
    html, _ = report.cohort_report(
        ids,
        params_jsons=[subs[s]["paths"]["params_json"] for s in ids],
        fit_h5s=[subs[s]["paths"]["fit_h5"] for s in ids],
        connectome_h5s=[subs[s]["paths"]["connectome_h5"] for s in ids],
        empirical_h5s=[subs[s]["paths"]["empirical_h5"] for s in ids],
        atlases=["Schaefer100", "", ""],
        config=CONFIG,
    )
    (root / "cohort_report.html").write_text(html, "utf-8")
    shoot(root / "sub-100" / "sub-100_report.html", OUT / "subject_100_regions.png")
    shoot(root / "sub-fc" / "sub-fc_report.html", OUT / "subject_fc_only.png")
    shoot(root / "cohort_report.html", OUT / "cohort.png", height=4000)
    print(f"pages in {root}; screenshots in {OUT}")


if __name__ == "__main__":
    main()
