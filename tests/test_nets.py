"""Shapes of every network on its inputs, the seed CNN layer by layer, packed sequences."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightning_modules.nets as nets
from datamodules.sequences import MNISTRowsDataModule, pad_batch
from lightning_modules.nets import (
    CNN,
    EpochDropout,
    LinearNet,
    RecurrentNet,
    SpatialPyramidPool,
    SpeedrunNet,
)

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
LENGTHS = torch.tensor([7, 3, 5, 1])  # a padded batch of 4 sequences, longest 7


def images(shape: tuple[int, ...]) -> tuple[torch.Tensor]:
    return (torch.randn(4, *shape),)


def sequences(features: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(4, int(LENGTHS.max()), features), LENGTHS


def rnn(cell: str, pool: str, bidirectional: bool) -> RecurrentNet:
    return RecurrentNet(5, cell=cell, pool=pool, bidirectional=bidirectional, num_layers=2,
                        hidden_size=12, embed_size=8)


HEADS = ("seed", "flatten", "gap", "spp")
IMAGES = {"mnist": MNIST, "cifar": CIFAR}
# (network factory, forward inputs, expected output shape) for every network and option
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple], tuple[int, ...]]] = {
    **{f"cnn-{head}-{data}": (lambda h=head: CNN(10, head=h), lambda s=shape: images(s), (4, 10))
       for head in HEADS for data, shape in IMAGES.items()},
    "cnn-batchnorm-dilated": (lambda: CNN(10, batch_norm=True, dilation=2),
                              lambda: images(CIFAR), (4, 10)),
    "cnn-blockpool-gelu": (lambda: CNN(7, block_pool="max", activation="gelu", channels=(8, 8, 8)),
                           lambda: images((3, 40, 24)), (4, 7)),
    "cnn-blockpool-relu-channels-last": (
        lambda: CNN(10, block_pool="max", head="flatten", hidden=16, channels_last=True),
        lambda: images(MNIST), (4, 10)),
    "cnn-epoch-dropout": (lambda: CNN(2, epoch_dropout=0.3, dropout=0.1),
                          lambda: images(MNIST), (4, 2)),
    "linear-polynomial": (lambda: LinearNet(1), lambda: (torch.randn(4, 3),), (4, 1)),
    "linear-softmax": (lambda: LinearNet(10, epoch_dropout=0.2), lambda: images(MNIST), (4, 10)),
    **{f"rnn-{cell}-{pool}-{'bi' if bi else 'uni'}": (lambda c=cell, p=pool, b=bi: rnn(c, p, b),
                                                      sequences, (4, 5))
       for cell in ("lstm", "gru", "rnn") for pool in ("last", "mean") for bi in (False, True)},
    "rnn-epoch-dropout": (lambda: RecurrentNet(3, epoch_dropout=0.5, hidden_size=8),
                          sequences, (4, 3)),
    "speedrun-cifar": (lambda: SpeedrunNet(10, widths=(8, 16, 16)), lambda: images(CIFAR), (4, 10)),
    "speedrun-mnist": (lambda: SpeedrunNet(10, widths=(8, 16, 16), whiten_width=8),
                       lambda: images(MNIST), (4, 10)),
}


def test_every_network_has_cases() -> None:
    networks = {name for name in nets.__all__
                if "num_outputs" in inspect.signature(getattr(nets, name)).parameters}
    covered = {type(factory()).__name__ for factory, _, _ in CASES.values()}
    assert networks == covered


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_shape_train_and_eval(case: str) -> None:
    factory, inputs, shape = CASES[case]
    net, args = factory(), inputs()
    assert net(*args).shape == shape
    assert net.eval()(*args).shape == shape
    # logits only: probabilities are made in predict, never before the loss
    assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Sigmoid)) for m in net.modules())


@pytest.mark.parametrize("shape", [CIFAR, MNIST], ids=["cifar", "mnist"])
def test_seed_cnn_layer_by_layer(shape: tuple[int, int, int]) -> None:
    """conv ->32, conv 32->64 (3x3, padding 1), AdaptiveMaxPool2d(16), AvgPool2d(2), Flatten,
    Linear(64*8*8, 512), ReLU, Linear(512, 10): the same config on CIFAR-10 and on MNIST."""
    net = CNN(10)
    net(torch.zeros(2, *shape))  # materializes the lazy layers
    conv1, relu1, conv2, relu2 = net.features
    assert conv1.weight.shape == (32, shape[0], 3, 3) and conv1.padding == (1, 1)
    assert conv2.weight.shape == (64, 32, 3, 3) and conv2.padding == (1, 1)
    assert isinstance(relu1, nn.ReLU) and isinstance(relu2, nn.ReLU)
    assert [type(m).__name__ for m in net.head] == [
        "AdaptiveMaxPool2d", "AvgPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    assert net.head[0].output_size == 16 and net.head[1].kernel_size == 2
    assert net.head[3].weight.shape == (512, 64 * 8 * 8)
    assert net.head[5].weight.shape == (10, 512)


def test_cnn_options_change_the_layers() -> None:
    net = CNN(10, batch_norm=True, dilation=2)
    x = torch.zeros(2, *CIFAR)
    assert net.features(x).shape == (2, 64, 32, 32)  # dilated 3x3 with padding 2 keeps the size
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert all(c.dilation == (2, 2) and c.bias is None for c in convs)  # BatchNorm carries the bias
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.features) == 2
    gap = CNN(10, head="gap")
    gap(x)
    assert [type(m).__name__ for m in gap.head] == ["AdaptiveAvgPool2d", "Flatten", "Linear"]
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
    net = CNN(10, channels=(6, 8), block_pool="max", head="flatten", hidden=16,
              channels_last=channels_last)
    x = torch.randn(3, 1, 12, 12)
    x[:, :, :6] = 0.0  # windows whose values all equal the bias: ties
    net(x)  # materializes the lazy layers
    assert [type(m).__name__ for m in net.features] == [
        "Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU"]
    reference = CNN(10, channels=(6, 8), block_pool="max", head="flatten", hidden=16)
    reference(x)
    reference.load_state_dict(net.state_dict())  # same keys: pooling and ReLU hold no weights
    out, expected = net(x), conv_relu_pool_reference(reference, x)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    for (name, p), q in zip(net.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_channels_last_stores_convolution_weights_nhwc_before_any_optimizer() -> None:
    net = CNN(10, channels=(4, 8), channels_last=True)
    params = list(net.parameters())  # what an optimizer would hold
    net(torch.zeros(2, *MNIST))
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    # (C_out, 1, kh, kw) is NCHW- and NHWC-contiguous at once; NHWC strides put C innermost
    assert all(c.weight.stride()[1] == 1 for c in convs)
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert all(not c._forward_pre_hooks for c in convs)  # the hooks left after their one job
    out = net(torch.randn(2, *MNIST))
    assert out.shape == (2, 10)
    assert convs[0].weight is params[0]  # the same Parameter object, only its storage changed


@pytest.mark.parametrize("size", [(8, 8), (13, 21), (32, 32)])
def test_spatial_pyramid_pool_width_does_not_depend_on_size(size: tuple[int, int]) -> None:
    pool = SpatialPyramidPool((1, 2, 4))
    assert pool(torch.randn(2, 5, *size)).shape == (2, 5 * (1 + 4 + 16))
    spp = CNN(10, head="spp")
    spp(torch.zeros(2, 3, *size))  # one head, any image size
    assert spp.head[1].weight.shape[1] == 64 * 21


def test_linear_net_is_one_affine_map() -> None:
    net = LinearNet(10)
    x = torch.randn(4, *MNIST)
    out = net(x)
    assert net.linear.weight.shape == (10, 784)
    torch.testing.assert_close(out, x.flatten(1) @ net.linear.weight.T + net.linear.bias)


@pytest.mark.parametrize("case", sorted(c for c in CASES if c.startswith("rnn-")))
def test_padding_values_do_not_change_the_output(case: str) -> None:
    factory, inputs, _ = CASES[case]
    net = factory().eval()
    x, lengths = inputs()
    garbage = x.clone()
    for i, length in enumerate(lengths.tolist()):
        garbage[i, length:] = 1e4 * torch.randn_like(garbage[i, length:])
    torch.testing.assert_close(net(garbage, lengths), net(x, lengths), rtol=0, atol=0)
    # and each sequence gives what it gives alone, unpadded
    alone = torch.cat([net(x[i : i + 1, :n], torch.tensor([n]))
                       for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(net(x, lengths), alone, rtol=1e-5, atol=1e-6)


def test_every_network_takes_epoch_dropout_from_its_options() -> None:
    for net in (CNN(10, epoch_dropout=0.5), LinearNet(10, epoch_dropout=0.5),
                RecurrentNet(10, epoch_dropout=0.5)):
        assert any(isinstance(m, EpochDropout) for m in net.modules()), type(net).__name__


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
