"""Convolutional networks (--net conv): exact shapes for any image size, every prior and guide,
VAE and CVAE, training with and without the JIT, exact resume, torchrun, and refusals."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrovae import ModelConfig, TrainConfig, build_model, load_run, train_model
from pyrovae.cli import main
from pyrovae.convnets import (
    NETS,
    ConvDecoderNet,
    ConvEncoderTrunk,
    ResidualBlock,
    decoder_net,
    encoder_trunk,
    feature_sizes,
)
from pyrovae.data import Split, Splits
from pyrovae.settings import GUIDE_NAMES, NET_NAMES, PRIOR_NAMES

SHAPES = [(1, 28, 28), (3, 32, 32), (2, 5, 7), (3, 9, 4), (1, 1, 1), (4, 3, 2)]
SMALL = {"hidden_dims": [16], "channels": [4, 8], "z_dim": 3}


def image_splits(shape=(3, 6, 5), n=(96, 32, 32), num_classes=2, seed=0) -> Splits:
    """Colour images in [0, 1] of two classes (bright left half or bright right half)."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape

    def split(size: int) -> Split:
        y = torch.randint(num_classes, (size,), generator=g)
        x = 0.2 * torch.rand(size, c, h, w, generator=g)
        half = torch.arange(w) < w // 2
        x[:, :, :, half] += 0.7 * (y == 0).float().view(-1, 1, 1, 1)
        x[:, :, :, ~half] += 0.7 * (y == 1).float().view(-1, 1, 1, 1)
        return Split(x.reshape(size, -1), y)

    return Splits(
        split(n[0]),
        split(n[1]),
        split(n[2]),
        name="tiny-images",
        num_classes=num_classes,
        image_shape=shape,
        kind="unit",
    )


def conv_config(shape=(3, 6, 5), **kwargs) -> ModelConfig:
    base = {
        "x_dim": math.prod(shape),
        "image_shape": list(shape),
        "net": "conv",
        "y_dim": 2,
        **SMALL,
    }
    base.update(kwargs)
    return ModelConfig(**base)


def small_train(**kwargs) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 32, "device": "cpu"}
    base.update(kwargs)
    return TrainConfig(**base)


def test_net_names_are_the_builders():
    assert NET_NAMES == NETS == ("mlp", "conv")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("params_per_pixel", [1, 2])
def test_exact_output_sizes_for_any_image(shape, params_per_pixel):
    """Odd and even sizes, 1..4 channels, (K, B, D) leading dims, and no leading dims."""
    d = math.prod(shape)
    trunk = ConvEncoderTrunk(shape, (16,), y_dim=3, channels=(4, 8))
    assert trunk(torch.rand(5, 4, d + 3)).shape == (5, 4, 16)
    assert trunk(torch.rand(d + 3)).shape == (16,)
    net = ConvDecoderNet(6, shape, (16,), params_per_pixel=params_per_pixel, channels=(4, 8))
    assert net(torch.randn(5, 4, 6)).shape == (5, 4, params_per_pixel * d)
    assert net(torch.randn(6)).shape == (params_per_pixel * d,)


def test_feature_sizes_round_up():
    assert feature_sizes(28, 28, 2) == [(28, 28), (14, 14), (7, 7)]
    assert feature_sizes(7, 5, 3) == [(7, 5), (4, 3), (2, 2), (1, 1)]
    assert feature_sizes(1, 1, 2) == [(1, 1), (1, 1), (1, 1)]


def test_leading_dims_are_independent_rows():
    """Row (k, b) of a (K, B, D) batch is the network of that row alone: no batch
    statistics, so an encoding never depends on the rest of its batch."""
    shape = (2, 5, 7)
    d = math.prod(shape)
    trunk = ConvEncoderTrunk(shape, (16,), y_dim=2, channels=(4, 8))
    net = ConvDecoderNet(3, shape, (16,), params_per_pixel=2, channels=(4, 8))
    x, z = torch.rand(3, 4, d + 2), torch.randn(3, 4, 3)
    torch.testing.assert_close(trunk(x)[1, 2], trunk(x[1, 2]))
    torch.testing.assert_close(net(z)[2, 3], net(z[2, 3]))


def test_decoder_output_is_parameter_major_in_chw_order():
    """Block p of the flat output is the p-th parameter's C x H x W image, flattened: the
    first block equals the network run with only the first C output channels."""
    shape = (3, 5, 4)
    net = ConvDecoderNet(4, shape, (8,), params_per_pixel=2, channels=(4,), num_res_blocks=0)
    z = torch.randn(6, 4)
    out = net(z)
    last = net.convs[-1]
    maps = net.fc(z).reshape(-1, *net._map_shape)
    for layer in list(net.convs)[:-1]:
        maps = layer(maps)
    full = last(maps)  # (6, 2 * 3, 5, 4)
    assert full.shape == (6, 6, 5, 4)
    loc, log_scale = out.chunk(2, dim=-1)
    torch.testing.assert_close(loc, full[:, :3].reshape(6, -1))
    torch.testing.assert_close(log_scale, full[:, 3:].reshape(6, -1))


