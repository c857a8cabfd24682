# Stage 1: read each subject's structural connectome, validate and normalise it.


rule ingest_connectome:
    input:
        unpack(connectome_inputs),
    output:
        h5=f"{SUB}_connectome.h5",
    log:
        "logs/sub-{subject}/ingest_connectome.log",
    params:
        script=script_path("ingest_connectome.py"),
        stale=stale_pages,  # no page outlives what it shows
        options=connectome_options,
    threads: 1
    resources:
        **rule_resources("default"),
        serial=1,  # grouped on SLURM: one step at a time (workflow/profiles/slurm)
    conda:
        "../envs/bnmfit.yaml"
    shell:
        "rm -f {params.stale} && python {params.script:q} --subject {wildcards.subject:q}"
        " --weights {input.weights:q}"
        " {params.options} --output {output.h5:q} > {log:q} 2>&1"
