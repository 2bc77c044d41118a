from selectit.resources import entry, fetch
from selectit.smk import step

with step(snakemake):
    item = entry(snakemake.wildcards.path)
    mirror = snakemake.resources.mirror or None
    fetch(item, snakemake.output[0], mirror)
    print(f"{item.path}: sha256 {item.sha256} from {mirror or item.url}")
