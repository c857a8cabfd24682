# Stage 3: coarse exploration of the parameter space, scattered over K chunks per subject
# (a cmaes/nsga2 search: one job per subject, N_CHUNKS = 1, checkpointed every generation),
# then gathered into one landscape (its box extended where the best point lies on an edge)
# with the refinement starts (top-k points).


rule explore:
    input:
        connectome=f"{SUB}_connectome.h5",
        empirical=f"{SUB}_desc-empirical_fc.h5",
    output:
        h5="results/sub-{subject}/explore/chunk-{chunk}.h5",
    log:
        "logs/sub-{subject}/explore_chunk-{chunk}.log",
    benchmark:
        "logs/benchmarks/sub-{subject}/explore_chunk-{chunk}.tsv"
    params:
        script=script_path("explore.py"),
        stale=stale_pages,  # no page outlives what it shows
        cfg=config_json("explore"),
        # cmaes/nsga2: the state after every generation; a rerun of a killed job resumes
        checkpoints=lambda wildcards: f"results/sub-{wildcards.subject}/explore/.checkpoints",
    threads: rule_threads("explore")
    resources:
        # memory x attempt: a job retried after running out of memory (--retries) gets more
        **rule_resources("explore", gpu=True)
        | {"mem_mb": lambda wildcards, attempt: rule_resources("explore")["mem_mb"] * attempt},
        serial=1,  # grouped on SLURM: one step at a time (workflow/profiles/slurm)
    conda:
        "../envs/bnmfit.yaml"
    shell:
        "rm -f {params.stale} && python {params.script:q} --subject {wildcards.subject:q}"
        " --connectome {input.connectome:q} --empirical {input.empirical:q}"
        " --chunk {wildcards.chunk} --config-json {params.cfg:q} --gpus {resources.gpu}"
        " --checkpoint-dir {params.checkpoints:q} --output {output.h5:q} > {log:q} 2>&1"


rule gather_explore:
    input:
        chunks=explore_chunks,
        # the box extension simulates the subject as the explore jobs did
        connectome=f"{SUB}_connectome.h5",
        empirical=f"{SUB}_desc-empirical_fc.h5",
    output:
        h5=f"{SUB}_explore.h5",
    log:
        "logs/sub-{subject}/gather_explore.log",
    benchmark:
        "logs/benchmarks/sub-{subject}/gather_explore.tsv"
    params:
        script=script_path("gather_explore.py"),
        stale=stale_pages,  # no page outlives what it shows
        cfg=config_json("gather_explore"),
    threads: rule_threads("explore")
    resources:
        # sized as an explore job: it simulates the points of the extension
        **rule_resources("explore", gpu=True)
        | {"mem_mb": lambda wildcards, attempt: rule_resources("explore")["mem_mb"] * attempt},
        serial=1,  # grouped on SLURM: one step at a time (workflow/profiles/slurm)
    conda:
        "../envs/bnmfit.yaml"
    shell:
        "rm -f {params.stale} && python {params.script:q} --subject {wildcards.subject:q}"
        " --connectome {input.connectome:q} --empirical {input.empirical:q}"
        " --config-json {params.cfg:q} --gpus {resources.gpu}"
        " --output {output.h5:q} {input.chunks:q} > {log:q} 2>&1"
