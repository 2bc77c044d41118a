# The paper's tables (selectit.paper.tables): `snakemake tables/all`.
