"""Annealed importance sampling and BDMC, checked on HMC invariance and probabilistic PCA."""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae import build_model
from pyrovae.analysis.likelihood.ais import (
    AISResult,
    BDMCResult,
    ais_log_likelihood,
    anneal,
    bdmc,
    guide_initial,
    hmc_transition,
    sigmoid_schedule,
)
from pyrovae.analysis.likelihood.exact import ppca_log_marginal, ppca_posterior, ppca_vae
from pyrovae.analysis.sources import GaussianSource, MixtureSource, PriorSource, fit_source
from pyrovae.train import one_hot

X_DIM, Z_DIM, ACTIVE, NOISE = 8, 6, 3, 0.5
WIDEN, SHIFT = 1.5, 0.3


def ppca_weight() -> tuple[torch.Tensor, torch.Tensor]:
    """W (X, Z) with orthogonal active columns of norms 2, 1.5, 1 and 3 zero columns."""
    q, _ = torch.linalg.qr(torch.randn(X_DIM, ACTIVE))
    w = torch.zeros(X_DIM, Z_DIM)
    w[:, :ACTIVE] = q * torch.tensor([2.0, 1.5, 1.0])
    return w, torch.randn(X_DIM)


@pytest.fixture
def ppca() -> tuple:
    """(exact-guide PPCA, the same model with a widened and shifted guide, data from it)."""
    w, b = ppca_weight()
    exact = ppca_vae(w, b, NOISE)
    inexact = ppca_vae(w, b, NOISE, widen=WIDEN, shift=SHIFT)
    with torch.no_grad():
        x = exact.decoder(torch.randn(24, Z_DIM)).sample()
    return exact, inexact, x


def jeffreys(vae) -> float:
    """KL(q || p(z | x)) + KL(p(z | x) || q) of the widened, shifted PPCA guide (any x).

    Per dim, with posterior sd s, guide sd WIDEN s and mean shifted by SHIFT:
    (WIDEN^2 + WIDEN^-2 - 2) / 2 + SHIFT^2 (1 + WIDEN^-2) / (2 s^2).
    """
    linear = vae.decoder.net[0]
    _, _, cov = ppca_posterior(linear.weight.detach(), linear.bias.detach(), NOISE)
    s2 = cov.diagonal()
    per_dim = 0.5 * (WIDEN**2 + WIDEN**-2 - 2) + 0.5 * SHIFT**2 * (1 + WIDEN**-2) / s2
    return float(per_dim.sum())


def assert_agrees(result: AISResult, exact: torch.Tensor, per_datum_sigmas: float = 5.0) -> None:
    """Each estimate within a few of its own standard errors, the mean within 4 of its own."""
    err = result.per_datum - exact
    assert (err.abs() < per_datum_sigmas * result.per_datum_stderr + 0.02).all(), err
    mean_se = float(result.per_datum_stderr.pow(2).sum().sqrt()) / result.num_data
    assert abs(float(err.mean())) < 4 * mean_se + 0.01, (float(err.mean()), mean_se)


# ----------------------------------------------------------------------------- HMC


def test_hmc_transition_leaves_a_correlated_gaussian_invariant():
    loc = torch.tensor([1.0, -2.0, 0.5])
    tril = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.4, 0.0], [-0.3, 0.5, 0.6]])
    target = torch.distributions.MultivariateNormal(loc, scale_tril=tril)
    cov = tril @ tril.T
    chains, batch = 4000, 2
    z = target.sample((chains, batch))  # start exactly at the target
    # close to the leapfrog's stability limit (2 x the smallest sd, 0.21): without the
    # Metropolis test the covariance comes out 10 standard errors too large
    step = torch.full((chains, batch), 0.38)
    accepts = []
    for _ in range(15):
        z, accept = hmc_transition(target.log_prob, z, step_size=step, leapfrog_steps=5)
        accepts.append(accept)
    rate = float(torch.stack(accepts).mean())
    assert 0.3 < rate < 0.9, rate
    flat = z.reshape(-1, 3).double()
    n = flat.shape[0]
    var = cov.diagonal().double()
    assert ((flat.mean(0) - loc).abs() < 4 * (var / n).sqrt()).all(), flat.mean(0)
    sample_cov = torch.cov(flat.T)
    cov_se = ((var[:, None] * var[None, :] + cov.double().pow(2)) / n).sqrt()
    assert ((sample_cov - cov).abs() < 4 * cov_se).all(), sample_cov


