"""The shape arithmetic the network relies on, checked against PyTorch: pinned premises
(marked `premise`, counted apart from the tests of our own code)."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytestmark = pytest.mark.premise


def transposed_out(h: int, k: int, s: int, p: int, d: int, op: int) -> int:
    return (h - 1) * s - 2 * p + d * (k - 1) + op + 1


@pytest.mark.parametrize(
    "k,s,p,d",
    [c for c in itertools.product([1, 2, 3, 4, 5], [1, 2, 3], [0, 1, 2], [1, 2])
     if c[2] <= c[3] * (c[0] - 1) // 2 + 1],
)
def test_conv_transpose_output_size_matches_formula(k, s, p, d):
    for h in (1, 2, 5, 8):
        for op in range(max(s, d)):
            if op >= s and op >= d:
                continue
            expected = transposed_out(h, k, s, p, d, op)
            if expected < 1:
                continue
            layer = nn.ConvTranspose2d(1, 1, k, stride=s, padding=p, dilation=d, output_padding=op)
            assert layer(torch.zeros(1, 1, h, h)).shape[-1] == expected


def test_strided_conv_maps_several_sizes_to_one_and_transpose_recovers_each():
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    deconv = nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1)
    sizes = (15, 16)
    outs = {conv(torch.zeros(1, 1, n, n)).shape[-1] for n in sizes}
    assert outs == {8}
    for n in sizes:
        y = torch.zeros(1, 1, 8, 8)
        assert deconv(y, output_size=(n, n)).shape[-2:] == (n, n)


def test_conv2d_equals_unfold_matmul_fold():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11)
    weight = torch.randn(5, 3, 3, 3)
    expected = F.conv2d(x, weight, padding=1)
    cols = F.unfold(x, kernel_size=3, padding=1)  # (B, C*k*k, L)
    out = weight.view(5, -1) @ cols  # (B, 5, L)
    got = F.fold(out, output_size=(9, 11), kernel_size=1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,stride", [(3, 1), (4, 2), (5, 3), (2, 2)])
def test_fold_of_unfold_is_divisor_times_input(kernel, stride):
    torch.manual_seed(0)
    x = torch.randn(1, 2, 14, 14)
    kw = {"kernel_size": kernel, "stride": stride}
    size = x.shape[-2:]
    divisor = F.fold(F.unfold(torch.ones_like(x), **kw), size, **kw)
    covered = divisor > 0
    got = F.fold(F.unfold(x, **kw), size, **kw)
    torch.testing.assert_close(got[covered], (divisor * x)[covered])
    if kernel > stride:
        assert divisor.max() > 1  # overlapping tiles really were summed
