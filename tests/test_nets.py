"""Every network exported from ``lightning_modules.nets``, generically; then what each one promises
(the classic CNN's shape, pooling before ReLU, pyramid pooling, packed sequences)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightning_modules.nets as nets
from datamodules.sequences import MNISTRowsDataModule, pad_batch
from lightning_modules.nets import CNN, EpochDropout, LinearNet, RecurrentNet, SpatialPyramidPool


def find_networks() -> dict[str, type[nn.Module]]:
    """Every network defined in a module of ``lightning_modules/nets/``: a new file is tested
    from the moment it exists, exported or not."""
    found = {}
    for module in pkgutil.iter_modules(nets.__path__):
        contents = importlib.import_module(f"{nets.__name__}.{module.name}")
        for name, cls in vars(contents).items():
            if inspect.isclass(cls) and issubclass(cls, nn.Module) and cls.__module__ == contents.__name__:
                if "num_outputs" in inspect.signature(cls).parameters:
                    found[name] = cls
    return found


NETWORKS = find_networks()
CASES = [(name, shape) for name, cls in sorted(NETWORKS.items()) for shape in cls.input_shapes]
MNIST, CIFAR = (1, 28, 28), (3, 32, 32)


def test_networks_are_found() -> None:
    assert {"CNN", "LinearNet", "RecurrentNet"} <= set(NETWORKS)


@pytest.mark.parametrize(("name", "shape"), CASES, ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in CASES])
def test_network_builds_trains_and_round_trips(name: str, shape: tuple[int, ...]) -> None:
    """Built from ``num_outputs`` alone, forward and backward on each declared input shape give
    finite logits and gradients for every parameter; the state_dict reloads to the same outputs."""
    torch.manual_seed(0)
    cls = NETWORKS[name]
    net = cls(num_outputs=7)
    x = torch.randn(4, *shape)
    out = net(x)
    assert out.shape == (4, 7)
    out.square().mean().backward()
    for param_name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), param_name
    # logits only: probabilities are made in predict, never before the loss
    assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Sigmoid)) for m in net.modules())
    reloaded = cls(num_outputs=7)
    reloaded(x)  # materializes its lazy layers
    reloaded.load_state_dict(net.state_dict())
    net.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.isfinite(net(x)).all()
        torch.testing.assert_close(reloaded(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [CIFAR, MNIST], ids=["cifar", "mnist"])
def test_classic_cnn_shapes(shape: tuple[int, int, int]) -> None:
    """conv ->32, conv 32->64 (3x3, padding keeps the size), AdaptiveMaxPool2d(16), AvgPool2d(2),
    Linear(64*8*8, 512), Linear(512, 10): one config for CIFAR-10 and MNIST."""
    net = CNN(10)
    net(torch.zeros(2, *shape))  # materializes the lazy layers
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [
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


def test_cnn_options_change_the_network() -> None:
    x = torch.zeros(2, *CIFAR)
    net = CNN(10, batch_norm=True, dilation=2)
    assert net.features(x).shape == (2, 64, 32, 32)  # dilated 3x3 with padding 2 keeps the size
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.dilation == (2, 2) and c.bias is None for c in convs)  # BatchNorm carries the bias
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2
    assert CNN(10, block_pool="max").features(x).shape == (2, 64, 8, 8)  # two 2x2 poolings
    assert CNN(10, block_pool="avg").features(x).shape == (2, 64, 8, 8)
    gap = CNN(10, head="gap")
    gap(x)
    assert sum(p.numel() for p in gap.head.parameters()) == 64 * 10 + 10  # no hidden layer
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        CNN(10, kernel_size=4)


def conv_relu_pool_reference(net: CNN, x: torch.Tensor) -> torch.Tensor:
    """The textbook block order, conv -> ReLU -> max-pool, with ``net``'s own weights."""
    for conv in (m for m in net.features if isinstance(m, nn.Conv2d)):
        x = F.max_pool2d(F.relu(conv(x)), 2)
    return net.head(x)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