def test_hmc_rejects_diverging_trajectories():
    target = torch.distributions.Normal(torch.zeros(2), torch.ones(2) * 0.01)
    z = torch.zeros(50, 3, 2)
    new, accept = hmc_transition(
        lambda v: target.log_prob(v).sum(-1), z, step_size=5.0, leapfrog_steps=20
    )
    assert torch.equal(new, z)  # every trajectory blew up: nothing moves
    assert (accept == 0).all()


def test_sigmoid_schedule():
    betas = sigmoid_schedule(100)
    assert betas.shape == (101,) and betas.dtype == torch.float64
    assert betas[0] == 0.0 and betas[-1] == 1.0
    steps = betas.diff()
    assert (steps > 0).all()
    assert steps[50] > 10 * steps[0]  # small steps at the ends, large in the middle
    torch.testing.assert_close(betas + betas.flip(0), torch.ones(101, dtype=torch.double))
    torch.testing.assert_close(sigmoid_schedule(1), torch.tensor([0.0, 1.0], dtype=torch.double))
    for delta in (0.0, -0.5, math.nan):
        with pytest.raises(ValueError, match="delta must be positive"):
            sigmoid_schedule(10, delta=delta)


# ----------------------------------------------------------------------------- exact AIS
# A 1-D Gaussian path: g = N(0, 1), gamma(z) = Z N(z; M, S^2), so f_b = g^(1 - b) gamma^b
# is Gaussian and a kernel can sample it exactly; then every state is independent of the
# others and the moments of any estimator built from the states have closed forms.

GAUSS_M, GAUSS_S, GAUSS_LOG_Z = 1.0, 0.5, 0.7


def gauss_log_target(z: torch.Tensor) -> torch.Tensor:
    return GAUSS_LOG_Z + torch.distributions.Normal(GAUSS_M, GAUSS_S).log_prob(z).sum(-1)


def gauss_initial(batch: int, dims: int = 1) -> torch.distributions.Distribution:
    zeros = torch.zeros(batch, dims, dtype=torch.double)
    return torch.distributions.Independent(torch.distributions.Normal(zeros, 1.0), 1)


def exact_kernel(z: torch.Tensor, beta: float) -> torch.Tensor:
    """An exact draw from f_beta: precision (1 - b) + b / S^2, mean (b M / S^2) / precision."""
    precision = (1 - beta) + beta / GAUSS_S**2
    return beta * GAUSS_M / GAUSS_S**2 / precision + torch.randn_like(z) / math.sqrt(precision)


def log_path_integral(beta: float) -> float:
    """log int N(z; 0, 1)^(1 - b) N(z; M, S^2)^b dz (finite for any b with 1 - b + b / S^2 > 0)."""
    precision = (1 - beta) + beta / GAUSS_S**2
    linear = beta * GAUSS_M / GAUSS_S**2
    const = -0.5 * (1 - beta) * math.log(2 * math.pi) - 0.5 * beta * math.log(
        2 * math.pi * GAUSS_S**2
    )
    const -= 0.5 * beta * GAUSS_M**2 / GAUSS_S**2
    return const + linear**2 / (2 * precision) + 0.5 * math.log(2 * math.pi / precision)


def exact_moment(betas: list[float], states: list[int], power: float) -> float:
    """E[(w / Z)^power] for w = prod_t (gamma / g)(z_{k_t})^(b_t - b_{t-1}), increment t taken
    at state k_t = ``states[t - 1]``, z_k ~ f_{b_k} independent (exact transitions):
    prod_k I(b_k + power a_k) / I(b_k), a_k the summed beta steps that use state k."""
    steps: dict[int, float] = {}
    for t, k in enumerate(states, start=1):
        steps[k] = steps.get(k, 0.0) + betas[t] - betas[t - 1]
    return math.exp(
        sum(
            log_path_integral(betas[k] + power * a) - log_path_integral(betas[k])
            for k, a in steps.items()
        )
    )


