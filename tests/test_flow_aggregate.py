"""The exact aggregate q(z) = 1/N sum_n q(z | x_n) of the flow guide: one network pass per pair
(analysis.flow_pairs), the default cap on its encodings, and the setting that lifts it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pyrovae.analysis.evaluation.compare import compare_sources
from pyrovae.analysis.evaluation.reuse import fitting_options
from pyrovae.analysis.sources import AggregatePosterior, Encodings, fit_source
from pyrovae.analysis.sources.flow_pairs import FlowPairs, supports
from pyrovae.build import build_model
from pyrovae.cli import build_parser
from pyrovae.cli.evaluation_flags import settings_from
from pyrovae.guides import FlowEncoder
from pyrovae.settings import AGGREGATE_COMPONENTS, EvaluationSettings

X_DIM = 6


def flow_vae(z_dim: int = 4, **overrides):
    config = dict(x_dim=X_DIM, z_dim=z_dim, hidden_dims=[16], likelihood="gaussian", guide="flow")
    config.update(overrides)
    return build_model(**config).eval()


def direct_log_probs(encoder, x, z, y=None):
    """log q(z_b | x_n) through the guide's own log_prob (z_dim passes per pair): (B, N)."""
    with torch.no_grad():
        rows = []
        for n in range(x.shape[0]):
            q = encoder(x[n : n + 1], None if y is None else y[n : n + 1])
            rows.append(q.log_prob(z))
        return torch.stack(rows, -1)


@pytest.mark.parametrize(
    "num_flows, flow_hidden_dims, y_dim, block",
    [(2, None, 0, 2), (3, [10, 12], 0, 1), (1, [16], 3, 8)],
)
def test_pairs_equal_the_guides_log_prob(num_flows, flow_hidden_dims, y_dim, block):
    """Every (point, datum) pair, in float64 to 1e-10 nats, for 1 to 3 steps, one or two
    hidden layers per step, coordinates solved in blocks of 1, 2 (uneven: z_dim 5) or all
    at once, and a CVAE's guide q(z | x, y)."""
    z_dim = 5
    encoder = FlowEncoder(
        X_DIM, z_dim, [16], y_dim, num_flows=num_flows, flow_hidden_dims=flow_hidden_dims
    )
    encoder = encoder.double().eval()
    assert supports(encoder)
    x = torch.randn(13, X_DIM, dtype=torch.float64)
    y = torch.eye(3, dtype=torch.float64)[torch.arange(13) % 3] if y_dim else None
    with torch.no_grad():
        z = encoder(x[:7], None if y is None else y[:7]).sample() + 0.3
        # a chunk smaller than N: several blocks of data per point, several points per chunk
        pairs = FlowPairs(encoder, x, y, batch_size=5, pair_chunk=8, block=block)
        got = pairs.log_prob(z, 2, 11)
        lse = pairs.logsumexp(z)
    want = direct_log_probs(encoder, x, z, y)
    torch.testing.assert_close(got, want[:, 2:11], atol=1e-10, rtol=0)
    torch.testing.assert_close(lse, torch.logsumexp(want, -1), atol=1e-10, rtol=0)


def test_aggregate_of_the_flow_guide_is_the_exact_mixture():
    """float32 model as trained; the fast path and the guide's log_prob (used with
    gradients on) agree with logsumexp_n log q(z | x_n) - log N."""
    vae = flow_vae()
    x = torch.randn(40, X_DIM)
    aggregate = fit_source("aggregate", vae, x, flow_components=None)
    assert aggregate.num_components == 40 and aggregate.flow_pairs() is not None
    z = torch.randn(3, 5, 4)
    want = torch.logsumexp(direct_log_probs(vae.encoder, x, z.reshape(-1, 4)), -1) - math.log(40)
    with torch.no_grad():
        fast = aggregate.log_prob(z)
    zg = z.clone().requires_grad_()
    slow = aggregate.log_prob(zg)  # gradients on: the guide's own log_prob
    (grad,) = torch.autograd.grad(slow.sum(), zg)
    torch.testing.assert_close(fast, want.reshape(3, 5), atol=1e-4, rtol=0)
    torch.testing.assert_close(slow.detach(), want.reshape(3, 5), atol=1e-4, rtol=0)
    assert torch.isfinite(grad).all()


