"""Every network of ``lightning_modules/nets/``, generically; then what each one promises (CNN options,
pyramid pooling, packed sequences, the speed-run whitening)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightning_modules.nets as nets
from lightning_modules.nets.cnn import CNN
from lightning_modules.nets.layers import EpochDropout, SpatialPyramidPool
from lightning_modules.nets.linear import LinearNet
from lightning_modules.nets.rnn import RecurrentNet
from lightning_modules.nets.speedrun import SpeedrunNet, patch_whitening
from run.errors import UserError

DEFAULT_SHAPES = ((1, 28, 28), (3, 32, 32))


def find_networks() -> dict[str, type[nn.Module]]:
    """Every network (an ``nn.Module`` whose first argument is ``num_outputs``) defined in a module of
    ``lightning_modules/nets/``: a new file there is tested from the moment it exists."""
    found = {}
    for info in pkgutil.iter_modules(nets.__path__):
        module = importlib.import_module(f"{nets.__name__}.{info.name}")
        for name, cls in vars(module).items():
            if inspect.isclass(cls) and issubclass(cls, nn.Module) and cls.__module__ == module.__name__:
                parameters = list(inspect.signature(cls).parameters)
                if parameters[:1] == ["num_outputs"]:
                    found[f"{info.name}.{name}"] = cls
    return found


NETWORKS = find_networks()


def takes_lengths(net: nn.Module) -> bool:
    """Whether ``forward(x, lengths)`` reads a padded batch of sequences (RecurrentNet)."""
    return "lengths" in inspect.signature(net.forward).parameters


def inputs_for(net: nn.Module, shape: tuple[int, ...], batch: int = 2) -> tuple[torch.Tensor, ...]:
    x = torch.randn(batch, *shape)
    if takes_lengths(net):
        return x, torch.tensor([shape[0], max(1, shape[0] // 2)][:batch])
    return (x,)


def check_network(cls: type[nn.Module], num_outputs: int = 3) -> None:
    """Forward and backward on each sample shape, finite logits and gradients, and a state_dict that
    reloads into a fresh instance to the same outputs."""
    declared = hasattr(cls, "input_shapes")
    for shape in getattr(cls, "input_shapes", DEFAULT_SHAPES):
        torch.manual_seed(0)
        net = cls(num_outputs=num_outputs)
        args = inputs_for(net, shape)
        try:
            out = net(*args)
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            if declared:
                raise
            pytest.fail(
                f"{cls.__name__} cannot take samples shaped {shape} ({type(err).__name__}: {err}). "
                "Declare the sample shapes it takes as a class attribute, e.g. "
                "`input_shapes = ((28, 28),)`, so that tests/test_nets.py runs it on them."
            )
        assert out.shape == (len(args[0]), num_outputs), shape
        out.square().mean().backward()
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{shape}: {name}"
        fresh = cls(num_outputs=num_outputs).eval()
        net.eval()
        with torch.no_grad():
            fresh(*args)  # materializes its lazy layers
            fresh.load_state_dict(net.state_dict())
            expected = net(*args)
            assert torch.isfinite(expected).all()
            torch.testing.assert_close(fresh(*args), expected, rtol=0, atol=0)


def test_networks_are_found() -> None:
    """Discovery finds the template's networks and none of its helper layers."""
    names = {name.rsplit(".", 1)[-1] for name in NETWORKS}
    assert {"CNN", "LinearNet", "RecurrentNet", "SpeedrunNet"} <= names
    assert not names & {"EpochDropout", "SpatialPyramidPool", "PatchWhitening", "ScaledBias"}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_trains_and_round_trips(name: str) -> None:
    """Built from ``num_outputs`` alone, each network runs forward and backward on its sample shapes
    and its state_dict reloads into a fresh instance with identical outputs."""
    check_network(NETWORKS[name])


