# The paper's figures (selectit.paper.figures): `snakemake figures/all`.
