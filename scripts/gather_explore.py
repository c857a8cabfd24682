#!/usr/bin/env python
"""Rule gather_explore: join a subject's exploration chunks and pick the refinement starts."""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[1] / "src"
if (_SRC / "bnmfit").is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

import click  # noqa: E402

from bnmfit import cli  # noqa: E402

EXAMPLE = """\b
Example:
  python scripts/gather_explore.py --subject 01 --config config/config.yaml \\
    --output results/sub-01/sub-01_explore.h5 results/sub-01/explore/chunk-*.h5
"""


@cli.command(epilog=EXAMPLE)
@click.option("--subject", required=True, help="Subject label (without sub-).")
@cli.config_options
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The gathered exploration HDF5 to write.")
@click.argument("chunks", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def main(subject, config_file, config_json, output, chunks):
    """Join the chunk files of one exploration (in any order) into the full landscape and
    pick the refinement starts: the refinement.starts best points at least
    refinement.min_separation apart (in the unit box of the axes).

    The file holds names, points (P × D), loss (P × R), mean_loss, std_loss, fc_r,
    diverged (P), top (k indices into points, best first) and the chunks' attributes
    (axes, sampler, seeds, provenance).
    """
    import numpy as np

    from bnmfit import config as bconfig
    from bnmfit import explore
    from bnmfit.errors import DataError
    from bnmfit.io import read_h5, write_h5

    cfg = cli.read_config(config_file, config_json)
    cfg = bconfig.rule_config(cfg, "gather_explore")
    parts = [read_h5(c) for c in chunks]
    first_d, first_a = parts[0]
    names = list(first_d["names"])
    n_points = int(first_a["n_points"])
    for path, (d, a) in zip(chunks, parts, strict=True):
        if list(d["names"]) != names or list(a["seeds"]) != list(first_a["seeds"]) \
                or int(a["n_points"]) != n_points or a["axes"] != first_a["axes"] \
                or a["sampler"] != first_a["sampler"] \
                or a.get("config_hash") != first_a.get("config_hash"):
            raise DataError(
                f"{path}: expected a chunk of the same exploration as {chunks[0]} (names, "
                "axes, sampler, seeds, config hash), got another; delete the stale chunks "
                "and re-run"
            )
    index = np.concatenate([np.asarray(d["index"], dtype=np.int64) for d, _ in parts])
    counts = np.bincount(index, minlength=n_points)
    if index.size and (counts.max() > 1):
        dup = np.flatnonzero(counts > 1)[:5].tolist()
        raise DataError(f"points {dup} appear in more than one chunk; give each chunk once")
    if (counts == 0).any():
        miss = np.flatnonzero(counts == 0)
        raise DataError(
            f"the chunks cover {n_points - miss.size} of {n_points} points (missing "
            f"{miss[:5].tolist()}{' ...' if miss.size > 5 else ''}); give every chunk file"
        )
    order = np.argsort(index, kind="stable")

    def cat(key):
        return np.concatenate([np.asarray(d[key]) for d, _ in parts])[order]

    data = {k: cat(k) for k in ("points", "loss", "mean_loss", "std_loss", "fc_r", "diverged")}
    data["diverged"] = data["diverged"].astype(bool)
    if not np.isfinite(data["mean_loss"]).any():
        raise DataError(
            f"sub-{subject}: every explored point diverged (non-finite BOLD); narrow the "
            "exploration ranges, lower simulation.dt or the noise"
        )
    axes = first_a["axes"]
    space = explore.Space(
        tuple(explore.Axis(a["name"], a["lo"], a["hi"], n=a["n"], scale=a["scale"])
              for a in axes),
        sampler=first_a["sampler"], n_samples=int(first_a.get("n_samples", 0)),
    )
    ref = cfg["refinement"]
    top = explore.top_k(data["points"], data["mean_loss"], int(ref["starts"]),
                        min_separation=float(ref["min_separation"]), space=space)
    attrs = {k: v for k, v in first_a.items() if k not in ("chunk", "wall_time", "inputs")}
    attrs.update({
        "n_chunks": len(chunks),
        "wall_time": float(sum(a.get("wall_time", 0.0) for _, a in parts)),
        "starts": int(ref["starts"]),
        "min_separation": float(ref["min_separation"]),
        "inputs": {str(c): cli.sha256(c) for c in chunks},
        "chunk_config_hash": first_a.get("config_hash"),
        "config_hash": bconfig.config_hash(cfg),
    })
    write_h5(output, {"names": names, **data, "top": top}, attrs)
    for rank, i in enumerate(top):
        at = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, data["points"][i], strict=True))
        cli.log(f"sub-{subject}: start {rank}: loss {data['mean_loss'][i]:.4f}, "
                f"FC r {data['fc_r'][i]:.3f} at {at}")
    cli.log(f"sub-{subject}: {n_points} points ({int(data['diverged'].sum())} diverged), "
            f"{len(top)} starts → {output}")


if __name__ == "__main__":
    main()
