# Stage 2: each subject's empirical BOLD → FC and FCD (+ quality numbers), in SC region order.


rule empirical_fc:
    input:
        unpack(empirical_inputs),
    output:
        h5=f"{SUB}_desc-empirical_fc.h5",
        qc=f"{SUB}_desc-empirical_qc.json",
    log:
        "logs/sub-{subject}/empirical_fc.log",
    params:
        script=script_path("empirical_fc.py"),
        stale=stale_pages,  # no page outlives what it shows
        options=empirical_options,
    threads: 1
    resources:
        **rule_resources("default"),
        serial=1,  # grouped on SLURM: one step at a time (workflow/profiles/slurm)
    conda:
        "../envs/bnmfit.yaml"
    shell:
        "rm -f {params.stale} && python {params.script:q} --subject {wildcards.subject:q}"
        " --connectome {input.connectome:q} {params.options}"
        " --output {output.h5:q} --qc {output.qc:q} > {log:q} 2>&1"
