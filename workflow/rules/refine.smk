# Stage 4: gradient refinement from the best explored points, stage after stage.


rule refine:
    input:
        unpack(refine_maps),  # sub-X_desc-maps.tsv when a stage has scope map or group
        connectome=f"{SUB}_connectome.h5",
        empirical=f"{SUB}_desc-empirical_fc.h5",
        explore=f"{SUB}_explore.h5",
    output:
        params=f"{SUB}_desc-fitted_params.json",
        fit=f"{SUB}_fit.h5",
    log:
        "logs/sub-{subject}/refine.log",
    benchmark:
        "logs/benchmarks/sub-{subject}/refine.tsv"
    params:
        script=script_path("refine.py"),
        stale=stale_pages,  # no page outlives what it shows
        cfg=config_json("refine"),
        checkpoints=lambda wildcards: f"results/sub-{wildcards.subject}/.checkpoints",
        maps=refine_maps_option,
    threads: rule_threads("refine")
    resources:
        # memory x attempt: a job retried after running out of memory (--retries) gets more
        **rule_resources("refine", gpu=True)
        | {"mem_mb": lambda wildcards, attempt: rule_resources("refine")["mem_mb"] * attempt},
    conda:
        "../envs/bnmfit.yaml"
    shell:
        "rm -f {params.stale} && python {params.script:q} --subject {wildcards.subject:q}"
        " --connectome {input.connectome:q} --empirical {input.empirical:q}"
        " --explore {input.explore:q} {params.maps} --config-json {params.cfg:q}"
        " --gpus {resources.gpu}"
        " --checkpoint-dir {params.checkpoints:q}"
        " --output-params {output.params:q} --output-fit {output.fit:q} > {log:q} 2>&1"
