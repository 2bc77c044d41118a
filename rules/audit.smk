# The selection audit (selectit.audit): canaries of each audited dataset are rated by the rules above as the
# dataset `{dataset}.audit`; this rule measures every scorer on them (and on the `flaw` labels, if any).


rule audit_scores:
    """Per scorer and corruption kind: AUROC of originals vs canaries, the pairwise win rate, the canaries
    left out at each proportion, and a flag when the scorer is degenerate: results/audit/{dataset}/metrics.csv.
    """
    input:
        unpack(audit_inputs),
    output:
        metrics=layout.AUDIT,
    log:
        "logs/audit_scores/{dataset}.log",
    benchmark:
        "benchmarks/audit_scores/{dataset}.tsv"
    wildcard_constraints:
        dataset=REAL_DATASETS,
    conda:
        "../envs/selection.yaml"
    params:
        scorers=lambda w: AUDIT_PLANS[w.dataset],
        proportions=SELECTION["proportions"],
        seed=SELECTION["seed"],
        token_prompt=SETTINGS.level_values["token_prompt"],
        models=list(MODELS),
        max_mode_share=SETTINGS.audit_settings["max_mode_share"],
        min_score_mass=SETTINGS.audit_settings["min_score_mass"],
    script:
        "../scripts/audit_scores.py"


# Every audited dataset's metrics (also in `all`); the table and figure are in tables/all and figures/all.
rule audit:
    input:
        SETTINGS.audit_targets(),
