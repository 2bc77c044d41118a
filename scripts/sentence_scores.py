from selectit.fusion import sentence_file
from selectit.smk import step

with step(snakemake):
    w = snakemake.wildcards
    sentence_file(snakemake.input.token, int(w.k), float(w.alpha), snakemake.output.sentence,
                  snakemake.input.get("logits"))
