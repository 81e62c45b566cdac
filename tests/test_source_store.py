"""Fitted sources saved with a run: bit-identical reloads, stale files refused, sampling."""

from __future__ import annotations

import pytest
import torch

from pyrovae import build_model
from pyrovae.analysis.sources import SOURCES, fit_per_class, fit_sources
from pyrovae.analysis.sources.store import (
    StaleSourceError,
    load_source,
    load_sources,
    model_fingerprint,
    sample_latents,
    save_source,
    save_sources,
    saved_source_names,
    source_path,
)

X_DIM = 8


def tiny(guide: str = "diagonal", prior: str = "normal", model: str = "vae", z_dim: int = 3):
    extra = {"y_dim": 4} if model == "cvae" else {}
    return build_model(
        x_dim=X_DIM,
        z_dim=z_dim,
        hidden_dims=[16],
        likelihood="bernoulli",
        guide=guide,
        prior=prior,
        model=model,
        **extra,
    ).eval()


def binary_data(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, X_DIM, generator=g) < 0.4).float()


OPTIONS = {"flow": {"num_steps": 5, "num_flows": 2}, "gmm": {"num_components": 3}}


def assert_same_source(a, b, z: torch.Tensor) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert torch.equal(a.log_prob(z), b.log_prob(z))
    torch.manual_seed(3)
    first = a.sample(7)
    torch.manual_seed(3)
    assert torch.equal(first, b.sample(7))


@pytest.mark.parametrize("guide", ["diagonal", "flow"])
def test_every_source_reloads_bit_identically(tmp_path, guide):
    vae = tiny(guide)
    names = list(SOURCES)
    sources = fit_sources(names, vae, binary_data(), options=OPTIONS)
    record = {"num_train": 64, "seed": 0}
    save_sources(tmp_path, sources, vae, record, OPTIONS)
    assert saved_source_names(tmp_path) == sorted(names)
    loaded = load_sources(tmp_path, vae)
    z = torch.randn(11, vae.z_dim)
    for name in names:
        assert type(loaded[name]) is type(sources[name])
        assert loaded[name].name == sources[name].name
        assert_same_source(sources[name], loaded[name], z)
        assert loaded[name].fitted_with == {**record, "options": OPTIONS.get(name, {})}


def test_files_hold_tensors_only(tmp_path):
    vae = tiny()
    sources = fit_sources(
        ["gmm", "aggregate"], vae, binary_data(), options={"gmm": {"num_components": 2}}
    )
    paths = save_sources(tmp_path, sources, vae)
    for path in paths:
        torch.load(path, weights_only=True)  # raises if anything but plain data is inside


def test_flow_guide_aggregate_stores_binary_data_compactly(tmp_path):
    vae = tiny("flow")
    x = binary_data(200)
    options = {"aggregate": {"flow_components": None}}  # all 200, not the default subset
    source = fit_sources(["aggregate"], vae, x, options=options)["aggregate"]
    path = save_source(tmp_path / "a.pt", source, vae)
    tensors = torch.load(path, weights_only=True)["source"]["tensors"]
    assert tensors["x_uint8"].dtype == torch.uint8
    assert torch.equal(tensors["x_uint8"].float(), x)


def test_diagonal_aggregate_stores_its_components_only(tmp_path):
    """The file holds loc and scale (the dense sum's terms are derived on loading); a file
    of an older version, which also held those terms, still loads to the same source."""
    vae = tiny()
    source = fit_sources(["aggregate"], vae, binary_data(200))["aggregate"]
    z = torch.randn(9, vae.z_dim, dtype=torch.float64)
    pruned = source.log_prob(z)  # on the CPU the pruned sum; tolerance 0 below is the full one
    path = save_source(tmp_path / "a.pt", source, vae)
    saved = torch.load(path, weights_only=True)
    assert set(saved["source"]["tensors"]) == {"loc", "scale"}
    loc, scale = source.loc.double(), source.scale.double()
    precision = scale.pow(-2)
    saved["source"]["tensors"]["_weights"] = torch.cat([-0.5 * precision, loc * precision], 1).T
    saved["source"]["tensors"]["_const"] = -0.5 * (loc.pow(2) * precision).sum(-1)
    torch.save(saved, tmp_path / "old.pt")
    old = load_source(tmp_path / "old.pt", vae)
    assert torch.equal(old.loc, source.loc) and torch.equal(old.scale, source.scale)
    assert torch.equal(old.log_prob(z), pruned)
    old.tolerance = source.tolerance = 0.0
    assert torch.equal(old.log_prob(z), source.log_prob(z))


