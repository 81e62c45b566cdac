"""Figures: each returns a Figure with the expected axes and artists, and saves to PNG."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

from pyrovae import build_model
from pyrovae.analysis import figures as F
from pyrovae.analysis.quality.classifier import MNISTClassifier
from pyrovae.train import one_hot

matplotlib.use("Agg")  # headless; the library itself never picks a backend


class PriorSource:
    """A stand-in latent source: the model's own (unconditional) prior."""

    def __init__(self, vae, name: str = "prior") -> None:
        self.vae, self.name = vae, name

    def sample(self, n: int) -> torch.Tensor:
        return self.vae.prior().sample((n,))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.prior().log_prob(z)


class GaussianSource:
    def __init__(self, loc: torch.Tensor, scale: float = 0.5, name: str = "gaussian") -> None:
        self.dist = torch.distributions.Normal(loc, scale * torch.ones_like(loc))
        self.name = name

    def sample(self, n: int) -> torch.Tensor:
        return self.dist.sample((n,))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.dist.log_prob(z).sum(-1)


@pytest.fixture(scope="module")
def test_data(mnist):
    x, labels = mnist.test.x[:2000], mnist.test.y[:2000]
    return x, labels, one_hot(labels, 10)


def gids(ax, gid: str) -> list:
    return [a for a in ax.get_children() if a.get_gid() == gid]


def assert_png(fig: Figure, path) -> None:
    out = F.save_figure(fig, path)
    assert out == path
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_reconstructions(small_vae, small_cvae, test_data, tmp_path):
    x, _, y = test_data
    fig = F.plot_reconstructions(small_vae, x, n=8)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    assert all(len(ax.images) == 1 for ax in fig.axes)
    assert fig.axes[0].images[0].get_array().shape == (28, 8 * 30 - 2)
    assert_png(fig, tmp_path / "recon.png")
    assert len(F.plot_reconstructions(small_cvae, x, y=y, n=4).axes) == 2
    with pytest.raises(ValueError, match="y is required for a CVAE"):
        F.plot_reconstructions(small_cvae, x)
    with pytest.raises(ValueError, match="unconditional VAE; drop y"):
        F.plot_reconstructions(small_vae, x, y=y)
    with pytest.raises(ValueError, match="n=3000 is more than the 2000 rows"):
        F.plot_reconstructions(small_vae, x, n=3000)


def test_samples_one_panel_per_source(small_vae, tmp_path):
    sources = {
        "prior": PriorSource(small_vae),
        "shifted": GaussianSource(torch.tensor([1.0, -1.0])),
    }
    scores = {"prior": {"loglik": -150.0, "stderr": 0.5, "entropy": 0.4, "frechet": 3.0}}
    fig = F.plot_samples(small_vae, sources, n=16, scores=scores)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == ["prior", "shifted"]
    assert "log-lik -150.0" in fig.axes[0].get_title()
    assert all(len(ax.images) == 1 for ax in fig.axes)
    assert_png(fig, tmp_path / "samples.png")
    # A list of named sources works too.
    assert len(F.plot_samples(small_vae, list(sources.values()), n=4).axes) == 2
    with pytest.raises(ValueError, match=r"source 'bad'.sample\(4\) must return .* \(4, 2\)"):
        F.plot_samples(small_vae, {"bad": GaussianSource(torch.zeros(3))}, n=4)
    with pytest.raises(ValueError, match="sources is empty"):
        F.plot_samples(small_vae, {})


def test_cvae_samples_need_y(small_cvae):
    sources = {"prior": PriorSource(small_cvae)}
    y = one_hot(torch.arange(9) % 10, 10)
    assert len(F.plot_samples(small_cvae, sources, n=9, y=y).axes) == 1
    with pytest.raises(ValueError, match=r"y must be one-hot labels of shape \(9, 10\)"):
        F.plot_samples(small_cvae, sources, n=9, y=y[:3])


def test_latent_ellipses(small_vae, test_data, tmp_path):
    x, labels, _ = test_data
    fig = F.plot_latent_ellipses(small_vae, x, labels)
    (ax,) = fig.axes
    assert len(gids(ax, "class-ellipse")) == 10 * 3
    assert len(gids(ax, "prior-ellipse")) == 3  # N(0, I) at 1, 2, 3 sd
    assert len(gids(ax, "class-label")) >= 1
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:10] == [str(c) for c in range(10)] and texts[10] == "prior N(0, I)"
    assert ax.get_xlabel() == "$z_{1}$" and ax.get_ylabel() == "$z_{2}$"
    assert_png(fig, tmp_path / "ellipses.png")