@pytest.mark.parametrize("betas", [[0.0, 0.5, 1.0], [0.0, 0.3, 0.7, 1.0]])
def test_exact_transitions_pin_the_weight_order_and_the_averaging(betas):
    # With exact transitions E[1/C sum_c w_c] = Z exactly, so exp(log-mean-exp) averages to Z.
    # Increments taken after the transitions, or the mean of the log weights in place of
    # log-mean-exp, have other expectations (closed forms below), hundreds and tens of
    # standard errors away.
    batch, chains, steps = 20_000, 2, len(betas) - 1
    torch.manual_seed(0)
    run = anneal(
        gauss_log_target,
        gauss_initial(batch),
        betas=betas,
        num_chains=chains,
        leapfrog_steps=1,
        kernel=exact_kernel,
    )
    assert run.num_transitions == steps - 1 and torch.isnan(run.acceptance).all()
    result = AISResult.from_log_weights(run.log_weights.T, math.nan, steps, chains, 1)
    ratio = (result.per_datum - GAUSS_LOG_Z).exp()
    se = float(ratio.std()) / math.sqrt(batch)
    assert abs(float(ratio.mean()) - 1) < 4 * se, (float(ratio.mean()), se)
    before = list(range(steps))  # increment t at z_{t-1}
    after = [min(t, steps - 1) for t in range(1, steps + 1)]  # at z_t (no transition at T)
    assert exact_moment(betas, before, 1.0) == pytest.approx(1.0)
    assert exact_moment(betas, after, 1.0) > 1 + 100 * se  # E[w] with the wrong order
    assert exact_moment(betas, before, 1 / chains) ** chains < 1 - 30 * se  # mean of logs
    # the variance of the estimate matches its closed form too (Var w / C)
    variance = (exact_moment(betas, before, 2.0) - 1) / chains
    assert float(ratio.var()) == pytest.approx(variance, rel=0.05)


def test_pilot_adaptation_keeps_the_weights_unbiased():
    # One chain per datum and a fast adaptation: adapting on the chain's own acceptance
    # (pooled over one chain = per chain) biases E[w] by about 5%; the pilot's step sizes
    # share no random numbers with the chain, so E[w] = Z exactly.
    batch = 100_000
    kwargs = dict(
        betas=sigmoid_schedule(5), num_chains=1, leapfrog_steps=3, step_size=0.5, adapt_rate=3.0
    )
    g = gauss_initial(batch, dims=2)

    def mean_and_se(run):
        ratio = (run.log_weights[0] - GAUSS_LOG_Z).exp()
        return float(ratio.mean()) - 1, float(ratio.std()) / math.sqrt(batch)

    torch.manual_seed(0)
    bias, se = mean_and_se(anneal(gauss_log_target, g, **kwargs))  # the default: a pilot
    assert abs(bias) < 4 * se, (bias, se)
    torch.manual_seed(0)
    bias, se = mean_and_se(anneal(gauss_log_target, g, **kwargs, adapt="pooled"))
    assert bias < -6 * se, (bias, se)  # the test can see the bias of self-adaptation


def test_pilot_step_sizes_do_not_depend_on_the_chains():
    g = gauss_initial(50, dims=2)
    kwargs = dict(betas=sigmoid_schedule(10), num_chains=3, leapfrog_steps=2, step_size=0.3)
    pilot_z0 = g.sample((4,))
    histories = {}
    for adapt in ("pilot", "pooled"):
        for shift in (0.0, 2.0):  # the same random numbers, other start states
            torch.manual_seed(1)
            run = anneal(
                gauss_log_target,
                g,
                g.sample((3,)) + shift,
                **kwargs,
                adapt=adapt,
                pilot_z0=pilot_z0,
                record_step_sizes=True,
            )
            histories[adapt, shift] = run.step_history
    assert torch.equal(histories["pilot", 0.0], histories["pilot", 2.0])
    assert not torch.allclose(histories["pooled", 0.0], histories["pooled", 2.0])


