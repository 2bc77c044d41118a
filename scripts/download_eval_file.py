from selectit.resources import entry, fetch
from selectit.smk import step

with step(snakemake):
    item = entry(snakemake.wildcards.path)
    mirror = snakemake.config["evaluation"]["download"]["mirror"]
    fetch(item, snakemake.output[0], mirror)
    print(f"{item.path}: sha256 {item.sha256} from {mirror or item.url}")