def test_class_gaussians_are_the_mixture_moments():
    loc = np.array([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0]])
    scale = np.array([[1.0, 2.0], [3.0, 2.0], [1.0, 1.0]])
    stats = F.class_gaussians(loc, scale, np.array([4, 4, 7]))
    mean, cov, count = stats[4]
    assert count == 2 and np.allclose(mean, [1.0, 0.0])
    # Cov of the means (population) + mean of the variances.
    assert np.allclose(cov, np.diag([1.0, 0.0]) + np.diag([5.0, 4.0]))
    assert np.allclose(stats[7][1], np.eye(2))


def test_prior_ellipses_have_the_right_size(small_vae, test_data):
    x, labels, _ = test_data
    ax = F.plot_latent_ellipses(small_vae, x[:200], labels[:200]).axes[0]
    prior = gids(ax, "prior-ellipse")
    assert [(e.width, e.height) for e in prior] == [(2.0, 2.0), (4.0, 4.0), (6.0, 6.0)]
    assert all(tuple(e.center) == (0.0, 0.0) for e in prior)


def test_latent_ellipses_into_given_axes(small_vae, test_data):
    x, labels, _ = test_data
    fig = Figure()
    ax = fig.subplots()
    assert F.plot_latent_ellipses(small_vae, x, labels, ax=ax, sds=(1.0, 2.0)) is fig
    assert len(gids(ax, "class-ellipse")) == 10 * 2
    assert ax.get_legend() is not None


def test_latent_ellipses_cvae(small_cvae, test_data):
    x, labels, y = test_data
    fig = F.plot_latent_ellipses(small_cvae, x, labels, y=y)
    assert len(gids(fig.axes[0], "class-ellipse")) == 30
    with pytest.raises(ValueError, match="y is required for a CVAE"):
        F.plot_latent_ellipses(small_cvae, x, labels)


def test_latent_ellipses_higher_z_uses_pca(test_data):
    x, labels, _ = test_data
    vae = build_model(z_dim=5, hidden_dims=[32]).eval()
    fig = F.plot_latent_ellipses(vae, x[:500], labels[:500])
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC1 of encoder means")
    assert len(gids(ax, "class-ellipse")) == 30
    fig = F.plot_latent_ellipses(vae, x[:500], labels[:500], projection=(3, 1))
    assert fig.axes[0].get_xlabel() == "$z_{4}$"
    p = F.pca_projection(vae, x[:500])
    assert p.shape == (5, 2)
    assert torch.allclose(p.T @ p, torch.eye(2, dtype=p.dtype), atol=1e-8)
    fig = F.plot_latent_ellipses(vae, x[:500], labels[:500], projection=p)
    assert fig.axes[0].get_xlabel() == "projection 1"
    with pytest.raises(ValueError, match=r"projection must be a \(5, 2\) matrix"):
        F.plot_latent_ellipses(vae, x[:500], labels[:500], projection=torch.zeros(4, 2))
    with pytest.raises(ValueError, match="two different latent dims"):
        F.plot_latent_ellipses(vae, x[:500], labels[:500], projection=(1, 1))


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_non_gaussian_prior_is_contoured(prior, test_data):
    x, labels, _ = test_data
    vae = build_model(z_dim=2, hidden_dims=[32], prior=prior, num_components=5).eval()
    fig = F.plot_latent_ellipses(vae, x[:300], labels[:300])
    ax = fig.axes[0]
    assert any(isinstance(c, ContourSet) for c in ax.collections)
    assert not gids(ax, "prior-ellipse")
    assert [t.get_text() for t in fig.legends[0].get_texts()][-1] == "prior p(z)"


def test_label_checks(small_vae, test_data):
    x, labels, y = test_data
    with pytest.raises(ValueError, match="labels must be integer classes, got dtype"):
        F.plot_latent_ellipses(small_vae, x, y.argmax(-1).float())
    with pytest.raises(ValueError, match=r"labels must be integer classes of shape \(2000,\)"):
        F.plot_latent_ellipses(small_vae, x, labels[:10])
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(N, 784\)"):
        F.plot_latent_ellipses(small_vae, x.reshape(-1, 28, 28), labels)


def test_latent_space_train_and_test(small_vae, mnist, tmp_path):
    fig = F.plot_latent_space(small_vae, mnist, max_points=500)
    train_ax, test_ax = fig.axes
    assert train_ax.get_title().startswith("train (N=50,000)")
    assert test_ax.get_title().startswith("test (N=10,000)")
    assert train_ax.get_xlim() == test_ax.get_xlim()
    assert train_ax.get_ylim() == test_ax.get_ylim()
    assert len(gids(train_ax, "class-ellipse")) == len(gids(test_ax, "class-ellipse")) == 30
    assert len(fig.legends) == 1
    assert_png(fig, tmp_path / "space.png")