# ----------------------------------------------------------------------------- AIS on PPCA


def test_one_step_from_exact_posterior_is_exact_for_every_chain(ppca):
    exact_vae, _, x = ppca
    truth = ppca_log_marginal(exact_vae, x)
    result = ais_log_likelihood(exact_vae, x, num_steps=1, num_chains=8, seed=0)
    assert result.log_weights.shape == (24, 8) and result.log_weights.dtype == torch.float64
    torch.testing.assert_close(result.log_weights, truth[:, None].expand(24, 8), atol=1e-4, rtol=0)
    torch.testing.assert_close(result.per_datum, truth, atol=1e-4, rtol=0)
    assert math.isnan(result.acceptance)  # T = 1 makes no transitions

    def double_initial(xb, yb):  # a float64 start: the chains still run in float32
        q = guide_initial(exact_vae, xb, yb).base_dist
        normal = torch.distributions.Normal(q.loc.double(), q.scale.double())
        return torch.distributions.Independent(normal, 1)

    double = ais_log_likelihood(exact_vae, x, initial=double_initial, num_steps=1, seed=0)
    torch.testing.assert_close(double.per_datum, truth, atol=1e-4, rtol=0)
    # the core routine directly: betas (0, 1), g the exact posterior
    q = guide_initial(exact_vae, x)

    def log_joint(z):
        return exact_vae.decoder(z).log_prob(x) + exact_vae.prior().log_prob(z)

    run = anneal(log_joint, q, betas=[0.0, 1.0], num_chains=5, leapfrog_steps=3, step_size=0.1)
    torch.testing.assert_close(run.log_weights, truth[None].expand(5, 24), atol=1e-4, rtol=0)


def test_ais_with_inexact_guide_agrees_with_exact_marginal(ppca):
    _, vae, x = ppca
    truth = ppca_log_marginal(vae, x)
    plain = ais_log_likelihood(vae, x, num_steps=1, num_chains=16, seed=0)
    result = ais_log_likelihood(vae, x, num_steps=150, num_chains=16, leapfrog_steps=5, seed=0)
    assert_agrees(result, truth)
    assert 0.5 < result.acceptance < 0.9, result.acceptance  # adapted toward 0.65
    # annealing beats importance sampling from the same guide with as many chains
    assert (result.per_datum - truth).abs().mean() < 0.5 * (plain.per_datum - truth).abs().mean()
    assert result.per_datum_stderr.mean() < 0.5 * plain.per_datum_stderr.mean()


def test_ais_for_a_narrow_source_on_inactive_dims(ppca):
    # The source is narrow and off-centre in the dims the decoder ignores, where the
    # guide is the (widened) prior: importance sampling from q wastes most draws there.
    _, vae, x = ppca
    loc = torch.tensor([0.2, -0.1, 0.3, 0.8, -0.6, 0.5])
    scale = torch.tensor([1.0, 0.8, 1.2, 0.15, 0.2, 0.1])
    source = GaussianSource(loc, scale=scale, name="narrow")
    truth = ppca_log_marginal(vae, x, source)
    plain = ais_log_likelihood(vae, x, source=source, num_steps=1, num_chains=16, seed=1)
    assert (plain.per_datum - truth).mean() < -1.0  # the failure of plain IS
    result = ais_log_likelihood(vae, x, source=source, num_steps=150, leapfrog_steps=5, seed=1)
    assert_agrees(result, truth)


def test_ais_for_a_full_covariance_source(ppca):
    _, vae, x = ppca
    loc = torch.linspace(-0.5, 0.5, Z_DIM)
    scale_tril = torch.eye(Z_DIM) * 0.7
    scale_tril[3:, :3] = 0.2
    scale_tril[4, 3] = -0.25
    source = GaussianSource(loc, scale_tril=scale_tril, name="full")
    truth = ppca_log_marginal(vae, x, source)
    result = ais_log_likelihood(vae, x, source=source, num_steps=150, leapfrog_steps=5, seed=2)
    assert_agrees(result, truth)