def test_residual_block_adds_its_input():
    block = ResidualBlock(4, 2)
    with torch.no_grad():
        block.block[-1].weight.zero_()
        block.block[-1].bias.zero_()
    h = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(block(h), h)


def test_mlp_net_keeps_its_layers_and_names():
    """net='mlp' builds exactly the networks (and parameter names) encoders and decoders
    always had, so old checkpoints load."""
    trunk = encoder_trunk(10, (8, 6), y_dim=2)
    assert [type(m).__name__ for m in trunk] == ["Linear", "ReLU", "Linear", "ReLU"]
    assert trunk[0].in_features == 12
    assert [type(m).__name__ for m in decoder_net(3, 10, (), params_per_pixel=2)] == ["Linear"]
    vae = build_model(ModelConfig(z_dim=2, hidden_dims=[32]))
    assert {"encoder.trunk.0.weight", "decoder.net.0.weight"} <= set(vae.state_dict())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"net": "conv"}, r"--net conv \(net='conv'\) needs image data .*vectors use --net mlp"),
        ({"channels": [8]}, "--channels .* sets the widths of --net conv; drop it"),
        ({"net": "resnet"}, r"unknown net 'resnet'; valid names are \['mlp', 'conv'\]"),
        (
            {"net": "conv", "image_shape": [1, 28, 28], "channels": []},
            r"channels must hold at least one width",
        ),
        (
            {"net": "conv", "image_shape": [1, 28, 28], "channels": [0]},
            "each entry of channels must be a positive integer",
        ),
    ],
)
def test_bad_net_config_is_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        ModelConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_conv_nets_refuse_a_wrong_image_shape():
    with pytest.raises(ValueError, match=r"image_shape \[1, 5, 5\] holds 25 values but x_dim"):
        encoder_trunk(24, (8,), net="conv", image_shape=(1, 5, 5))
    with pytest.raises(ValueError, match="net='conv' needs image data"):
        decoder_net(3, 24, (8,), net="conv")


def test_conv_models_have_one_fully_connected_layer_each_side():
    """build_model's conv nets: the encoder's feature maps -> hidden_dims[-1] in one layer,
    z -> the decoder's first feature map in one linear map (deeper fully connected parts
    train markedly slower), unless decoder_hidden_dims asks for more."""
    vae = build_model(conv_config(hidden_dims=[64, 24], channels=[4, 8]))
    linear = [m for m in vae.encoder.trunk.fc if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(8 * 2 * 2, 24)]
    linear = [m for m in vae.decoder.net.fc if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(3, 8 * 2 * 2)]
    vae = build_model(conv_config(decoder_hidden_dims=[16]))
    linear = [m for m in vae.decoder.net.fc if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(3, 16), (16, 8 * 2 * 2)]


def test_config_records_the_default_channels_and_old_configs_load():
    config = conv_config(channels=None)
    assert config.channels == [32, 64]  # recorded, so a later default cannot change a run
    old = ModelConfig(z_dim=2).to_dict()
    del old["net"], old["channels"]
    restored = ModelConfig.from_dict(old)
    assert (restored.net, restored.channels) == ("mlp", None)


@pytest.mark.parametrize("model", ["vae", "cvae"])
@pytest.mark.parametrize("guide", GUIDE_NAMES)
@pytest.mark.parametrize("prior", PRIOR_NAMES)
def test_every_prior_and_guide_gives_a_finite_loss(prior, guide, model):
    shape = (3, 5, 7)
    vae = build_model(conv_config(shape, prior=prior, guide=guide, model=model, y_dim=3))
    assert type(vae.encoder.trunk).__name__ == "ConvEncoderTrunk"
    assert type(vae.decoder.net).__name__ == "ConvDecoderNet"
    x = torch.rand(6, math.prod(shape)).bernoulli()
    args = (x,) if model == "vae" else (x, torch.eye(3)[torch.arange(6) % 3])
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, *args)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in vae.named_parameters() if p.grad is None]
    assert not missing  # a gradient reaches every parameter, convolutions included
    if prior == "vamp":  # pseudo-inputs go through the convolutional encoder
        assert vae.prior.pseudo_logits.grad.abs().sum() > 0


@pytest.mark.parametrize("likelihood", ["continuous-bernoulli", "gaussian", "discretized-logistic"])
def test_other_likelihoods_with_conv(likelihood):
    """Every likelihood's decoder gets the conv net with its own number of parameters per
    value (two for the discretized logistic: locations, then log-scales)."""
    vae = build_model(conv_config(likelihood=likelihood))
    assert vae.decoder.net.out_dim == vae.decoder.params_per_pixel * 90
    z = torch.randn(4, 2, 3)
    d = vae.decoder(z)
    assert d.batch_shape == (4, 2) and d.event_shape == (90,)
    x = torch.randint(0, 256, (4, 2, 90)).float() if "discretized" in likelihood else None
    x = torch.rand(4, 2, 90) if x is None else x
    assert torch.isfinite(d.log_prob(x)).all()