@pytest.mark.parametrize("tolerance", [0.0, 1e-6], ids=["dense", "pruned"])
def test_loading_new_components_replaces_what_was_derived_from_the_old(tolerance):
    vae = tiny()
    a, b = (fit_sources(["aggregate"], vae, binary_data(50, s))["aggregate"] for s in (0, 1))
    a.tolerance = b.tolerance = tolerance
    z = torch.randn(5, vae.z_dim)
    a.log_prob(z)  # builds a's derived terms
    a.load_state_dict(b.state_dict())
    assert torch.equal(a.log_prob(z), b.log_prob(z))


def test_cvae_sources_and_conditional_prior(tmp_path):
    vae = tiny(model="cvae", prior="mog")
    x = binary_data()
    labels = torch.arange(64) % 4
    y = torch.nn.functional.one_hot(labels, 4).float()
    sources = fit_sources(
        ["prior", "aggregate", "gmm"], vae, x, y, options={"gmm": {"num_components": 2}}
    )
    save_sources(tmp_path, sources, vae)
    loaded = load_sources(tmp_path, vae)
    z = torch.randn(5, vae.z_dim)
    for name in ("aggregate", "gmm"):
        assert_same_source(sources[name], loaded[name], z)
    draws = sample_latents(loaded["gmm"], 6, labels[:6], vae)
    assert draws.shape == (6, vae.z_dim)


def test_per_class_sources_round_trip_and_sample_by_label(tmp_path):
    vae = tiny()
    x = binary_data(80)
    labels = torch.arange(80) % 4
    per_class = fit_per_class("gaussian-z", vae, x, labels)
    path = save_source(source_path(tmp_path, "gaussian-z", per_class=True), per_class, vae)
    loaded = load_source(path, vae)
    assert sorted(loaded) == [0, 1, 2, 3]
    z = torch.randn(4, vae.z_dim)
    for c in loaded:
        assert_same_source(per_class[c], loaded[c], z)
    # draw i comes from the source of labels[i]: with tiny scales, draws sit at each mean
    narrow = {c: s for c, s in loaded.items()}
    for c, s in narrow.items():
        s.scale.fill_(1e-6)
        s.loc.fill_(float(c))
    want = torch.tensor([2, 0, 3, 3, 1])
    draws = sample_latents(narrow, 5, want, vae)
    assert torch.allclose(draws, want[:, None].float().expand(5, vae.z_dim), atol=1e-4)
    with pytest.raises(ValueError, match="need labels"):
        sample_latents(narrow, 5, None, vae)
    # not in the pooled listing
    assert saved_source_names(tmp_path) == []


def test_stale_source_is_refused(tmp_path):
    vae = tiny()
    source = fit_sources(["gmm"], vae, binary_data(), options={"gmm": {"num_components": 2}})
    save_sources(tmp_path, source, vae)
    with torch.no_grad():
        next(vae.parameters()).add_(0.01)
    with pytest.raises(StaleSourceError, match="other model weights.*fit-sources"):
        load_sources(tmp_path, vae)
    # the file itself is intact: without a model to check against it still reads
    assert load_source(source_path(tmp_path, "gmm")).logits.shape == (2,)


def test_missing_source_names_the_fix(tmp_path):
    vae = tiny()
    with pytest.raises(FileNotFoundError, match="no saved source.*fit-sources"):
        load_sources(tmp_path, vae, ["gmm"])
    with pytest.raises(ValueError, match="unknown latent source 'vamp'"):
        source_path(tmp_path, "vamp")


def test_generate_from_a_source(tmp_path):
    vae = tiny()
    gmm = fit_sources(["gmm"], vae, binary_data(), options={"gmm": {"num_components": 2}})["gmm"]
    torch.manual_seed(1)
    images = vae.generate(6, source=gmm)
    torch.manual_seed(1)
    expected = vae.generate(6, z=gmm.sample(6))
    assert torch.equal(images, expected) and images.shape == (6, X_DIM)
    with pytest.raises(ValueError, match="not loaded with pyrovae.load_run"):
        vae.generate(6, source="gmm")
    with pytest.raises(ValueError, match="z or source, not both"):
        vae.generate(6, z=torch.zeros(6, 3), source=gmm)
    vae.run_dir = tmp_path
    save_sources(tmp_path, {"gmm": gmm}, vae)
    torch.manual_seed(1)
    assert torch.equal(vae.generate(6, source="gmm"), expected)


def test_fingerprint_of_a_model_with_an_isotropic_scale():
    """A parameter with a stride-0 dim (the isotropic decoder scale of PPCA) is hashed by
    value: equal weights give equal fingerprints, one changed weight another."""
    from pyrovae.analysis.likelihood.exact import ppca_vae

    vae = ppca_vae(torch.eye(4, 2), torch.zeros(4), 0.5)
    same = ppca_vae(torch.eye(4, 2), torch.zeros(4), 0.5)
    other = ppca_vae(torch.eye(4, 2), torch.zeros(4), 0.6)
    assert model_fingerprint(vae) == model_fingerprint(same)
    assert model_fingerprint(vae) != model_fingerprint(other)