def test_ais_for_a_mixture_source(ppca):
    _, vae, x = ppca
    locs = torch.stack([torch.full((Z_DIM,), -0.5), torch.full((Z_DIM,), 0.5)])
    trils = torch.eye(Z_DIM).expand(2, Z_DIM, Z_DIM) * torch.tensor([0.6, 0.4])[:, None, None]
    source = MixtureSource(torch.tensor([0.3, -0.3]), locs, trils, name="two")
    truth = ppca_log_marginal(vae, x, source)
    result = ais_log_likelihood(vae, x, source=source, num_steps=150, leapfrog_steps=5, seed=3)
    assert_agrees(result, truth)


def test_ais_for_the_aggregate_posterior(ppca):
    # the exact q(z) = 1/N sum_n q(z | x_n): its log_prob must be differentiable in z
    _, vae, x = ppca
    source = fit_source("aggregate", vae, x)
    truth = ppca_log_marginal(vae, x, source)
    result = ais_log_likelihood(vae, x, source=source, num_steps=100, leapfrog_steps=5, seed=3)
    assert_agrees(result, truth)


def test_custom_initial_and_batches(ppca):
    _, vae, x = ppca
    truth = ppca_log_marginal(vae, x)

    def prior_initial(xb, yb):  # AIS from the prior, as Wu et al. (2017) do
        zeros = torch.zeros(xb.shape[0], Z_DIM)
        return torch.distributions.Independent(torch.distributions.Normal(zeros, 1.0), 1)

    result = ais_log_likelihood(
        vae, x, initial=prior_initial, num_steps=200, leapfrog_steps=5, batch_size=10, seed=4
    )
    assert result.log_weights.shape == (24, 16)
    assert_agrees(result, truth)


def test_recorded_step_sizes_replay_as_a_fixed_schedule(ppca):
    _, vae, x = ppca
    g = guide_initial(vae, x)

    def log_joint(z):
        return vae.decoder(z).log_prob(x) + vae.prior().log_prob(z)

    betas = sigmoid_schedule(20)
    kwargs = dict(betas=betas, num_chains=4, leapfrog_steps=3)
    for adapt in ("pilot", "pooled"):
        torch.manual_seed(1)
        adapted = anneal(
            log_joint, g, **kwargs, step_size=0.05, adapt=adapt, record_step_sizes=True
        )
        steps = adapted.step_history
        assert steps.shape == (19, 4, 24)
        torch.testing.assert_close(steps[0], torch.full((4, 24), 0.05))
        assert (steps[-1] > 0.1).all()  # adapted upward from a small start
        assert torch.equal(steps[:, 0], steps[:, 3])  # one step size for the datum's chains
    # the same random numbers (no pilot drawing its own): replaying gives the same weights
    torch.manual_seed(1)
    replayed = anneal(log_joint, g, **kwargs, step_schedule=steps)
    torch.testing.assert_close(replayed.log_weights, adapted.log_weights, rtol=0, atol=0)
    torch.manual_seed(1)
    fixed = anneal(log_joint, g, **kwargs, step_size=0.05, adapt_rate=0.0)
    torch.manual_seed(1)
    constant = anneal(log_joint, g, **kwargs, step_schedule=torch.tensor(0.05))
    torch.testing.assert_close(constant.log_weights, fixed.log_weights, rtol=0, atol=0)
    torch.manual_seed(1)
    per_chain = anneal(log_joint, g, **kwargs, step_size=0.05, adapt_per_chain=True)
    assert not torch.equal(per_chain.step_size[0], per_chain.step_size[3])


def test_seeding_batches_and_no_parameter_gradients(ppca):
    _, vae, x = ppca
    state = torch.get_rng_state()
    kwargs = dict(num_steps=5, num_chains=4, leapfrog_steps=2, seed=7)
    one = ais_log_likelihood(vae, x, batch_size=24, **kwargs)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    again = ais_log_likelihood(vae, x, batch_size=24, **kwargs)
    torch.testing.assert_close(one.log_weights, again.log_weights, rtol=0, atol=0)
    assert all(p.grad is None for p in vae.parameters())
    assert all(p.requires_grad for p in vae.decoder.parameters())


