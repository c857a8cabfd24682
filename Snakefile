# bnmfit: personalised brain network models for every subject of a cohort.
#
#   pip install -e . && snakemake --cores all
#
# fits every subject of config/subjects.tsv with the recipe of config/config.yaml and writes
# results/ (see config/README.md for the outputs and workflow/README.md for the file
# contents). This file only wires the stages together; each stage is one .smk file.


include: "workflow/rules/common.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/empirical.smk"
include: "workflow/rules/explore.smk"
include: "workflow/rules/maps.smk"
include: "workflow/rules/refine.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