def test_latent_space_cvae_and_pairs(small_cvae, test_data):
    x, labels, _ = test_data
    data = {"first half": (x[:1000], labels[:1000]), "second half": (x[1000:], labels[1000:])}
    fig = F.plot_latent_space(small_cvae, data)
    assert [ax.get_title().split(" (")[0] for ax in fig.axes] == ["first half", "second half"]


def test_traversal(small_vae, test_data, tmp_path):
    x, labels, _ = test_data
    fig = F.plot_traversal(small_vae, x, labels, digit=9, grid=5)
    (ax,) = fig.axes
    texts = gids(ax, "tile-coordinates")
    assert len(texts) == 25
    assert len(gids(ax, "centre-tile")) == 1
    assert len(ax.images) == 1
    # The centre tile shows the class mean of the encoder means.
    loc, _, _ = small_vae.encoder.encode(x[labels == 9])
    centre = loc.mean(0).tolist()
    assert texts[12].get_text() == f"{centre[0]:.1f}, {centre[1]:.1f}"
    assert_png(fig, tmp_path / "traversal.png")
    fig = F.plot_traversal(small_vae, x, labels, digit=3, grid=4, span=(1.0, 0.5))
    assert len(gids(fig.axes[0], "tile-coordinates")) == 16
    assert not gids(fig.axes[0], "centre-tile")  # an even grid has no centre tile


def test_traversal_checks_and_other_models(small_vae, small_cvae, test_data):
    x, labels, y = test_data
    with pytest.raises(ValueError, match=r"digit must be in \[0, 10\), got 10"):
        F.plot_traversal(small_vae, x, labels, digit=10)
    with pytest.raises(ValueError, match="digit=9 does not occur in labels"):
        F.plot_traversal(small_vae, x[labels != 9], labels[labels != 9], digit=9)
    with pytest.raises(ValueError, match="grid must be an integer between 2 and 25"):
        F.plot_traversal(small_vae, x, labels, grid=1)
    with pytest.raises(ValueError, match="span must be a positive number"):
        F.plot_traversal(small_vae, x, labels, span=-1.0)
    fig = F.plot_traversal(small_cvae, x, labels, digit=4, grid=3, y=y)
    assert len(gids(fig.axes[0], "tile-coordinates")) == 9
    vae5 = build_model(z_dim=5, hidden_dims=[32]).eval()
    fig = F.plot_traversal(vae5, x[:500], labels[:500], digit=1, grid=3)
    assert fig.axes[0].get_xlabel().startswith("PC1")
    assert "other coordinates at the class mean" in fig.axes[0].get_title()


def test_neighbourhood(small_vae, test_data, tmp_path):
    x, labels, _ = test_data
    fig = F.plot_neighbourhood(small_vae, x, labels, digit=9, resolution=20)
    left, right = fig.axes
    assert len(gids(left, "traversal-window")) == len(gids(right, "traversal-window")) == 1
    assert len(gids(left, "class-ellipse")) == 30
    assert len(right.images) == 1 and right.images[0].get_array().shape == (20, 20, 3)
    assert "Gaussian fits" in right.get_title()
    assert_png(fig, tmp_path / "neighbourhood.png")
    fig = F.plot_neighbourhood(
        small_vae, x, labels, digit=9, resolution=8, classifier=MNISTClassifier().eval()
    )
    assert "classifier" in fig.axes[1].get_title()


def test_cvae_style(small_cvae, small_vae, tmp_path):
    fig = F.plot_cvae_style(small_cvae, digit=3, grid=5, span=2.0)
    (ax,) = fig.axes
    texts = [t.get_text() for t in gids(ax, "tile-coordinates")]
    assert len(texts) == 25
    assert texts[0] == "-2.0, 2.0" and texts[12] == "0.0, 0.0" and texts[-1] == "2.0, -2.0"
    assert "y = 3" in ax.get_title()
    assert_png(fig, tmp_path / "style.png")
    with pytest.raises(ValueError, match="needs a CVAE"):
        F.plot_cvae_style(small_vae, digit=3)
    with pytest.raises(ValueError, match=r"digit must be in \[0, 10\), got -1"):
        F.plot_cvae_style(small_cvae, digit=-1)