def test_cvae_uses_labels_and_conditional_source():
    vae = build_model(
        model="cvae",
        prior="vamp",
        num_components=4,
        x_dim=X_DIM,
        z_dim=2,
        y_dim=3,
        hidden_dims=[8],
        likelihood="gaussian",
    ).eval()
    x = torch.randn(9, X_DIM)
    y = one_hot(torch.arange(9) % 3, 3)
    source = PriorSource(vae)
    assert source.conditional
    kwargs = dict(num_steps=10, num_chains=4, leapfrog_steps=3, seed=0)
    trace = ais_log_likelihood(vae, x, y, **kwargs)
    prior = ais_log_likelihood(vae, x, y, source, **kwargs)
    torch.testing.assert_close(prior.log_weights, trace.log_weights, atol=1e-4, rtol=1e-5)
    assert torch.isfinite(trace.per_datum).all()
    result = bdmc(vae, num_data=6, num_steps=5, num_chains=2, leapfrog_steps=2, seed=0)
    assert torch.equal(result.y.argmax(1), torch.arange(6) % 3)  # labels cycle
    assert torch.isfinite(result.lower_per_datum).all()
    assert torch.isfinite(result.upper_per_datum).all()


# ----------------------------------------------------------------------------- BDMC


def test_bdmc_one_step_gap_is_the_jeffreys_divergence(ppca):
    # T = 1, one chain: E[lower] = log p(x) - KL(q || p), E[upper] = log p(x) + KL(p || q)
    _, vae, _ = ppca
    result = bdmc(vae, num_data=400, num_steps=1, num_chains=1, seed=0)
    assert result.x.shape == (400, X_DIM) and result.z.shape == (400, Z_DIM)
    assert abs(result.gap - jeffreys(vae)) < 4 * result.gap_stderr, (result.gap, jeffreys(vae))


def test_bdmc_sandwiches_the_exact_marginal_and_the_gap_shrinks(ppca):
    _, vae, _ = ppca
    steps = [1, 5, 50]
    results = {
        t: bdmc(vae, num_data=64, num_steps=t, num_chains=8, leapfrog_steps=5, seed=5)
        for t in steps
    }
    final = results[50]
    truth = ppca_log_marginal(vae, final.x)
    below = final.lower_per_datum - truth
    above = final.upper_per_datum - truth
    n = final.num_data
    assert float(below.mean()) < 3 * float(below.std()) / math.sqrt(n)
    assert float(above.mean()) > -3 * float(above.std()) / math.sqrt(n)
    # With perfect transitions and one chain the expected gap is sum_t (db_t)^2 Var_t[log w
    # increment] <= max_t db_t * int Var_b db = max_t db_t * J (J: the T = 1 gap, the
    # Jeffreys divergence); more chains only shrink it. HMC is not perfect, so allow 1.5x.
    bound = 1.5 * float(sigmoid_schedule(50).diff().max()) * jeffreys(vae)
    assert final.gap < bound, (final.gap, bound)
    for shorter, longer in zip(steps, steps[1:], strict=False):
        g0, g1 = results[shorter].gap, results[longer].gap
        margin = 2 * math.hypot(results[shorter].gap_stderr, results[longer].gap_stderr)
        assert g1 < g0 - margin, (shorter, g0, longer, g1)
    summary = final.to_dict()
    assert set(summary) == {"lower", "upper", "gap", "gap_stderr", "steps", "chains", "num_data"}
    assert summary["steps"] == 50 and summary["chains"] == 8 and summary["num_data"] == 64
    assert summary["gap"] == pytest.approx(summary["upper"] - summary["lower"])