def test_encoder_runs_once_per_datum_across_calls(monkeypatch):
    """The encoder's data-dependent part is computed once per datum and reused by every
    draw and every later call, until the encoder's parameters change."""
    vae = flow_vae()
    x = torch.randn(30, X_DIM)
    aggregate = fit_source("aggregate", vae, x, flow_components=None)
    encoded = []
    encode = type(vae.encoder).encode

    def counting(self, xb, yb=None):
        encoded.append(xb.shape[0])
        return encode(self, xb, yb)

    monkeypatch.setattr(type(vae.encoder), "encode", counting)
    with torch.no_grad():
        before = aggregate.log_prob(torch.randn(50, 4))
        once = sum(encoded)
        aggregate.log_prob(torch.randn(70, 4))
        # once per datum (plus one datum to read the order of the flow's steps)
        assert sum(encoded) == once <= 31
        z = torch.randn(6, 4)
        first = aggregate.log_prob(z)
        for p in vae.encoder.parameters():
            p.add_(0.05)  # an optimizer step: the tables are rebuilt
        after = aggregate.log_prob(z)
    assert sum(encoded) > once and torch.isfinite(before).all()
    want = torch.logsumexp(direct_log_probs(vae.encoder, x, z), -1) - math.log(30)
    torch.testing.assert_close(after, want, atol=1e-4, rtol=0)
    assert not torch.allclose(first, after)


def test_generic_path_agrees_with_the_diagonal_path():
    """A diagonal guide scored through the generic path (its q(z | x_n).log_prob) gives the
    diagonal path's float64 mixture."""
    vae = flow_vae(guide="diagonal")
    x = torch.randn(25, X_DIM)
    enc = Encodings(vae, x)
    diagonal = AggregatePosterior(enc, tolerance=0)
    fake = SimpleNamespace(
        diagonal=False, x=x, y=None, vae=vae, batch_size=7, z_dim=4, num_data=25, device=x.device
    )
    generic = AggregatePosterior(fake, chunk_size=16 * 30)  # several chunks of points
    assert generic.flow_pairs() is None  # not the flow guide: its own log_prob
    z = torch.randn(40, 4)
    with torch.no_grad():
        torch.testing.assert_close(
            generic.log_prob(z), diagonal.log_prob(z).float(), atol=1e-5, rtol=0
        )


def test_flow_guide_is_capped_by_default_and_says_how_to_lift_it(capsys):
    vae = flow_vae()
    n = AGGREGATE_COMPONENTS + 20
    x = torch.randn(n, X_DIM)
    capped = fit_source("aggregate", vae, x)
    err = capsys.readouterr().err
    assert capped.num_components == AGGREGATE_COMPONENTS
    assert len(err.strip().splitlines()) == 1
    assert f"random {AGGREGATE_COMPONENTS} of the {n} training encodings" in err
    assert "--aggregate-components all" in err and "flow_components=None" in err
    # the capped source is the exact mixture over its subset, a seeded one
    again = fit_source("aggregate", vae, x)
    assert torch.equal(again.x, capped.x) and "--aggregate-components" in capsys.readouterr().err
    assert capped.x.shape[0] == torch.unique(capped.x, dim=0).shape[0]
    z = torch.randn(8, 4)
    want = torch.logsumexp(direct_log_probs(vae.encoder, capped.x, z), -1)
    with torch.no_grad():
        torch.testing.assert_close(
            capped.log_prob(z), want - math.log(AGGREGATE_COMPONENTS), atol=1e-4, rtol=0
        )
    # asked for: the exact sum over all n, silently; or another cap
    exact = fit_source("aggregate", vae, x, flow_components=None)
    assert exact.num_components == n and capsys.readouterr().err == ""
    assert fit_source("aggregate", vae, x, flow_components=7).num_components == 7
    assert "random 7 of the" in capsys.readouterr().err
    with pytest.raises(ValueError, match="flow_components"):
        fit_source("aggregate", vae, x, flow_components=0)


