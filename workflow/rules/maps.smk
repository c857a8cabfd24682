# Stage 3b (only when a refinement stage has a free parameter of scope map or group): each
# subject's regional maps and groupings, for those parameters.


def heterogeneity_used():
    """(maps, groupings) that the refinement stages name, in order of appearance."""
    free = [fp for st in config["refinement"]["stages"] for fp in st["free_parameters"]]
    maps = [m for fp in free if fp["scope"] == "map" for m in fp["maps"]]
    groups = [fp["groups"] for fp in free if fp["scope"] == "group"]
    return list(dict.fromkeys(maps)), list(dict.fromkeys(groups))


def maps_inputs(wildcards):
    """The subject's connectome, its sheet tables (maps, labels), the atlas tables and,
    for fc_gradient, every subject's empirical FC (the gradient leaves the subject out)."""
    row = SUBJECTS[wildcards.subject]
    out = {"connectome": f"results/sub-{wildcards.subject}/sub-{wildcards.subject}_connectome.h5"}
    out["tables"] = [row[col] for col in ("maps", "labels") if col in row]
    out["atlas_tables"] = list(config["heterogeneity"]["maps"].values())
    if "fc_gradient" in heterogeneity_used()[0]:
        out["fcs"] = expand(f"{SUB}_desc-empirical_fc.h5", subject=SUBJECT_IDS)
    return out


def maps_options(wildcards, input):
    maps, groups = heterogeneity_used()
    opts = [_opt("--table", t) for t in input.tables]
    opts += [f"--atlas-table {shlex.quote(a)} {shlex.quote(p)}"
             for a, p in config["heterogeneity"]["maps"].items()]
    if "fcs" in input.keys():
        opts += [f"--fc {shlex.quote(s)} {shlex.quote(p)}" for s, p in zip(SUBJECT_IDS, input.fcs)]
    opts += [_opt("--map", m) for m in maps] + [_opt("--grouping", g) for g in groups]
    return " ".join(opts)


def refine_maps(wildcards):
    """{maps: sub-X_desc-maps.tsv} when a stage has scope map or group, else nothing."""
    if not any(heterogeneity_used()):
        return {}
    return {"maps": f"results/sub-{wildcards.subject}/sub-{wildcards.subject}_desc-maps.tsv"}


def refine_maps_option(wildcards, input):
    return _opt("--maps", input.maps) if "maps" in input.keys() else ""


rule regional_maps:
    input:
        unpack(maps_inputs),
    output:
        tsv=f"{SUB}_desc-maps.tsv",
    log:
        "logs/sub-{subject}/regional_maps.log",
    params:
        script=script_path("regional_maps.py"),
        stale=stale_pages,  # no page outlives what it shows
        options=maps_options,
    localrule: True  # seconds: no cluster job of its own
    threads: 1
    resources:
        **rule_resources("default"),
    conda:
        "../envs/bnmfit.yaml"
    shell:
        "rm -f {params.stale} && python {params.script:q} --subject {wildcards.subject:q}"
        " --connectome {input.connectome:q} {params.options}"
        " --output {output.tsv:q} > {log:q} 2>&1"
