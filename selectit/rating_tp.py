"""One process of a tensor-parallel rating job (``selectit.rating.rate_tensor_parallel`` runs it under torchrun):
``python -m selectit.rating_tp <job.json>``."""

import sys

from selectit.rating import tensor_parallel_worker

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m selectit.rating_tp <job.json> (written by selectit.rating.rate_tensor_parallel)")
    tensor_parallel_worker(sys.argv[1])