def test_class_samples(small_cvae, small_vae, tmp_path):
    fig = F.plot_class_samples(small_cvae, n=6)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(c) for c in range(10)]
    assert ax.images[0].get_array().shape == (10 * 30 - 2, 6 * 30 - 2)
    assert_png(fig, tmp_path / "class_samples.png")
    fig = F.plot_class_samples(small_cvae, n=4, classifier=MNISTClassifier().eval())
    assert all("%" in t.get_text() for t in fig.axes[0].get_yticklabels())
    per_class = {c: GaussianSource(torch.randn(2), name=f"g[{c}]") for c in range(10)}
    fig = F.plot_class_samples(small_vae, per_class, n=4)
    assert len(fig.axes[0].get_yticklabels()) == 10
    with pytest.raises(ValueError, match="one latent source per class"):
        F.plot_class_samples(small_vae)
    with pytest.raises(ValueError, match=r"sources lacks classes \[9\]"):
        F.plot_class_samples(small_cvae, {c: per_class[c] for c in range(9)})


def test_training_curves(tmp_path):
    rows = [
        {"epoch": e, "train_elbo": -200.0 + 10 * e, "val_elbo": -195.0 + 9 * e, "kl_weight": 1.0}
        for e in range(1, 6)
    ]
    fig = F.plot_training_curves(rows)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["train ELBO", "validation ELBO"] and "epoch 5" in labels[2]
    assert_png(fig, tmp_path / "curves.png")
    warm = [dict(r, kl_weight=min(1.0, r["epoch"] / 3)) for r in rows]
    assert len(F.plot_training_curves(warm).axes) == 2  # KL weight on a twin axis
    with pytest.raises(ValueError, match=r"metrics_rows\[0\] lacks \['val_elbo'\]"):
        F.plot_training_curves([{"epoch": 1, "train_elbo": -1.0}])
    with pytest.raises(ValueError, match="metrics_rows is empty"):
        F.plot_training_curves([])


def _marker_x(ax, marker: str) -> list[float]:
    """x of every data point drawn with ``marker`` (error-bar points and clipped triangles)."""
    return [
        float(line.get_xdata()[0])
        for line in ax.lines
        if line.get_marker() == marker and len(line.get_xdata()) == 1
    ]


def test_loglik_differences(tmp_path):
    results = {
        "prior": {"loglik": -160.3, "stderr": 0.5, "khat_gt_0.7": 0.02},
        "aggregate": {"loglik": -158.1, "stderr": 0.4},
        "flow": {"loglik": -158.4, "stderr": 0.4, "vs_prior": 1.9, "vs_prior_stderr": 1.5},
    }
    fig = F.plot_loglik(results)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(results)
    # differences to the prior, the prior itself at 0 (and the zero line)
    assert _marker_x(ax, "o") == pytest.approx([0.0, 2.2, 1.9])
    assert any(list(line.get_xdata()) == [0.0, 0.0] for line in ax.lines)
    texts = [t.get_text() for t in ax.texts]
    half = 1.96 * np.hypot(0.4, 0.5)  # no paired error for aggregate: both combined
    assert texts[0] == "reference  k̂>0.7: 2%"
    assert texts[1] == f"+2.20 ± {half:.2f}" and texts[2] == f"+1.90 ± {1.96 * 1.5:.2f}"
    # green only where the difference is beyond 1.96 standard errors
    colours = {
        round(float(line.get_xdata()[0]), 2): matplotlib.colors.to_hex(line.get_color())
        for line in ax.lines
        if line.get_marker() == "o" and len(line.get_xdata()) == 1
    }
    assert colours[2.2] == matplotlib.colors.to_hex("tab:green")
    assert colours[1.9] == matplotlib.colors.to_hex("0.45")
    lo, hi = ax.get_xlim()
    assert lo < 0 < 2.2 + half < hi < 10
    assert "relative to prior" in ax.get_title()
    assert_png(fig, tmp_path / "loglik.png")
    with pytest.raises(ValueError, match="results\\['x'\\] must be a dict with a 'loglik'"):
        F.plot_loglik({"x": {"stderr": 1.0}})


