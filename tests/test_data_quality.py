"""Sample quality of data other than MNIST: the data's own cached classifier, the scores built
on it, and the evaluation of a run on such data."""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae.analysis.quality import data_classifier as dc
from pyrovae.analysis.quality.data_classifier import (
    DataClassifier,
    data_classifier_path,
    load_data_classifier,
)
from pyrovae.analysis.quality.data_quality import data_quality, sample_range, score_samples
from pyrovae.analysis.quality.scores import sample_quality
from pyrovae.data import Split, Splits

MEANS = torch.tensor([[4.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0], [0, 0, 4.0, 0, 0]])


def _tiny(seed: int = 0, n: int = 300, name: str = "tiny.csv", labelled: bool = True) -> Splits:
    """3 classes of 5-dimensional Gaussians (means 4 apart on the axes), in units of 100
    around 1000 (so a classifier must standardize), split 200 / 50 / 50."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 1000 + 100 * (MEANS[y] + torch.randn(n, 5, generator=gen))
    if not labelled:
        y = torch.zeros_like(y)
    parts = [Split(x[a:b], y[a:b]) for a, b in ((0, 200), (200, 250), (250, n))]
    return Splits(*parts, name=name, num_classes=3 if labelled else 1, kind="real")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path))
    return tmp_path


def test_classifier_of_any_labelled_data_is_cached_and_reused(cache, monkeypatch, capsys):
    data = _tiny()
    net = load_data_classifier(data, fingerprint="ab" * 32)
    path = data_classifier_path(data, "ab" * 32)
    assert path.is_file() and path.parent == cache / "classifier"
    assert path.name.startswith("data-" + "ab" * 8) and "-mlp-v1" in path.name
    told = capsys.readouterr().err
    assert "training a classifier of tiny.csv (3 classes, 200 training rows" in told
    assert "mlp) for sample-quality scores: 500 steps, about " in told  # 250 epochs of 2
    meta = net.metadata
    assert meta["test_accuracy"] >= 0.9 and meta["num_test"] == 50 and meta["num_classes"] == 3
    assert net.probs(data.test.x).shape == (50, 3) and net.features(data.test.x).shape == (50, 128)

    def refuse(*args, **kwargs):
        raise AssertionError("a cached classifier was trained again")

    monkeypatch.setattr(dc, "train_data_classifier", refuse)
    again = load_data_classifier(data, fingerprint="ab" * 32)
    assert again.metadata["test_accuracy"] == meta["test_accuracy"]
    for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert capsys.readouterr().err == ""
    # other data, another fingerprint, or the same data split otherwise: another file
    assert data_classifier_path(data, "cd" * 32) != path
    other_split = Splits(data.val, data.train, data.test, name=data.name, num_classes=3)
    assert data_classifier_path(other_split, "ab" * 32) != path
    assert data_classifier_path(_tiny(seed=1)) != data_classifier_path(data)
    assert data_classifier_path(_tiny(name="kmnist")).name == "kmnist-mlp-v1.pt"


def test_same_recipe_gives_the_same_weights():
    data = _tiny()
    a, b = dc.train_data_classifier(data), dc.train_data_classifier(data)
    assert torch.equal(a.head.weight, b.head.weight)


def test_label_scores_work_for_three_classes(cache):
    data = _tiny()
    net = load_data_classifier(data)
    real = sample_quality(net, data.test.x, data.val.x)
    assert real.entropy < 0.5 * math.log(3)
    assert real.coverage_kl < 0.05 and len(real.class_fractions) == 3
    one_class = data.test.x[data.test.y == 1]
    single = sample_quality(net, one_class, data.val.x)
    # hard labels all of one class: KL(h || uniform over 3) = log 3 exactly
    assert single.class_fractions == (0.0, 1.0, 0.0)
    assert single.coverage_kl == pytest.approx(math.log(3), abs=1e-12)
    assert single.frechet > real.frechet


def test_conv_classifier_for_colour_images():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 2
    x = torch.rand(120, 3, 8, 8, generator=gen) * 100
    x[y == 1, 0, :4] += 150  # class 1: a bright red top half
    x = x.reshape(120, -1).round()
    parts = [Split(x[a:b], y[a:b]) for a, b in ((0, 80), (80, 100), (100, 120))]
    data = Splits(*parts, name="pics", num_classes=2, image_shape=(3, 8, 8), kind="8-bit")
    net = dc.train_data_classifier(data, dc.DataClassifierConfig(min_steps=100))
    assert net.arch == "conv" and net.metadata["test_accuracy"] == 1.0
    assert net.features(x[:7]).shape == (7, 128)


def test_classifier_checks():
    with pytest.raises(ValueError, match=r"has 1 class \(unlabelled\); a classifier needs labels"):
        load_data_classifier(_tiny(labelled=False))
    with pytest.raises(ValueError, match=r"image_shape \(3, 4, 4\) does not hold x_dim=5"):
        DataClassifier(5, 3, (3, 4, 4))
    net = DataClassifier(5, 3)
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(N, 5\), got \(2, 4\)"):
        net.probs(torch.zeros(2, 4))


def test_unlabelled_data_are_scored_in_standardized_space(cache):
    data = _tiny(labelled=False)
    quality = data_quality(data)
    assert quality.classifier is None and quality.clamp is None
    assert quality.features.name == "standardized data (5 values)"
    gen = torch.Generator().manual_seed(3)
    good = data.train.x[torch.randperm(200, generator=gen)[:50]]
    scores = score_samples(quality, good, data.test.x, data.train.x)
    assert set(scores) == {"c2st", "precision_recall", "memorization"}
    assert scores["c2st"]["low"] <= 0.5 <= scores["c2st"]["high"]
    # the training rows themselves: recalled, and copies (distance 0 to the training set)
    assert scores["memorization"]["near_copy_fraction"] == 1.0
    bad = 1000 + 100 * torch.randn(50, 5, generator=gen)  # one blob: no class structure
    worse = score_samples(quality, bad, data.test.x, data.train.x)
    assert worse["c2st"]["accuracy"] > 0.8
    assert worse["precision_recall"]["precision"] < scores["precision_recall"]["precision"]
    assert not list(cache.iterdir())  # nothing trained or cached for unlabelled data


def test_sample_range():
    assert sample_range("unit") == (0.0, 1.0) and sample_range("8-bit") == (0.0, 255.0)
    assert sample_range("real") is None and sample_range(None) is None


def test_decoded_means_keep_the_data_units(monkeypatch):
    import pyrovae.analysis.quality.data_quality as dq
    from pyrovae.analysis.evaluation.evaluate import decode_samples
    from pyrovae.analysis.sources.classes import PriorSource
    from pyrovae.build import build_model

    vae = build_model(likelihood="gaussian", x_dim=5, z_dim=2, hidden_dims=[8], model="vae")
    vae.decoder.mean = lambda z, y=None: torch.full((len(z), 5), 300.0)
    prior = PriorSource(vae)
    assert decode_samples(vae, prior, 3).max().item() == 1.0  # MNIST's pixels, as before
    assert decode_samples(vae, prior, 3, clamp=None).min().item() == 300.0
    scored = []
    monkeypatch.setattr(dq, "score_samples", lambda q, samples, *a: scored.append(samples) or {})
    data = _tiny(labelled=False)
    for kind, top in (("real", 300.0), ("8-bit", 255.0)):
        data.kind = kind
        decode = lambda source, n: decode_samples(vae, source, n, clamp=None)  # noqa: E731
        dq.score_sources(dq.data_quality(data), [("prior", prior)], decode, data.test.x,
                         data.train.x, 4)  # fmt: skip
        assert scored[-1].max().item() == top


def test_evaluation_of_a_run_on_other_data(cache):
    from pyrovae.analysis.evaluation.evaluate import evaluate_run, format_evaluation
    from pyrovae.analysis.quality.classifier import MNISTClassifier
    from pyrovae.build import build_model

    data = _tiny(n=400)
    torch.manual_seed(0)
    vae = build_model(likelihood="gaussian", x_dim=5, z_dim=2, hidden_dims=[16], model="vae")
    common = dict(
        sources=["gaussian-z"], num_samples=4, num_test=100, num_train=200,
        num_quality_samples=120, surgery=False, progress=False,
    )  # fmt: skip
    # an MNIST classifier given for other data is not used: the data's own one is
    result, _ = evaluate_run(vae, data, classifier=MNISTClassifier(), **common)
    assert result["classifier_accuracy"] >= 0.9
    quality = result["sample_quality"]
    assert quality["scorer"] == "data" and quality["classifier"]["num_classes"] == 3
    assert quality["feature_space"].startswith("penultimate layer (128 units) of the mlp")
    assert quality["memorization_space"] == "standardized data (5 values)"
    # 100 held-out rows against 120 samples: both tests take 100 of each
    for name in ("prior", "gaussian-z"):
        entry = result["sources"][name]
        assert {"c2st", "precision_recall", "memorization", "entropy", "frechet"} <= set(entry)
        c2st = entry["c2st"]
        assert c2st["num_test"] == 2 * 50 and 0 <= c2st["low"] <= c2st["accuracy"] <= c2st["high"]
        pr = entry["precision_recall"]
        assert (pr["num_real"], pr["num_generated"]) == (100, 100)
        # decoder means of an untrained model lie near 0, far from data around 1000
        assert c2st["accuracy"] == 1.0 and entry["precision_recall"]["precision"] == 0.0
    text = format_evaluation(result)
    assert "prior: two-sample test accuracy 1.000" in text and "precision 0.000" in text
    # passing what data_quality built gives the same scores
    again, _ = evaluate_run(vae, data, classifier=data_quality(data), **common)
    assert again["sources"]["prior"]["c2st"] == result["sources"]["prior"]["c2st"]
    # no classifier: no sample quality, as before
    plain, _ = evaluate_run(vae, data, classifier=None, **common)
    assert "c2st" not in plain["sources"]["prior"] and "sample_quality" not in plain


def test_memorization_distances_far_from_the_origin():
    # float32 rows around 1e4 that differ by units: the distances of the raw values'
    # expansion |q|^2 - 2 q.r + |r|^2 would drown in rounding (errors of several units)
    from pyrovae.analysis.quality.memorization import memorization, nearest_distances

    gen = torch.Generator().manual_seed(0)
    train = torch.randn(300, 20, generator=gen) + 1e4
    queries = torch.randn(50, 20, generator=gen) + 1e4
    exact = torch.cdist(queries.double(), train.double()).amin(1)
    torch.testing.assert_close(nearest_distances(queries, train).double(), exact, atol=1e-3, rtol=0)
    copies = memorization(train[:40], train, queries)
    assert copies.sample_median == 0.0 and copies.near_copy_fraction == 1.0


def test_mnist_evaluation_keeps_its_scores_and_gains_the_two_sample_ones(small_vae, mnist):
    from pyrovae.analysis.evaluation.evaluate import decode_samples, evaluate_run
    from pyrovae.analysis.quality.classifier import load_classifier
    from pyrovae.analysis.quality.scores import feature_stats

    classifier = load_classifier()  # the shipped weights: nothing is trained
    result, comparison = evaluate_run(
        small_vae, mnist, sources=["gaussian-z"], num_samples=4, num_test=200, num_train=1000,
        classifier=classifier, num_quality_samples=150, surgery=False, progress=False,
    )  # fmt: skip
    assert result["sample_quality"]["scorer"] == "mnist"
    assert result["sample_quality"]["feature_space"].startswith("penultimate layer (128 units)")
    # the classifier scores are those of the MNIST path alone (the test draws no global noise)
    torch.manual_seed(0)
    real = mnist.test.sample(200).x
    reference = feature_stats(classifier, real)
    for name in ("prior", "gaussian-z"):  # the order in which the evaluation decodes them
        images = decode_samples(small_vae, comparison.sources[name], 150)
        entry = result["sources"][name]
        expected = sample_quality(classifier, images, reference).to_dict()
        assert {key: entry[key] for key in expected} == expected
        c2st, pr = entry["c2st"], entry["precision_recall"]
        assert c2st["num_test"] == 2 * 75 and c2st["low"] <= c2st["accuracy"] <= c2st["high"]
        assert 0 <= pr["precision"] <= 1 and 0 <= pr["recall"] <= 1
        assert (pr["num_real"], pr["num_generated"], pr["k"]) == (150, 150, 3)