def test_diagonal_guide_is_never_capped(capsys):
    vae = flow_vae(guide="diagonal")
    x = torch.randn(AGGREGATE_COMPONENTS + 20, X_DIM)
    for options in ({}, {"flow_components": 5}):
        source = fit_source("aggregate", vae, x, **options)
        assert source.num_components == AGGREGATE_COMPONENTS + 20
    assert capsys.readouterr().err == ""


def test_aggregate_components_setting_and_flag():
    """Stored as an integer or 'all' (None when 'aggregate' is not evaluated); an older
    evaluation.json without the key matches the default only."""
    default = EvaluationSettings()
    assert default.to_dict()["aggregate_components"] == AGGREGATE_COMPONENTS
    old = {k: v for k, v in default.to_dict().items() if k != "aggregate_components"}
    assert default.differences(old) == []
    exact = EvaluationSettings(aggregate_components="all")
    assert exact.differences(old) == [
        f"aggregate_components: not stored (read as {AGGREGATE_COMPONENTS}), asked 'all'"
    ]
    assert exact.differences(exact.to_dict()) == []
    # unused without the aggregate source
    no_aggregate = EvaluationSettings(sources=("gmm",), aggregate_components=5)
    assert no_aggregate.to_dict()["aggregate_components"] is None
    assert no_aggregate.differences(EvaluationSettings(sources=("gmm",)).to_dict()) == []
    for bad in (0, "some", True):
        with pytest.raises(ValueError, match="aggregate_components must be"):
            EvaluationSettings(aggregate_components=bad)
    # the default adds no fitting option, so runs evaluated before keep their saved sources
    assert "aggregate" not in fitting_options(default)
    assert fitting_options(exact)["aggregate"] == {"flow_components": None}
    assert fitting_options(EvaluationSettings(aggregate_components=9))["aggregate"] == {
        "flow_components": 9
    }
    for command in (["evaluate", "RUN"], ["report", "RUN", "--out", "r.html"]):
        args = build_parser().parse_args([*command, "--aggregate-components", "all"])
        settings, asked = settings_from(args)
        assert settings.aggregate_components == "all" and "aggregate_components" in asked
        args = build_parser().parse_args([*command, "--aggregate-components", "300"])
        assert settings_from(args)[0].aggregate_components == 300
        assert "aggregate_components" not in settings_from(build_parser().parse_args(command))[1]
        with pytest.raises(SystemExit):
            build_parser().parse_args([*command, "--aggregate-components", "0"])


def test_compare_sources_caps_a_flow_guide_once_and_lifts_it_when_asked(mnist, capsys):
    """The README's call, scaled down: one line on stderr for the capped aggregate, finite
    estimates either way."""
    vae = build_model(z_dim=3, hidden_dims=[16], guide="flow").eval()
    kwargs = dict(num_samples=10, num_train=AGGREGATE_COMPONENTS + 10, num_test=4, progress=False)
    capped = compare_sources(vae, mnist.train, mnist.test, ["prior", "aggregate"], **kwargs)
    err = capsys.readouterr().err
    assert err.count("--aggregate-components all") == 1
    assert capped.sources["aggregate"].num_components == AGGREGATE_COMPONENTS
    options = {"aggregate": {"flow_components": None}}
    exact = compare_sources(
        vae, mnist.train, mnist.test, ["prior", "aggregate"], options=options, **kwargs
    )
    assert "--aggregate-components" not in capsys.readouterr().err
    assert exact.sources["aggregate"].num_components == AGGREGATE_COMPONENTS + 10
    for comparison in (capped, exact):
        assert math.isfinite(comparison.to_dict()["aggregate"]["loglik"])