def test_bdmc_from_a_source(ppca):
    _, vae, _ = ppca
    source = GaussianSource(torch.full((Z_DIM,), 0.4), scale=torch.full((Z_DIM,), 0.5))
    result = bdmc(vae, source, num_data=48, num_steps=40, num_chains=8, leapfrog_steps=5, seed=6)
    truth = ppca_log_marginal(vae, result.x, source)
    below = result.lower_per_datum - truth
    above = result.upper_per_datum - truth
    n = result.num_data
    assert float(below.mean()) < 3 * float(below.std()) / math.sqrt(n)
    assert float(above.mean()) > -3 * float(above.std()) / math.sqrt(n)
    assert result.gap < 0.3
    assert abs(float(result.z.mean()) - 0.4) < 0.1  # z were drawn from the source


# ----------------------------------------------------------------------------- results, errors


def test_result_summaries_are_plain():
    lw = torch.tensor([[0.0, 0.0], [math.log(3.0), math.log(1.0)]], dtype=torch.double)
    result = AISResult(
        per_datum=torch.tensor([0.0, math.log(2.0)], dtype=torch.double),
        per_datum_stderr=torch.zeros(2, dtype=torch.double),
        log_weights=lw,
        acceptance=0.6,
        num_steps=3,
        num_chains=2,
        leapfrog_steps=4,
    )
    summary = result.to_dict()
    counts = {"steps", "chains", "leapfrog_steps", "num_data"}
    assert all(type(v) is (int if k in counts else float) for k, v in summary.items())
    assert summary["loglik"] == pytest.approx(math.log(2.0) / 2)
    assert summary["steps"] == 3 and summary["chains"] == 2
    bd = BDMCResult(
        lower_per_datum=torch.tensor([-2.0, -4.0]),
        upper_per_datum=torch.tensor([-1.0, -3.0]),
        x=torch.zeros(2, 1),
        y=None,
        z=torch.zeros(2, 1),
        forward=result,
        reverse=result,
        num_steps=3,
        num_chains=2,
        num_data=2,
    )
    assert bd.to_dict() == {
        "lower": -3.0,
        "upper": -2.0,
        "gap": 1.0,
        "gap_stderr": 0.0,
        "steps": 3,
        "chains": 2,
        "num_data": 2,
    }


def test_delta_method_stderr(ppca):
    _, vae, x = ppca
    result = ais_log_likelihood(vae, x, num_steps=2, num_chains=6, leapfrog_steps=1, seed=0)
    w = (result.log_weights - result.log_weights.max(1, keepdim=True).values).exp()
    expected = w.std(1) / (math.sqrt(6) * w.mean(1))
    torch.testing.assert_close(result.per_datum_stderr, expected)
    single = ais_log_likelihood(vae, x, num_steps=2, num_chains=1, leapfrog_steps=1, seed=0)
    assert torch.isnan(single.per_datum_stderr).all()
    assert not math.isnan(single.stderr)  # the spread over data is still defined


def test_bad_arguments_name_the_argument(ppca):
    _, vae, x = ppca
    for name in ("num_steps", "num_chains", "leapfrog_steps", "batch_size"):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer, got 0"):
            ais_log_likelihood(vae, x, **{name: 0})
    for step_size in (-1.0, 0.0, float("inf"), math.nan):
        with pytest.raises(ValueError, match="step_size must be a positive float"):
            ais_log_likelihood(vae, x, step_size=step_size)
    with pytest.raises(ValueError, match="pilot_chains must be a positive integer, got 0"):
        ais_log_likelihood(vae, x, pilot_chains=0)
    with pytest.raises(ValueError, match=r"adapt must be one of \['pilot', 'pooled'"):
        ais_log_likelihood(vae, x, adapt="own")
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(num_data, 8\)"):
        ais_log_likelihood(vae, x[:, :3])
    with pytest.raises(ValueError, match="y was given for an unconditional VAE"):
        ais_log_likelihood(vae, x, torch.zeros(24, 2))
    with pytest.raises(ValueError, match="x is on meta but the model is on cpu"):
        ais_log_likelihood(vae, x.to("meta"))
    wrong = GaussianSource(torch.zeros(3), scale=torch.ones(3))
    with pytest.raises(ValueError, match="z_dim=3"):
        ais_log_likelihood(vae, x, source=wrong)
    with pytest.raises(ValueError, match="source must have log_prob"):
        ais_log_likelihood(vae, x, source=object())
    elsewhere = GaussianSource(torch.zeros(Z_DIM), scale=torch.ones(Z_DIM)).to("meta")
    with pytest.raises(ValueError, match=r"source is on meta but the model is on cpu"):
        ais_log_likelihood(vae, x, source=elsewhere)

    def bad_initial(xb, yb):
        return torch.distributions.Normal(torch.zeros(xb.shape[0], Z_DIM), 1.0)

    with pytest.raises(ValueError, match=r"initial\(x, y\) must return a Distribution"):
        ais_log_likelihood(vae, x, initial=bad_initial, num_steps=2)
    with pytest.raises(ValueError, match="num_data must be a positive integer"):
        bdmc(vae, num_data=0)


