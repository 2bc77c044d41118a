# The scoring chain as the data flows: each level is computed once and read by the next step.
#   rating shards -> merge_ratings (logits) -> token_scores (Eq. 2-3, once per rater)
#   -> sentence_scores (Eq. 4, once per rater and (K, alpha) in use) -> level_scores (one selection score
#   per score-level method: Eq. 5 or the largest-weight rater) -> select_subset (rules/selection.smk).
# fuse_scores gathers the configured levels into one table for the tables, figures and releases.


rule merge_ratings:
    """All shards x prompts of one rater, checked complete and aligned with the samples."""
    input:
        samples=layout.SAMPLES,
        ratings=rating_shards,
    output:
        logits=layout.LOGITS,
    log:
        "logs/merge_ratings/{dataset}/{model}.log",
    benchmark:
        "benchmarks/merge_ratings/{dataset}/{model}.tsv"
    conda:
        "../envs/scoring.yaml"
    params:
        prompt_ids=[p.id for p in PROMPTS],
    script:
        "../scripts/merge_ratings.py"


rule token_scores:
    """Token-level scores of every prompt of one rater (Eq. 2-3, scoring.variant)."""
    input:
        logits=layout.LOGITS,
    output:
        token=layout.TOKEN,
    log:
        "logs/token_scores/{dataset}/{model}.log",
    benchmark:
        "benchmarks/token_scores/{dataset}/{model}.tsv"
    conda:
        "../envs/scoring.yaml"
    params:
        variant=config["scoring"]["variant"],
    script:
        "../scripts/token_scores.py"


rule sentence_scores:
    """Sentence-level score of one rater over prompts 1..k at alpha (Eq. 4); the file is named by both.
    Under scoring.variant released at k != score_levels it also reads the logits, to replay the released
    code's k score classes (selectit.scoring.released_token_level)."""
    input:
        unpack(sentence_inputs),
    output:
        sentence=layout.SENTENCE,
    log:
        "logs/sentence_scores/{dataset}/{model}/k{k}-alpha{alpha}.log",
    benchmark:
        "benchmarks/sentence_scores/{dataset}/{model}/k{k}-alpha{alpha}.tsv"
    conda:
        "../envs/scoring.yaml"
    script:
        "../scripts/sentence_scores.py"


rule level_scores:
    """One score-level method's selection score (token_r, sentence_r, model_r, selectit and their sweeps),
    from the token or sentence files its declaration names (selectit.methods)."""
    input:
        unpack(level_inputs),
    output:
        scores=layout.LEVEL,
    log:
        "logs/level_scores/{dataset}/{method}.log",
    benchmark:
        "benchmarks/level_scores/{dataset}/{method}.tsv"
    wildcard_constraints:
        method=LEVEL_PATTERN,
    conda:
        "../envs/scoring.yaml"
    params:
        models=list(MODELS),
        model_weights=config["scoring"]["model_weights"],
        settings=lambda w: SETTINGS.level_settings(w.method),
    script:
        "../scripts/level_scores.py"


rule fuse_scores:
    """Every level of the configured K and alpha for every sample, gathered (nothing is recomputed)."""
    input:
        unpack(fused_inputs),
    output:
        scores=layout.FUSED,
    log:
        "logs/fuse_scores/{dataset}.log",
    benchmark:
        "benchmarks/fuse_scores/{dataset}.tsv"
    conda:
        "../envs/scoring.yaml"
    params:
        models=list(MODELS),
        levels=list(LEVELS),
        k=config["n_prompts"],
    script:
        "../scripts/fuse_scores.py"