def test_max_pool_before_relu_gives_the_same_outputs_and_gradients(channels_last: bool) -> None:
    """With ReLU the block pools first (cheaper): max and ReLU commute, in value and gradient.
    The input has flat (zero) regions and negative plateaus, where ties and dead units meet."""
    torch.manual_seed(0)
    net = CNN(10, channels=(6, 8), block_pool="max", head="flatten", hidden=16)
    x = torch.randn(3, 1, 12, 12)
    x[:, :, :6] = 0.0  # windows whose values all equal the bias: ties
    net(x)  # materializes the lazy layers
    reference = CNN(10, channels=(6, 8), block_pool="max", head="flatten", hidden=16)
    reference(x)
    reference.load_state_dict(net.state_dict())  # same keys: pooling and ReLU hold no weights
    if channels_last:
        net.to(memory_format=torch.channels_last)
    out, expected = net(x), conv_relu_pool_reference(reference, x)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    for (name, p), q in zip(net.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize("size", [(8, 8), (13, 21), (32, 32)])
def test_spatial_pyramid_pool_width_does_not_depend_on_size(size: tuple[int, int]) -> None:
    pool = SpatialPyramidPool((1, 2, 4))
    assert pool(torch.randn(2, 5, *size)).shape == (2, 5 * (1 + 4 + 16))
    spp = CNN(10, head="spp", hidden=16)
    assert spp(torch.zeros(2, 3, *size)).shape == (2, 10)  # one head, any image size
    assert spp.head[1].in_features == 64 * 21


def test_linear_net_is_one_affine_map() -> None:
    net = LinearNet(10)
    x = torch.randn(4, *MNIST)
    out = net(x)
    assert net.linear.weight.shape == (10, 784)
    torch.testing.assert_close(out, x.flatten(1) @ net.linear.weight.T + net.linear.bias)


LENGTHS = torch.tensor([7, 3, 5, 1])  # a padded batch of 4 sequences, longest 7


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pool", ["last", "mean"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_padding_values_do_not_change_the_output(cell: str, pool: str, bidirectional: bool) -> None:
    net = RecurrentNet(
        5, cell=cell, pool=pool, bidirectional=bidirectional, num_layers=2, hidden_size=12, embed_size=8
    ).eval()
    x = torch.randn(4, int(LENGTHS.max()), 6)
    garbage = x.clone()
    for i, length in enumerate(LENGTHS.tolist()):
        garbage[i, length:] = 1e4 * torch.randn_like(garbage[i, length:])
    torch.testing.assert_close(net(garbage, LENGTHS), net(x, LENGTHS), rtol=0, atol=0)
    # and each sequence gives what it gives alone, unpadded
    alone = torch.cat([net(x[i : i + 1, :n], torch.tensor([n])) for i, n in enumerate(LENGTHS.tolist())])
    torch.testing.assert_close(net(x, LENGTHS), alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [CNN, LinearNet, RecurrentNet], ids=lambda c: c.__name__)
def test_the_networks_take_epoch_dropout_from_their_options(cls: type[nn.Module]) -> None:
    assert any(isinstance(m, EpochDropout) for m in cls(num_outputs=10, epoch_dropout=0.5).modules())


def test_mnist_rows_are_cut_to_the_inked_rows_and_padded(mnist_dir) -> None:
    data = MNISTRowsDataModule(data_dir=str(mnist_dir), batch_size=4)
    assert data.input_shape == (28, 28)  # (longest sequence, pixels per row)
    to_rows = data.transform("eval")
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, 5:10, 3:20] = 255  # ink on rows 5..9 only
    rows = to_rows(image)
    assert rows.shape == (5, 28)
    shifted = image.roll(10, dims=1)  # the same digit 10 rows lower: the same sequence
    assert torch.equal(to_rows(shifted), rows)
    x, lengths, y = pad_batch([(rows, 3), (rows[:2], 7), (rows[:4], 1)])
    assert x.shape == (3, 5, 28) and lengths.tolist() == [5, 2, 4] and y.tolist() == [3, 7, 1]
    assert (x[1, 2:] == 0).all() and torch.equal(x[2, :4], rows[:4])
    data.prepare_data()
    data.setup("fit")
    x, lengths, y = next(iter(data.train_dataloader()))
    assert x.shape == (4, int(lengths.max()), 28) and lengths.shape == y.shape == (4,)
