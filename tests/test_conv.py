"""The convolutional first layer of a QuantumMLP: the kernels' dense couplings, the layer
against the dense network they fill (samples and Monte Carlo gradients), and against the
paper's Fig. 19 detector built by name."""

from __future__ import annotations

import io

import pytest
import torch
from torch.nn import functional as F

from qnn_torch import QuantumMLP, SamplerConfig, circuits
from qnn_torch.functional.conv import ConvGeometry, conv_couplings, window_pixels
from qnn_torch.functional.mlp import mlp_fields
from tests.helpers import SMALL
from tests.test_twin import SMALL_GRID
from training.quantum_mlp import QuantumMLPClassifier

GEOMETRY = ConvGeometry(image=(5, 6), channels=2, kernel=(3, 2), stride=2)


def test_geometry_of_a_strided_layer():
    assert GEOMETRY.maps == (2, 3) and GEOMETRY.neurons == 12 and GEOMETRY.inputs == 30
    assert GEOMETRY.kernel_shape == (2, 3, 2)
    assert ConvGeometry.from_state(GEOMETRY.as_state()) == GEOMETRY
    # Window (i, j) = (1, 2) starts at pixel (2, 4): its first row holds pixels 16, 17.
    assert window_pixels(GEOMETRY)[5].tolist() == [16, 17, 22, 23, 28, 29]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dense_couplings_are_the_convolution(dtype):
    generator = torch.Generator().manual_seed(0)
    kernels = torch.rand(GEOMETRY.kernel_shape, generator=generator).to(dtype)
    images = torch.rand(4, 5, 6, generator=generator).to(dtype)
    dense = conv_couplings(kernels, GEOMETRY)
    assert dense.shape == (12, 30) and dense.dtype == dtype
    expected = F.conv2d(images[:, None], kernels[:, None], stride=2).flatten(1)
    torch.testing.assert_close(images.flatten(1) @ dense.t(), expected)
    # Each window lies inside the image: a row sums to its channel's kernel sum.
    torch.testing.assert_close(dense.sum(1), kernels.sum((1, 2)).repeat_interleave(6))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"image": (0, 4)}, "image"),
        ({"image": (4, 4, 4)}, "image"),
        ({"channels": 0}, "channels"),
        ({"channels": 1.5}, "channels"),
        ({"kernel": True}, "kernel"),
        ({"kernel": 5}, "kernel"),
        ({"stride": 0}, "stride"),
    ],
)
def test_bad_geometry_is_refused(kwargs, name):
    settings = {"image": 4, "channels": 1, "kernel": 3, "stride": 1} | kwargs
    with pytest.raises(ValueError, match=name):
        ConvGeometry(**settings)


def test_bad_sizes_and_kernels_are_refused():
    with pytest.raises(ValueError, match="sizes must start with"):
        QuantumMLP((30, 10, 2), conv=GEOMETRY)
    for conv in ({"channels": 2}, "3x3"):
        with pytest.raises(ValueError, match="conv must be a ConvGeometry"):
            QuantumMLP((30, 12, 2), conv=conv)
    with pytest.raises(ValueError, match="kernels must have shape"):
        conv_couplings(torch.ones(2, 2, 3), GEOMETRY)


def pair(**config) -> tuple[QuantumMLP, QuantumMLP]:
    """A convolutional QuantumMLP and the dense one its kernels fill, same couplings."""
    settings = SamplerConfig(**SMALL, chains=4, thermalization=20, sweeps=40, **config)
    common = {"config": settings, "readout": "activity", "twin_grid": SMALL_GRID}
    conv = QuantumMLP((30, 12, 3), conv=GEOMETRY, **common)
    dense = QuantumMLP((30, 12, 3), **common)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for weights in (conv.excite, conv.inhibit):
            weights[0].copy_(torch.rand(weights[0].shape, generator=generator) * 8)
            weights[1].copy_(torch.rand(weights[1].shape, generator=generator) * 4)
    fill_dense(dense, conv)
    return conv, dense


@torch.no_grad()
def fill_dense(dense: QuantumMLP, conv: QuantumMLP) -> None:
    """Copy conv's couplings into dense, its kernels as the dense couplings they fill."""
    for mine, theirs in zip(dense.parameters(), conv.parameters(), strict=True):
        mine.copy_(theirs if mine.shape == theirs.shape else conv_couplings(theirs, GEOMETRY))


