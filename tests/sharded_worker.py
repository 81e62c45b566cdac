"""Run by tests/test_sharding.py under torchrun: the sharded log-likelihood of a tiny model,
per datum, saved by rank 0 to the file named on the command line."""

from __future__ import annotations

import sys

import torch

from pyrovae.analysis.likelihood.sharding import sharded_source_log_likelihoods
from pyrovae.distributed import process_group

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_sharding import NUM_SAMPLES, problem  # noqa: E402


def main() -> None:
    out, per_pass = sys.argv[1], int(sys.argv[2])
    vae, x, sources = problem()
    with process_group("cpu") as context:
        assert context is not None and context.world_size == 2
        results = sharded_source_log_likelihoods(
            context,
            vae,
            x,
            sources,
            num_samples=NUM_SAMPLES,
            draws_per_pass=per_pass,
            seed=5,
            iwae_particles=[4],
            progress=False,
        )
        if context.is_writer:
            torch.save(
                {n: (r.per_datum, r.elbo, r.khat, r.iwae[4]) for n, r in results.items()}, out
            )


if __name__ == "__main__":
    main()
