"""A tensor-parallel rating process (selectit.rating_tp) whose second process, alone, runs out of memory on the first
batch of more than two rows, after the forward pass's collectives (as in the last position's full-vocabulary
softmax, which each process computes by itself): the processes must agree to split that batch
(tests/test_tp_rating.py)."""

import os
import sys

from selectit import rating
from selectit.engines import hf_rater

if __name__ == "__main__":
    real = hf_rater.Rater._forward
    failed = []

    def forward(self, rows):
        result = real(self, rows)
        if os.environ.get("RANK") == "1" and len(rows) > 2 and not failed:
            failed.append(len(rows))
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB (injected in process 1 only)")
        return result

    hf_rater.Rater._forward = forward
    rating.tensor_parallel_worker(sys.argv[1])