def test_samples_and_gradients_are_the_dense_network():
    """Same seed, same samples; each kernel entry's Monte Carlo gradient is the sum of the
    dense couplings' gradients over its windows."""
    conv, dense = pair(dtype=torch.float64)
    images = torch.rand(3, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    outputs = [mlp.activities(images)[-1] for mlp in (conv, dense)]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    for name in ("excite", "inhibit"):
        kernel, matrix = getattr(conv, name)[0], getattr(dense, name)[0]
        (d_kernel,) = torch.autograd.grad(outputs[0][:, 0].sum(), kernel, retain_graph=True)
        (d_matrix,) = torch.autograd.grad(outputs[1][:, 0].sum(), matrix, retain_graph=True)
        _, pullback = torch.func.vjp(lambda k: conv_couplings(k, GEOMETRY), kernel.detach())
        (expected,) = pullback(d_matrix)
        assert d_kernel.ne(0).any()
        torch.testing.assert_close(d_kernel, expected)  # float32 parameters


def test_twin_and_bounds_act_on_the_kernels():
    """bound_to_twin_ scales a kernel as it scales the dense rows it fills (each row sums
    to its kernel's sum), and the twin of the kernels is the twin of the dense couplings."""
    conv, dense = pair()
    with torch.no_grad():
        conv.inhibit[1].zero_()
        conv.excite[0].mul_(1e6)  # far beyond the twin's drive axis
        fill_dense(dense, conv)
        conv.bound_to_twin_()
        dense.bound_to_twin_()
        torch.testing.assert_close(conv_couplings(conv.excite[0], GEOMETRY), dense.excite[0])
        conv.estimator = dense.estimator = "twin"
        images = torch.rand(2, 30, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(conv.activities(images)[-1], dense.activities(images)[-1])


def test_state_dict_round_trip_keeps_the_geometry():
    conv, _ = pair(seed=5)
    buffer = io.BytesIO()
    torch.save(conv.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    loaded = QuantumMLP((30, 12, 3), conv=GEOMETRY, readout="activity")
    loaded.load_state_dict(state)
    images = torch.rand(2, 30, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(loaded.activities(images)[-1], conv.activities(images)[-1])
    # Same kernel and map shapes, another stride: refused, and the settings stay as they were.
    wide = ConvGeometry(image=(6, 8), channels=2, kernel=(3, 2), stride=3)
    assert wide.maps == GEOMETRY.maps and wide.kernel_shape == GEOMETRY.kernel_shape
    other = QuantumMLP((48, 12, 3), conv=wide)
    config = other.config
    state = {**state, "_extra_state": {**state["_extra_state"], "conv": wide.as_state()}}
    with pytest.raises(ValueError, match="conv"):
        QuantumMLP((30, 12, 3), conv=GEOMETRY).load_state_dict(state)
    with pytest.raises(ValueError, match="conv"):
        other.load_state_dict(conv.state_dict())
    assert other.config == config


def test_classifier_scales_the_kernels_and_their_steps(monkeypatch):
    """A kernel entry starts 1/share times a dense coupling, and Adam steps it so."""
    conv = ConvGeometry(image=28, channels=4, kernel=14, stride=7)
    dense = QuantumMLPClassifier((784, 36, 10), seed=1)
    classifier = QuantumMLPClassifier((784, 36, 10), conv=conv.as_state(), seed=1)
    assert classifier.mlp.conv == conv and classifier.hparams["conv"] == conv.as_state()
    ratio = classifier.mlp.excite[0].mean() / dense.mlp.excite[0].mean()
    assert abs(ratio * conv.share - 1) < 0.1  # means of U(0, s) draws
    trainer = type("Trainer", (), {"estimated_stepping_batches": 10})()
    monkeypatch.setattr(QuantumMLPClassifier, "trainer", trainer)
    optimizer = classifier.configure_optimizers()["optimizer"]
    first = {id(classifier.mlp.excite[0]), id(classifier.mlp.inhibit[0])}
    for group in optimizer.param_groups:
        kernels = {id(p) for p in group["params"]} == first
        expected = classifier.hparams.lr / (conv.share if kernels else 1.0)
        assert group["lr"] == pytest.approx(expected)
    assert [len(g["params"]) for g in optimizer.param_groups] == [2, 2]  # + logit scale


def test_one_channel_is_the_papers_detector():
    """Fig. 19's detector as a QuantumMLP: a 3×3 convolution of a 4×4 image, one channel,
    the four neurons exciting one output, has the fields of circuits.vertical_line_detector."""
    geometry = ConvGeometry(image=4, channels=1, kernel=3)
    k = 100.0
    mlp = QuantumMLP((16, 4, 1), conv=geometry, coupling_scale=k, inhibition_scale=k)
    excite, inhibit = circuits.vertical_line_kernels()
    with torch.no_grad():
        mlp.excite[0].copy_(excite[None] / k)
        mlp.inhibit[0].copy_(inhibit[None] / k)
        mlp.excite[1].fill_(circuits.DETECTOR_OUTPUT / k)
        mlp.inhibit[1].zero_()
    pixels = torch.zeros(2, 4, 4, dtype=torch.float64)
    pixels[0, :, 1] = 1.0
    pixels[1, 2, :] = 1.0
    compiled = circuits.vertical_line_detector(pixels).compile(
        SamplerConfig(n_time=16, dtype=torch.float64)
    )
    names = ["c_0_0", "c_0_1", "c_1_0", "c_1_1", "out"]
    order = [names.index(name) for name in compiled.order]
    scale = torch.tensor(k, dtype=torch.float64)
    dense = [conv_couplings(w[0].double().detach(), geometry) for w in (mlp.excite, mlp.inhibit)]
    drive, inhibition, links, mutual = mlp_fields(
        pixels.flatten(1),
        [dense[0], mlp.excite[1].double().detach()],
        [dense[1], mlp.inhibit[1].double().detach()],
        scale,
        scale,
    )
    torch.testing.assert_close(drive[:, order], compiled.drive)
    torch.testing.assert_close(inhibition[:, order], compiled.input_inhibition)
    torch.testing.assert_close(links[order][:, order], compiled.excite[0])
    assert compiled.inhibit is None and mutual.eq(0).all()