def test_bad_anneal_arguments():
    g = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(4, 2), 1.0), 1)

    def log_target(z):
        return -0.5 * z.pow(2).sum(-1)

    ok = dict(betas=[0.0, 0.5, 1.0], num_chains=3, leapfrog_steps=2, step_size=0.1)
    assert anneal(log_target, g, **ok).log_weights.shape == (3, 4)
    cases = [
        ({"betas": [0.0]}, "at least 2 values"),
        ({"betas": [0.0, 1.5]}, r"betas must lie in \[0, 1\]"),
        ({"betas": [0.0, 0.7, 0.3, 1.0]}, "betas must be monotone"),
        ({"betas": [1.0, 0.0]}, "betas must start at 0 when z0 is drawn"),
        ({"step_size": 0.0}, "step_size must be positive"),
        ({"step_size": torch.ones(5)}, "step_size must be a float or a tensor"),
        ({"target_accept": 1.0}, "target_accept must lie in"),
        ({"adapt_rate": -0.1}, "adapt_rate must be >= 0"),
        ({"num_chains": 0}, "num_chains must be a positive integer"),
        ({"inverse_mass": torch.ones(3)}, "inverse_mass must broadcast"),
        ({"adapt": "chains"}, r"adapt must be one of \['pilot', 'pooled', 'per_chain'\]"),
        ({"adapt": "pooled", "adapt_per_chain": True}, "adapt_per_chain=True contradicts"),
        ({"pilot_chains": 0}, "pilot_chains must be a positive integer"),
        ({"pilot_z0": torch.zeros(3, 4, 2)}, r"pilot_z0 must have shape .* = \(4, 4, 2\)"),
        ({"kernel": lambda z, beta: z[0]}, r"kernel\(z, beta\) must return z's shape"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            anneal(log_target, g, **{**ok, **change})
    with pytest.raises(ValueError, match=r"z0 must have shape \(num_chains, batch, z_dim\)"):
        anneal(log_target, g, torch.zeros(2, 4, 2), **ok)
    with pytest.raises(
        ValueError, match=r"z0 must have shape \(chains, batch, z_dim\), got \(3, 8\)"
    ):
        anneal(log_target, g, torch.zeros(3, 8), **ok)  # a tensor of the wrong rank
    with pytest.raises(ValueError, match="initial must have batch shape"):
        anneal(log_target, torch.distributions.Normal(torch.zeros(4, 2), 1.0), **ok)
    with pytest.raises(ValueError, match=r"log_target\(z\) must return shape \(7, 4\)"):
        anneal(lambda z: z.sum(), g, **ok)  # 3 chains and 4 pilot chains
    # reverse runs start from given states; a pilot needs its own exact draws
    reverse = {**ok, "betas": [1.0, 0.5, 0.0]}
    with pytest.raises(ValueError, match=r"adapt='pilot' needs pilot start states .* pilot_z0"):
        anneal(log_target, g, torch.zeros(3, 4, 2), **reverse)
    run = anneal(log_target, g, torch.zeros(3, 4, 2), **reverse, pilot_z0=torch.zeros(4, 4, 2))
    assert run.num_transitions == 1 and run.z.shape == (3, 4, 2)
    run = anneal(log_target, g, torch.zeros(3, 4, 2), **reverse, adapt_rate=0.0)
    assert run.num_transitions == 1 and run.z.shape == (3, 4, 2)
