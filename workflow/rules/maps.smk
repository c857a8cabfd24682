# Stage 3b (only when a refinement stage has a free parameter of scope map or group): each
# subject's regional maps and groupings, for those parameters.


rule regional_maps:
    input:
        unpack(maps_inputs),
        empirical=f"{SUB}_desc-empirical_fc.h5",  # its training FC, for fc_strength
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
        " --connectome {input.connectome:q} --empirical {input.empirical:q} {params.options}"
        " --output {output.tsv:q} > {log:q} 2>&1"
