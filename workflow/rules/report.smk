# Stage 5: one HTML page per subject, then the cohort page, the cohort table and the
# dataset description with the resolved configuration.


rule report:
    input:
        connectome=f"{SUB}_connectome.h5",
        empirical=f"{SUB}_desc-empirical_fc.h5",
        explore=f"{SUB}_explore.h5",
        fit=f"{SUB}_fit.h5",
        params=f"{SUB}_desc-fitted_params.json",
    output:
        html=report(
            f"{SUB}_report.html",
            caption="../report/subject_report.rst",
            category="Subjects",
            subcategory="sub-{subject}",
            labels={"subject": "sub-{subject}", "figure": "report (HTML)"},
        ),
        **subject_figure_outputs(),
    log:
        "logs/sub-{subject}/report.log",
    params:
        script=script_path("report.py"),
        cfg=config_json("report"),
        benchmarks=benchmark_options,
        figures=lambda wildcards, output: os.path.join(os.path.dirname(output.html), "figures"),
    localrule: True
    threads: 1
    resources:
        **rule_resources("default"),
    conda:
        "../envs/bnmfit.yaml"
    shell:
        "python {params.script:q} --subject {wildcards.subject:q}"
        " --connectome {input.connectome:q} --empirical {input.empirical:q}"
        " --explore {input.explore:q} --fit {input.fit:q} --params {input.params:q}"
        " --config-json {params.cfg:q} --figures {params.figures:q} {params.benchmarks}"
        " --output {output.html:q} > {log:q} 2>&1"


rule cohort_report:
    input:
        params=expand(f"{SUB}_desc-fitted_params.json", subject=SUBJECT_IDS),
        fits=expand(f"{SUB}_fit.h5", subject=SUBJECT_IDS),
        connectomes=expand(f"{SUB}_connectome.h5", subject=SUBJECT_IDS),
        empiricals=expand(f"{SUB}_desc-empirical_fc.h5", subject=SUBJECT_IDS),
        pages=expand(f"{SUB}_report.html", subject=SUBJECT_IDS),
    output:
        html=report(
            "results/cohort_report.html",
            caption="../report/cohort_report.rst",
            category="Cohort",
            labels={"figure": "report (HTML)"},
        ),
        tsv=report(
            "results/cohort_params.tsv",
            caption="../report/cohort_table.rst",
            category="Cohort",
            labels={"figure": "parameter table"},
        ),
        description="results/dataset_description.json",
        config="results/config.yaml",
        **cohort_figure_outputs(),
    log:
        "logs/cohort_report.log",
    params:
        script=script_path("cohort_report.py"),
        options=cohort_options,
        cfg=config_json("cohort_report"),
        figures=lambda wildcards, output: os.path.join(os.path.dirname(output.html), "figures"),
    localrule: True
    threads: 1
    resources:
        **rule_resources("default"),
    conda:
        "../envs/bnmfit.yaml"
    shell:
        "python {params.script:q} {params.options} --config-json {params.cfg:q}"
        " --figures {params.figures:q} --output {output.html:q} --table {output.tsv:q}"
        " --description {output.description:q} --resolved-config {output.config:q}"
        " > {log:q} 2>&1"