def test_loglik_wild_row_is_clipped_and_ais_is_paired():
    ais = {"loglik": -99.0, "stderr": 5.0, "per_datum": [-89.0, -109.0, -99.0]}
    results = {
        "prior": {"loglik": -100.0, "stderr": 0.5, "ais": ais},
        "aggregate": {
            "loglik": -98.0,
            "stderr": 0.5,
            "vs_prior": 2.0,
            "vs_prior_stderr": 0.2,
            "ais": {"loglik": -98.5, "stderr": 5.0, "per_datum": [-88.4, -108.6, -98.5]},
        },
        "gmm": {"loglik": -99.0, "stderr": 0.5, "vs_prior": 1.0, "vs_prior_stderr": 0.3},
        "flow": {"loglik": -99.5, "stderr": 0.5, "vs_prior": 0.5, "vs_prior_stderr": 0.3},
        "gaussian-loc": {
            "loglik": -2100.0,
            "stderr": 40.0,
            "vs_prior": -2000.0,
            "vs_prior_stderr": 40.0,
            "converged": False,
        },
    }
    fig = F.plot_loglik(results)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert -10 < lo < 0 and 2.4 < hi < 10  # not stretched to -2000
    clipped = [a for a in ax.get_children() if a.get_gid() == "clipped"]
    assert len(clipped) == 1 and clipped[0].get_marker() == "<"
    assert lo <= float(clipped[0].get_xdata()[0]) <= lo + 0.05 * (hi - lo)
    texts = [t.get_text() for t in ax.texts]
    assert f"-2000.00 ± {1.96 * 40:.2f} (off scale)  rising in K" in texts
    # AIS paired image by image: differences 0.6, 0.4, 0.5 -> 0.5 +- 0.1 / sqrt(3)
    (diamond,) = _marker_x(ax, "D")
    assert diamond == pytest.approx(0.5)
    assert f"AIS +0.50 ± {1.96 * 0.1 / np.sqrt(3):.2f}" in texts
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["prior (0)", "importance sampling", "AIS", "unreliable"]


def test_robust_limits():
    lo, hi = F.robust_limits([1.0, 2.0, 1.5, -500.0], [0.2, 0.2, 0.2, 10.0])
    assert -2 < lo < 0 < 2.2 < hi < 3
    lo, hi = F.robust_limits([0.01, 0.02], [0.01, 0.01])
    assert hi - lo == pytest.approx(0.5)  # the floor
    lo, hi = F.robust_limits([3.0, 5.0], [0.5, 0.5])
    assert lo < 0 and hi > 5.5  # both rows in range: nothing is clipped


def test_kl_per_dim(tmp_path):
    fig = F.plot_kl_per_dim(torch.tensor([3.0, 0.001, 2.0, 0.0]), threshold=0.01)
    (ax,) = fig.axes
    assert len(ax.patches) == 4
    assert "2 of 4 above the threshold" in ax.get_title()
    assert_png(fig, tmp_path / "kl.png")
    fig = F.plot_kl_per_dim(np.array([0.1, 2.0, 1.0]), sort=True)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["2", "3", "1"]
    with pytest.raises(ValueError, match="non-empty 1-D sequence"):
        F.plot_kl_per_dim([])


def test_save_figure_checks(tmp_path):
    fig = F.plot_kl_per_dim([1.0, 2.0])
    # Notebooks show the figure through _repr_png_ even without pyplot's inline backend.
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    out = F.save_figure(fig, tmp_path / "sub" / "kl.svg")
    assert out.read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match="cannot tell the image format"):
        F.save_figure(fig, tmp_path / "kl")
    with pytest.raises(ValueError, match="fig must be a matplotlib Figure"):
        F.save_figure("not a figure", tmp_path / "x.png")


def test_run_report_saves_whole_word_file_names(small_vae, monkeypatch, tmp_path):
    from pyrovae.analysis.report import run_figures as run_report

    titles = [
        "Reconstructions (test inputs above, reconstructions below)",
        "Held-out log-likelihood relative to the prior",
    ]
    monkeypatch.setattr(
        run_report,
        "run_figures",
        lambda *args, **kwargs: {t: F.plot_kl_per_dim([1.0, 2.0]) for t in titles},
    )
    report = run_report.build_run_report(small_vae, None, {}, tmp_path, name="run")
    names = [p.name for p in report.figures.values()]
    assert names == [
        "00-reconstructions-test-inputs-above.png",
        "01-held-out-log-likelihood-relative.png",
    ]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == names


def test_run_figures_shows_progress_over_the_figures(small_vae, mnist, capsys, monkeypatch):
    """With progress on, drawing a run's figures writes its progress line (off a terminal)."""
    from pyrovae.analysis.report import run_figures as run_report

    monkeypatch.setenv("PYROVAE_PROGRESS_INTERVAL", "0.001")
    figs = run_report.run_figures(small_vae, mnist, max_points=200, progress=True)
    err = capsys.readouterr().err
    assert f"figures: {len(figs)}/{len(figs)} figures, " in err
    quiet = run_report.run_figures(small_vae, mnist, max_points=200, progress=False)
    assert "figures" not in capsys.readouterr().err
    assert list(quiet) == list(figs)
