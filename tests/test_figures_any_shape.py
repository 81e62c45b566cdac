"""Figures and the report for any data: colour images, other channel counts, 8-bit and real
values, vectors, and any number of classes (no 28 x 28 and no ten digits assumed)."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from PIL import Image

from pyrovae import build_model
from pyrovae.analysis import figures as F
from pyrovae.analysis.evaluation.reuse import model_fingerprint
from pyrovae.analysis.report import render_report
from pyrovae.analysis.report.run_figures import build_run_report, run_figures
from pyrovae.data import Split, Splits
from pyrovae.images import save_images, to_display, value_kind_of
from pyrovae.models.discretized import bits_per_dim
from pyrovae.train import one_hot

matplotlib.use("Agg")

SHAPE = (3, 8, 8)
D = 3 * 8 * 8


class PriorSource:
    def __init__(self, vae, name: str = "prior") -> None:
        self.vae, self.name = vae, name

    def sample(self, n: int) -> torch.Tensor:
        return self.vae.prior().sample((n,))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.prior().log_prob(z)


class ShiftedSource(PriorSource):
    def __init__(self, vae, shift: float, name: str) -> None:
        super().__init__(vae, name)
        self.shift = shift

    def sample(self, n: int) -> torch.Tensor:
        return super().sample(n) + self.shift


def _seeded(**kwargs):
    torch.manual_seed(0)
    return build_model(z_dim=2, hidden_dims=[16], **kwargs).eval()


@pytest.fixture(scope="module")
def colour_vae():
    return _seeded(x_dim=D, image_shape=list(SHAPE))


@pytest.fixture(scope="module")
def colour_cvae():
    return _seeded(model="cvae", x_dim=D, y_dim=3, image_shape=list(SHAPE))


@pytest.fixture(scope="module")
def vector_vae():
    return _seeded(x_dim=5, likelihood="gaussian")


@pytest.fixture(scope="module")
def vector_cvae():
    return _seeded(model="cvae", x_dim=5, y_dim=3, likelihood="gaussian")


def _data(x_dim: int, n: int, classes: int, seed: int = 0, scale: float = 1.0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, x_dim, generator=g) * scale
    y = torch.arange(n) % classes
    return x, y


def _splits(x_dim, classes, image_shape, kind, name="mine", scale=1.0) -> Splits:
    parts = [Split(*_data(x_dim, 60, classes, seed, scale)) for seed in range(3)]
    return Splits(*parts, name=name, num_classes=classes, image_shape=image_shape, kind=kind)


def _png_array(fig: Figure) -> np.ndarray:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


def _colourful(png: np.ndarray) -> bool:
    rgb = png[..., :3].astype(int)
    return bool((np.abs(rgb[..., 0] - rgb[..., 1]) > 10).any())


# ------------------------------------------------------------------------- images


def test_colour_grids_have_the_image_size_and_three_channels(colour_vae):
    x, _ = _data(D, 12, 2)
    fig = F.plot_reconstructions(colour_vae, x, n=5)
    canvas = fig.axes[0].images[0].get_array()
    assert canvas.shape == (8, 5 * 10 - 2, 3)  # 8 x 8 tiles with 2-pixel gaps, RGB
    np.testing.assert_allclose(canvas[:, :8], x[0].reshape(SHAPE).permute(1, 2, 0).numpy())
    assert _colourful(_png_array(fig))
    fig = F.plot_samples(colour_vae, {"prior": PriorSource(colour_vae)}, n=9)
    assert fig.axes[0].images[0].get_array().shape == (3 * 10 - 2, 3 * 10 - 2, 3)


def test_colour_cvae_with_three_classes(colour_cvae):
    fig = F.plot_class_samples(colour_cvae, n=4, class_names=["cat", "dog", "owl"])
    (ax,) = fig.axes
    assert ax.images[0].get_array().shape == (3 * 10 - 2, 4 * 10 - 2, 3)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "owl"]
    fig = F.plot_cvae_style(colour_cvae, digit=2, grid=3)
    assert fig.axes[0].images[0].get_array().shape == (3 * 10 - 2, 3 * 10 - 2, 3)
    with pytest.raises(ValueError, match=r"digit must be in \[0, 3\), got 3"):
        F.plot_cvae_style(colour_cvae, digit=3)
    x, labels = _data(D, 30, 3)
    y = one_hot(labels, 3)
    fig = F.plot_traversal(colour_cvae, x, labels, digit=1, grid=3, y=y)
    assert fig.axes[0].images[0].get_array().shape[-1] == 3


def test_eight_bit_values_are_drawn_over_255_and_real_values_min_max_scaled(colour_vae):
    x, _ = _data(D, 4, 2, scale=255.0)
    fig = F.plot_reconstructions(colour_vae, x.round(), n=2, kind="8-bit")
    canvas = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(
        canvas[:, :8], (x[0].round() / 255).reshape(SHAPE).permute(1, 2, 0).numpy(), atol=1e-6
    )
    assert "min-max" not in fig.axes[0].get_title()
    real = 10.0 * x - 300.0  # user units, far outside [0, 1]
    fig = F.plot_reconstructions(colour_vae, real, n=2, kind="real")
    assert "min-max scaled per figure" in fig.axes[0].get_title()
    shown = fig.axes[0].images[0].get_array()
    assert 0.0 <= np.nanmin(shown) and np.nanmax(shown) <= 1.0 and np.nanstd(shown) > 0.1
    # the kind is read from the model: a discretized likelihood means 8-bit values
    assert (
        value_kind_of(_seeded(x_dim=D, image_shape=list(SHAPE), likelihood="discretized-logistic"))
        == "8-bit"
    )
    assert value_kind_of(colour_vae) == "unit"  # Bernoulli: values in [0, 1]
    with pytest.raises(ValueError, match="kind must be one of"):
        F.plot_reconstructions(colour_vae, x, n=2, kind="16-bit")


def test_other_channel_counts_lie_side_by_side():
    vae = _seeded(x_dim=2 * 4 * 6, image_shape=[2, 4, 6])
    x, _ = _data(48, 3, 2)
    canvas = F.plot_reconstructions(vae, x, n=3).axes[0].images[0].get_array()
    assert canvas.shape == (4, 3 * (2 * 6 + 2) - 2)
    np.testing.assert_allclose(canvas[:, 6:12], x[0].reshape(2, 4, 6)[1].numpy())


def test_save_images_writes_colour_grids_and_arrays(tmp_path):
    x, _ = _data(D, 6, 2, scale=255.0)
    png = save_images(x, tmp_path / "grid.png", nrow=3, image_shape=SHAPE, kind="8-bit")
    with Image.open(png) as image:
        assert image.mode == "RGB" and image.size == (3 * 10 + 2, 2 * 10 + 2)
    arr = np.load(save_images(x, tmp_path / "grid.npy", image_shape=SHAPE, kind="8-bit"))
    assert arr.shape == (6, 3, 8, 8) and arr.max() <= 1.0
    np.testing.assert_allclose(arr[0], (x[0] / 255).reshape(SHAPE).numpy(), atol=1e-6)
    grey = np.load(save_images(torch.rand(2, 784), tmp_path / "mnist.npy"))
    assert grey.shape == (2, 28, 28)  # MNIST's arrays keep their shape
    with pytest.raises(ValueError, match=r"image_shape must be \(C, H, W\) with C\*H\*W = 192"):
        save_images(x, tmp_path / "bad.png", image_shape=(3, 8, 7))


def test_to_display_scales_by_kind():
    x = torch.tensor([[-5.0, 0.0, 5.0]])
    shown, note = to_display(x, "real")
    assert shown.tolist() == [[0.0, 0.5, 1.0]] and "-5 to 5" in note
    eight_bit, note = to_display(torch.tensor([[0.0, 51.0, 255.0]]), "8-bit")
    torch.testing.assert_close(eight_bit, torch.tensor([[0.0, 0.2, 1.0]]))
    assert note is None
    clamped, note = to_display(x, None)
    assert clamped.tolist() == [[0.0, 0.0, 1.0]] and note is None


# ------------------------------------------------------------------------- vectors


def test_vector_samples_are_marginals_and_pair_plots(vector_vae):
    x, _ = _data(5, 300, 2)
    sources = {"prior": PriorSource(vector_vae), "shifted": ShiftedSource(vector_vae, 1.0, "s")}
    scores = {"prior": {"loglik": -3.0}}
    fig = F.plot_samples(vector_vae, sources, x=x, scores=scores)
    hists, pairs = fig.axes[:4], fig.axes[4:]
    assert [ax.get_xlabel() for ax in hists] == [f"feature {d}" for d in range(4)]
    assert all(len([p for p in ax.patches if p.get_gid() == "real-marginal"]) == 30 for ax in hists)
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in pairs if ax.axison] == [
        ("feature 0", "feature 1"),
        ("feature 0", "feature 2"),
        ("feature 1", "feature 2"),
    ]
    scatter = [c for c in pairs[0].collections if isinstance(c, PathCollection)]
    assert len(scatter) == 3  # real data and both sources
    assert len(scatter[1].get_offsets()) == 1000  # the vector default of n
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["real data", "prior; log-lik -3.0", "shifted"]
    assert not any(ax.images for ax in fig.axes)
    fig = F.plot_samples(vector_vae, sources, n=50, features=[4, 2])
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["feature 4", "feature 2"]
    with pytest.raises(ValueError, match=r"features must be indices in \[0, 5\), got 5"):
        F.plot_samples(vector_vae, sources, features=[5])


def test_vector_reconstructions_scatter_x_against_its_reconstruction(vector_vae):
    x, _ = _data(5, 700, 2)
    fig = F.plot_reconstructions(vector_vae, x)
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert [t.split(":")[0] for t in titles] == [f"feature {d}" for d in range(5)]
    assert all("R\u00b2 = " in t for t in titles)
    scatter = [c for c in fig.axes[0].collections if c.get_gid() == "reconstruction-scatter"]
    assert len(scatter[0].get_offsets()) == 500  # the first 500 rows by default
    recon = vector_vae.decoder.mean(vector_vae.encoder.encode(x[:500])[0]).detach()
    np.testing.assert_allclose(scatter[0].get_offsets()[:, 1], recon[:, 0].numpy(), rtol=1e-5)


def test_vector_traversals_are_feature_heat_maps(vector_vae, vector_cvae):
    x, labels = _data(5, 90, 3)
    fig = F.plot_traversal(vector_vae, x, labels, digit=2, grid=4)
    maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in maps] == [f"feature {d}" for d in range(4)]
    assert maps[0].images[0].get_array().shape == (4, 4)
    fig = F.plot_cvae_style(vector_cvae, digit=1, grid=3, features=[0])
    assert [ax.images[0].get_array().shape for ax in fig.axes if ax.images] == [(3, 3)]
    fig = F.plot_class_samples(vector_cvae, n=20, class_names=["a", "b", "c"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b", "c"]
    assert len(fig.axes) == 3  # the three pairs of features 0, 1, 2


# ------------------------------------------------------------------------- classes


@pytest.mark.parametrize("classes", [2, 47])
def test_latent_figures_scale_to_any_number_of_classes(vector_vae, classes):
    x, labels = _data(5, 10 * classes, classes)
    fig = F.plot_latent_ellipses(vector_vae, x, labels)
    entries = fig.legends[0].get_texts()
    assert [t.get_text() for t in entries[:classes]] == [str(c) for c in range(classes)]
    colours = {tuple(np.round(h.get_color(), 3)) for h in fig.legends[0].legend_handles[:classes]}
    assert len(colours) == classes  # one distinct colour per class
    assert fig.legends[0]._ncols == (1 if classes <= 23 else 2)
    fig = F.plot_neighbourhood(vector_vae, x, labels, digit=classes - 1, resolution=8)
    assert len(fig.legends[0].get_texts()) == classes + 1


def test_class_names_label_the_legend(vector_vae):
    x, labels = _data(5, 40, 2)
    fig = F.plot_latent_space(vector_vae, {"train": (x, labels)}, class_names=["no", "yes"])
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["0 no", "1 yes"]


# -------------------------------------------------------------------------- report


def _evaluation(vae) -> dict:
    def source(loglik: float) -> dict:
        return {
            "loglik": loglik,
            "stderr": 0.5,
            "converged": True,
            "c2st": {"accuracy": 0.61, "low": 0.55, "high": 0.67, "num_test": 200},
            "precision_recall": {"precision": 0.8, "recall": 0.7, "k": 3, "space": "data"},
            "memorization": {"near_copy_fraction": 0.04, "quantile": 0.05},
        }

    return {
        "fingerprint": model_fingerprint(vae),
        "sources": {"prior": source(-700.0), "gmm": source(-690.0)},
        "elbo": -705.0,
        "loglik": -700.0,
        "num_samples": 10,
        "num_test": 60,
        "split": "test",
        "sample_quality": {"scorer": "data", "feature_space": "data", "classifier": None},
    }


def test_report_of_an_eight_bit_colour_run(colour_vae, tmp_path):
    data = _splits(D, 2, SHAPE, "8-bit", scale=255.0)
    sources = {"prior": PriorSource(colour_vae)}
    run = build_run_report(colour_vae, data, _evaluation(colour_vae), tmp_path, sources)
    assert run.data["kind"] == "8-bit" and run.data["image_shape"] == list(SHAPE)
    for title, path in run.figures.items():
        assert "digit" not in title
        with Image.open(path) as image:
            assert image.mode in ("RGB", "RGBA")
    html = render_report([run])
    assert "log p(x) [bits/dim]" in html and "also in bits per dimension" in html
    assert f"{bits_per_dim(-690.0, D):.3f}" in html
    assert "C2ST accuracy (95% interval)" in html and "0.61 (0.55, 0.67)" in html
    assert "0.80 / 0.70" in html and "MNIST classifier" not in html
    assert "60 test images" in html
    assert "Traversal around the mean of class 1" in html


def test_report_of_a_vector_run(vector_vae, tmp_path):
    data = _splits(5, 3, None, "real")
    sources = {"prior": PriorSource(vector_vae), "gmm": ShiftedSource(vector_vae, 0.5, "gmm")}
    figures = run_figures(vector_vae, data, _evaluation(vector_vae), sources)
    for title, fig in figures.items():
        assert "digit" not in title and "image" not in title.lower()
        if title.startswith(("Reconstructions", "Samples")):
            assert not any(ax.images for ax in fig.axes)  # no image grid for vectors
    run = build_run_report(vector_vae, data, _evaluation(vector_vae), tmp_path, sources)
    html = render_report([run])
    assert "60 test data points" in html and "test images" not in html
    assert "near-copies of training data points" in html.lower()
    assert "bits/dim" not in html  # real values: nats only
    assert "entropy [nats]" not in html  # no classifier of labels: no empty columns
    assert "C2ST accuracy (95% interval)" in html
    assert "vectors of 5" in html


def test_report_of_unlabelled_vectors_has_no_class_figures(vector_vae, tmp_path):
    data = _splits(5, 1, None, "real")
    titles = list(run_figures(vector_vae, data))
    assert not any("Neighbourhood" in t or "Class-conditional" in t for t in titles)
    assert "Traversal around the mean of class 0" in titles


def test_a_run_of_csv_data_names_its_features_and_classes():
    vae = _seeded(x_dim=5, likelihood="gaussian")
    columns = ["age", "height", "weight", "income", "score"]
    vae.run_config = SimpleNamespace(
        train=SimpleNamespace(
            data="people.csv", data_kind="real", class_names=["no", "yes"], column_names=columns
        )
    )
    assert value_kind_of(vae) == "real"
    data = _splits(5, 2, None, None)
    figures = run_figures(vae, data)
    recon = figures["Reconstructions (each feature of test data against its reconstruction)"]
    assert [ax.get_title().split(":")[0] for ax in recon.axes if ax.axison] == columns
    latent = figures["Latent space per class (train and test)"]
    assert [t.get_text() for t in latent.legends[0].get_texts()][:2] == ["0 no", "1 yes"]
    with pytest.raises(ValueError, match="feature_names must name all 5 features"):
        F.plot_reconstructions(vae, data.test.x, feature_names=["age"])


def test_a_report_without_sample_quality_names_no_classifier(vector_vae, tmp_path):
    evaluation = _evaluation(vector_vae)
    for entry in evaluation["sources"].values():
        del entry["c2st"], entry["precision_recall"]
    del evaluation["sample_quality"]
    run = build_run_report(vector_vae, _splits(5, 2, None, "real"), evaluation, tmp_path)
    html = render_report([run])
    assert "classifier" not in html.lower() and "C2ST" not in html


@pytest.mark.parametrize(
    ("name", "legend", "word"),
    [("cifar10", "3 cat", "class"), ("svhn", "3", "digit"), ("mnist", "3", "digit")],
)
def test_known_data_sets_name_their_classes(colour_vae, name, legend, word):
    data = _splits(D, 10, SHAPE, "8-bit", name=name, scale=255.0)
    titles = run_figures(colour_vae, data)
    latent = titles["Latent space per class (train and test)"]
    assert [t.get_text() for t in latent.legends[0].get_texts()][3] == legend
    assert f"Traversal around the mean of {word} 9" in titles


_WIDTH_PROBE = """<script>
window.addEventListener("load", () => {
  const table = document.querySelector("table.sources");
  const wrap = table.parentElement;
  const cells = Array.from(table.querySelectorAll("th"));
  const right = Math.max(...cells.map((c) => c.getBoundingClientRect().right));
  const scrolls = getComputedStyle(wrap).overflowX === "auto"
    && wrap.getBoundingClientRect().right <= window.innerWidth;
  document.body.dataset.width = `${Math.round(right)}/${window.innerWidth}/${scrolls}`;
});
</script>"""


def test_every_column_of_an_eight_bit_run_stays_reachable_at_1280_px(tmp_path, chromium):
    """Bits per dimension, C2ST and precision/recall beside every classifier column."""
    from pyrovae.analysis.report import RunReport, write_report

    evaluation = _evaluation(_seeded(x_dim=D, image_shape=list(SHAPE)))
    for entry in evaluation["sources"].values():
        entry.update(entropy=0.4, ambiguous=0.1, coverage_kl=0.02, frechet=9.0)
        entry["ais"] = {"loglik": -698.12, "stderr": 0.31, "is_loglik": -699.25}
    data = {"name": "cifar10", "kind": "8-bit", "image_shape": list(SHAPE), "x_dim": D}
    page = write_report([RunReport("cvae-z50", evaluation=evaluation, data=data)], tmp_path)
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _WIDTH_PROBE + "</body>"))
    dom = chromium.run("--window-size=1280,1000", "--dump-dom", probe.as_uri()).stdout
    match = re.search(r'data-width="(\d+)/(\d+)/(true|false)"', dom)
    assert match, dom[:300]
    right, width, scrolls = int(match[1]), int(match[2]), match[3] == "true"
    assert right <= width or scrolls, f"the last column ends at {right} px of {width}"
    assert "bits/dim" in dom and "precision / recall" in dom and "Frechet" in dom


def test_conclusions_read_the_two_sample_test_and_precision_recall(vector_vae):
    from pyrovae.analysis.report import conclusions

    evaluation = _evaluation(vector_vae)
    evaluation["sources"]["gmm"]["c2st"] = {"accuracy": 0.52, "low": 0.46, "high": 0.58}
    text = " ".join(conclusions(evaluation))
    assert "gmm 0.52 (0.46-0.58) and prior 0.61 (0.55-0.67)" in text
    assert "indistinguishable from real data at 95%: gmm." in text
    assert "prior 0.80 / 0.70 and gmm 0.80 / 0.70" in text
    del evaluation["sources"]["gmm"]["c2st"]
    assert "every source's samples are told from real data" in " ".join(conclusions(evaluation))


def test_a_vector_cvae_run_draws_every_figure(vector_cvae):
    data = _splits(5, 3, None, "real")
    figures = run_figures(vector_cvae, data, {}, {"prior": PriorSource(vector_cvae)})
    assert list(figures) == [
        "Reconstructions (each feature of test data against its reconstruction)",
        "Samples from each latent source (marginals and pairs of features, real data grey)",
        "Latent space per class (train and test)",
        "CVAE: style of class 2 around z = 0",
        "CVAE: class-conditional samples",
    ]


def test_the_sources_note_names_who_read_the_samples(vector_vae, tmp_path):
    from pyrovae.analysis.report import RunReport

    evaluation = _evaluation(vector_vae)
    for entry in evaluation["sources"].values():
        entry.update(entropy=0.4, ambiguous=0.1, coverage_kl=0.02, frechet=9.0)
    evaluation["sample_quality"] = {"scorer": "mnist", "feature_space": "classifier features"}
    html = render_report([RunReport("mnist", evaluation=evaluation)])
    assert "read by an MNIST classifier" in html and "C2ST: the held-out accuracy" in html
    evaluation["sample_quality"] = {
        "scorer": "data",
        "classifier": {"test_accuracy": 0.9},
        "feature_space": "classifier features",
    }
    html = render_report([RunReport("mine", evaluation=evaluation)])
    assert "MNIST" not in html and "training split (test accuracy 90.0%)" in html
    assert "Kynkaanniemi et al., 2019), in classifier features." in html


def test_run_names_tell_conv_runs_apart():
    from pyrovae.analysis.report.run_figures import run_name

    mlp = build_model(x_dim=3 * 8 * 8, image_shape=[3, 8, 8], z_dim=2, hidden_dims=[8])
    conv = build_model(x_dim=3 * 8 * 8, image_shape=[3, 8, 8], z_dim=2, hidden_dims=[8], net="conv")
    assert (run_name(mlp), run_name(conv)) == ("vae-z2", "vae-z2-conv")