def test_a_network_without_input_shapes_is_told_to_declare_them() -> None:
    """A network that cannot take the default image shapes fails with a message that says what to do."""

    class RowsOnly(nn.Module):
        def __init__(self, num_outputs: int) -> None:
            super().__init__()
            self.linear = nn.Linear(5, num_outputs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    with pytest.raises(pytest.fail.Exception, match="input_shapes"):
        check_network(RowsOnly)
    RowsOnly.input_shapes = ((5,),)
    check_network(RowsOnly)


@pytest.mark.parametrize("shape", DEFAULT_SHAPES, ids=["mnist", "cifar"])
def test_cnn_defaults_are_the_classic_network(shape: tuple[int, int, int]) -> None:
    """conv ->32, conv ->64 (size kept), adaptive head to 8x8, Linear(64*8*8, 512), Linear(512, 10)."""
    net = CNN(10)
    net(torch.zeros(2, *shape))
    assert [tuple(p.shape) for p in net.parameters()] == [
        (32, shape[0], 3, 3),
        (32,),
        (64, 32, 3, 3),
        (64,),
        (512, 64 * 8 * 8),
        (512,),
        (10, 512),
        (10,),
    ]
    assert net.features(torch.zeros(2, *shape)).shape == (2, 64, *shape[1:])
    assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Sigmoid)) for m in net.modules())  # logits


def test_cnn_options_change_the_network() -> None:
    """Dilation keeps the size, batch norm replaces the conv bias, block pooling halves, gap has no hidden layer."""
    x = torch.zeros(2, 3, 32, 32)
    net = CNN(10, batch_norm=True, dilation=2)
    assert net.features(x).shape == (2, 64, 32, 32)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.dilation == (2, 2) and c.bias is None for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2
    assert CNN(10, kernel_size=5).features(x).shape == (2, 64, 32, 32)
    for pool in ("max", "avg"):
        assert CNN(10, block_pool=pool).features(x).shape == (2, 64, 8, 8)  # two 2x2 poolings
    gap = CNN(10, head="gap")
    assert gap(x).shape == (2, 10)
    assert sum(p.numel() for p in gap.head.parameters()) == 64 * 10 + 10
    flat = CNN(10, channels=(4,), head="flatten", hidden=6)
    flat(x)
    assert flat.head[1].in_features == 4 * 32 * 32
    assert sum(isinstance(m, EpochDropout) for m in CNN(10, epoch_dropout=0.3).modules()) == 1
    with pytest.raises(UserError, match="kernel_size must be odd"):
        CNN(10, kernel_size=4)