@pytest.mark.parametrize(
    "model_kwargs, train_kwargs",
    [
        ({}, {}),
        ({"model": "cvae"}, {}),
        ({"prior": "vamp", "num_components": 4}, {"jit": True}),
        ({"model": "cvae", "guide": "flow"}, {"jit": True, "elbo": "trace"}),
        ({"prior": "flow"}, {"elbo": "iwae", "num_particles": 3}),
        ({"model": "cvae", "prior": "vamp"}, {"elbo": "trace", "num_particles": 2}),
    ],
    ids=["vae", "cvae", "vae-vamp-jit", "cvae-flow-jit", "vae-flow-iwae", "cvae-vamp-particles"],
)
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_training_on_tiny_images(model_kwargs, train_kwargs, tmp_path):
    data = image_splits()
    config = conv_config(**model_kwargs)
    vae = train_model(config, small_train(**train_kwargs), data, tmp_path, progress=False)
    loaded = load_run(tmp_path, checkpoint="last")
    assert loaded.run_config.model.net == "conv"
    assert loaded.run_config.model.image_shape == [3, 6, 5]
    for (name, a), (_, b) in zip(
        vae.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(np.isfinite(float(r.split(",")[2])) for r in rows)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_resume_matches_uninterrupted_run(jit, tmp_path):
    data = image_splits()
    config = conv_config(model="cvae", prior="mog")
    full = train_model(config, small_train(jit=jit), data, tmp_path / "a", progress=False)
    pyro.clear_param_store()
    train_model(config, small_train(epochs=1, jit=jit), data, tmp_path / "b", progress=False)
    pyro.clear_param_store()
    resumed = train_model(
        config, small_train(jit=jit), data, tmp_path / "b", resume=True, progress=False
    )
    for (name, a), (_, b) in zip(
        full.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_cli_trains_conv_on_images_and_refuses_vectors(tmp_path, capsys):
    images = tmp_path / "images.npy"
    g = torch.Generator().manual_seed(0)
    np.save(images, torch.rand(120, 3, 7, 6, generator=g).numpy())
    out = tmp_path / "run"
    argv = ["train", "--data", str(images), "--out", str(out), "--net", "conv"]
    argv += ["--channels", "4", "8", "--hidden-dims", "16", "--z-dim", "3", "--epochs", "1"]
    assert main([*argv, "--quiet", "--device", "cpu", "--batch-size", "32"]) == 0
    config = load_run(out).run_config.model
    assert (config.net, config.channels, config.image_shape) == ("conv", [4, 8], [3, 7, 6])
    # the resumed run keeps its networks; a different --channels is a conflict
    code = main(["train", "--out", str(out), "--resume", "--channels", "8", "--epochs", "2"])
    assert code != 0
    assert "--channels 8 differs from the stored 4 8" in capsys.readouterr().err

    vectors = tmp_path / "vectors.npy"
    np.save(vectors, torch.rand(120, 12, generator=g).numpy())
    refused = tmp_path / "refused"
    code = main(["train", "--data", str(vectors), "--out", str(refused), "--net", "conv"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1
    assert "--net conv (net='conv') needs image data" in err[0]
    assert not refused.exists()  # nothing is written on a refused input


def test_two_processes_train_as_one_with_conv(tmp_path):
    """Data-parallel conv training under torchrun (gloo, CPU) gives one process's weights."""
    images = tmp_path / "labelled.npz"
    x = torch.rand(200, 2, 5, 6, generator=torch.Generator().manual_seed(1))
    np.savez(images, x=x.numpy(), y=(torch.arange(200) % 2).numpy())
    args = ["--data", str(images), "--net", "conv", "--channels", "4", "8", "--model", "cvae"]
    args += ["--hidden-dims", "16", "--z-dim", "3", "--epochs", "2", "--batch-size", "40"]
    args += ["--device", "cpu", "--quiet"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "--out", str(one), *args]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "pyrovae", "train", "--out", str(two), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a = torch.load(one / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(two / "checkpoint.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and any("convs" in k for k in a)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_eight_bit_images_with_the_discretized_logistic_and_standardization(tmp_path):
    """Two parameters per value through the conv decoder, x standardized for the encoder,
    log p(x) in the data's units: a finite ELBO per datum after training."""
    data = image_splits()
    for split in (data.train, data.val, data.test):
        split.x.copy_((split.x * 255).round())
    data.kind = "8-bit"
    config = conv_config(likelihood="discretized-logistic", standardize=True)
    vae = train_model(config, small_train(), data, tmp_path, progress=False)
    assert vae.decoder.net.out_dim == 2 * 90
    assert float(vae.encoder.scaling.scale.mean()) > 1  # fitted to 0..255 values
    rows = (tmp_path / "metrics.csv").read_text().splitlines()[1:]
    assert all(np.isfinite(float(r.split(",")[2])) for r in rows)
