"""Flow prior and flow guide: inverses, log-determinants against autograd, densities."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from pyrovae.guides import FlowEncoder
from pyrovae.models import FlowPrior

Z_DIM = 4


def transforms_of(kind: str):
    if kind == "prior":
        prior = FlowPrior(Z_DIM, num_flows=3)
        return prior, prior().transforms
    encoder = FlowEncoder(8, Z_DIM, [16], num_flows=3)
    x = torch.rand(1, 8)
    return encoder, encoder(x).transforms


def perturb(module: torch.nn.Module, scale: float = 0.3) -> None:
    # Flows start near the identity; move the weights so the test is not trivial.
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize("kind", ["prior", "guide"])
def test_log_det_matches_autograd_and_inverse(kind):
    module, transforms = transforms_of(kind)
    perturb(module)
    for t in transforms:
        u = torch.randn(1, Z_DIM)
        v = t(u)
        jac = jacobian(lambda a, t=t: t(a.unsqueeze(0)).squeeze(0), u.squeeze(0))
        expected = torch.linalg.slogdet(jac).logabsdet
        got = t.log_abs_det_jacobian(u, v).reshape(())
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(t.inv(v), u, atol=1e-4, rtol=1e-4)


def test_flow_prior_density_normalizes_in_2d():
    prior = FlowPrior(2, num_flows=2)
    perturb(prior, scale=0.05)
    grid = torch.linspace(-10, 10, 501)
    zz = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        density = prior().log_prob(zz).exp()
    cell = (grid[1] - grid[0]) ** 2
    assert abs((density.sum() * cell).item() - 1.0) < 0.02


def test_flow_guide_sample_density_matches_change_of_variables():
    encoder = FlowEncoder(8, Z_DIM, [16], num_flows=2)
    perturb(encoder)
    x = torch.rand(3, 8)
    q = encoder(x)
    z = q.rsample()
    # log q(z) = log N(u) - sum log|det J| along the flow, computed from scratch
    base = q.base_dist
    value, log_det = z, torch.zeros(3)
    for t in reversed(q.transforms):
        u = t.inv(value)
        log_det = log_det + t.log_abs_det_jacobian(u, value).reshape(3)
        value = u
    expected = base.log_prob(value) - log_det
    torch.testing.assert_close(q.log_prob(z), expected, atol=1e-4, rtol=1e-4)