def test_max_pool_before_relu_gives_the_textbook_outputs_and_gradients() -> None:
    """With ReLU the block pools first: the same values and gradients as conv -> ReLU -> max-pool."""
    torch.manual_seed(0)
    x = torch.randn(3, 1, 12, 12)
    x[:, :, :6] = 0.0  # flat windows: ties
    net = CNN(10, channels=(6, 8), block_pool="max", head="flatten", hidden=16)
    net(x)
    reference = CNN(10, channels=(6, 8), block_pool="max", head="flatten", hidden=16)
    reference(x)
    reference.load_state_dict(net.state_dict())
    h = x
    for conv in (m for m in reference.features if isinstance(m, nn.Conv2d)):
        h = F.max_pool2d(F.relu(conv(h)), 2)
    out, expected = net(x), reference.head(h)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    for (name, p), q in zip(net.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize("size", [(8, 8), (13, 21), (32, 32)])
def test_spatial_pyramid_pool_width_does_not_depend_on_size(size: tuple[int, int]) -> None:
    """C * (1 + 4 + 16) features whatever the image size, so one spp head serves every size."""
    assert SpatialPyramidPool((1, 2, 4))(torch.randn(2, 5, *size)).shape == (2, 5 * 21)
    torch.manual_seed(0)
    spp = CNN(10, channels=(4, 8), head="spp", hidden=16)
    assert spp(torch.zeros(2, 3, *size)).shape == (2, 10)
    assert spp.head[1].in_features == 8 * 21


def test_linear_net_is_one_affine_map() -> None:
    """LinearNet is x.flatten() @ W^T + b."""
    net = LinearNet(10)
    x = torch.randn(4, 1, 28, 28)
    out = net(x)
    assert net.linear.weight.shape == (10, 784)
    torch.testing.assert_close(out, x.flatten(1) @ net.linear.weight.T + net.linear.bias)


@pytest.mark.parametrize("cls", [CNN, LinearNet, RecurrentNet], ids=lambda c: c.__name__)
def test_networks_take_epoch_dropout_from_their_options(cls: type[nn.Module]) -> None:
    """``epoch_dropout > 0`` puts one EpochDropout layer, seeded by ``seed``, in the network; 0 puts none."""
    (layer,) = [m for m in cls(num_outputs=4, epoch_dropout=0.25, seed=9).modules() if isinstance(m, EpochDropout)]
    assert (layer.p, layer.seed) == (0.25, 9)
    assert not any(isinstance(m, EpochDropout) for m in cls(num_outputs=4).modules())


LENGTHS = torch.tensor([7, 3, 5, 1])  # a padded batch of 4 sequences, longest 7


@pytest.mark.parametrize(
    ("cell", "pool", "bidirectional"), [("lstm", "last", False), ("gru", "mean", True), ("rnn", "last", True)]
)
def test_recurrent_output_ignores_the_padding(cell: str, pool: str, bidirectional: bool) -> None:
    """Packed sequences: garbage in the padding changes nothing, and each sequence gives what it gives alone."""
    torch.manual_seed(0)
    net = RecurrentNet(
        5, cell=cell, pool=pool, bidirectional=bidirectional, num_layers=2, hidden_size=12, embed_size=8
    ).eval()
    x = torch.randn(4, int(LENGTHS.max()), 6)
    garbage = x.clone()
    for i, length in enumerate(LENGTHS.tolist()):
        garbage[i, length:] = 1e4 * torch.randn_like(garbage[i, length:])
    with torch.no_grad():
        out = net(x, LENGTHS)
        torch.testing.assert_close(net(garbage, LENGTHS), out, rtol=0, atol=0)
        alone = torch.cat([net(x[i : i + 1, :n], torch.tensor([n])) for i, n in enumerate(LENGTHS.tolist())])
    torch.testing.assert_close(out, alone, rtol=1e-5, atol=1e-6)


def test_recurrent_net_without_lengths_reads_every_step() -> None:
    """``lengths=None`` means every sequence is full length."""
    net = RecurrentNet(3, hidden_size=8, embed_size=4).eval()
    x = torch.randn(2, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x, torch.tensor([6, 6])), rtol=0, atol=0)


def test_speedrun_init_from_data_fits_the_whitening() -> None:
    """After init_from_data the whitening filters decorrelate the patches they were fitted on, and a
    second call (a resumed run) keeps them."""
    torch.manual_seed(0)
    net = SpeedrunNet(10, widths=(8, 8, 8), whiten_width=24, whiten_eps=0.0)
    mixing = torch.randn(3, 3)  # correlated channels
    x = torch.einsum("dc,bchw->bdhw", mixing, torch.randn(16, 3, 12, 12))
    assert not bool(net.fitted)
    net.init_from_data(x)
    assert bool(net.fitted)
    weight = net.whiten.clone()  # (24, 3, 2, 2)
    assert weight.shape == (24, 3, 2, 2)
    torch.testing.assert_close(weight, patch_whitening(x, 2, 24, 0.0))
    responses = F.conv2d(x, weight[:12]).permute(0, 2, 3, 1).reshape(-1, 12)  # (P, 12) whitened patches
    torch.testing.assert_close(responses.T @ responses / len(responses), torch.eye(12), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(weight[12:], -weight[:12])  # each filter and its negative
    net.init_from_data(torch.randn(4, 3, 12, 12))
    assert torch.equal(net.whiten, weight)
    assert {"whiten", "fitted"} <= set(net.state_dict())  # a checkpoint keeps the fitted filters
    assert net(x[:2]).shape == (2, 10)
