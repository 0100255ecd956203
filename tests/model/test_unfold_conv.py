"""model/unfold_conv.py: convolution as unfold + matmul + fold, and the transposed conv as
autograd's vector–Jacobian product, held equal to PyTorch's own."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.unfold_conv import conv2d, conv_transpose2d, conv_transpose2d_by_autograd

CASES = [  # (kernel, stride, padding, dilation, height, width)
    (3, 1, 1, 1, 9, 11), (3, 2, 1, 1, 9, 8), (1, 1, 0, 1, 5, 7), (5, 2, 2, 1, 13, 10),
    (3, 1, 2, 2, 8, 9), (4, 3, 1, 1, 11, 12),
]


@pytest.mark.parametrize(("k", "s", "p", "d", "h", "w"), CASES)
def test_conv2d_is_unfold_then_matmul(k, s, p, d, h, w):
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 3, h, w), torch.randn(5, 3, k, k), torch.randn(5)
    expected = F.conv2d(x, weight, bias, stride=s, padding=p, dilation=d)
    assert torch.allclose(conv2d(x, weight, bias, s, p, d), expected, atol=1e-5)


# output_padding must be smaller than the stride or the dilation
TRANSPOSED = [(*case, op) for case in CASES for op in (0, 1) if op < max(case[1], case[3])]


@pytest.mark.parametrize(("k", "s", "p", "d", "h", "w", "op"), TRANSPOSED)
def test_conv_transpose2d_is_matmul_then_fold(k, s, p, d, h, w, op):
    torch.manual_seed(1)
    y, weight, bias = torch.randn(2, 5, h, w), torch.randn(5, 3, k, k), torch.randn(3)
    expected = F.conv_transpose2d(y, weight, bias, stride=s, padding=p, output_padding=op,
                                  dilation=d)
    got = conv_transpose2d(y, weight, bias, s, p, op, d)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(("size", "op"), [((15, 16), (0, 1)), ((16, 15), (1, 0))])
def test_the_transposed_conv_is_the_convs_vector_jacobian_product(size, op):
    torch.manual_seed(2)
    y, weight = torch.randn(2, 4, 8, 8), torch.randn(4, 3, 3, 3)
    by_autograd = conv_transpose2d_by_autograd(y, weight, size, stride=2, padding=1)
    expected = F.conv_transpose2d(y, weight, stride=2, padding=1, output_padding=op)
    assert by_autograd.shape[-2:] == size and torch.allclose(by_autograd, expected, atol=1e-5)


def test_gradcheck_through_the_conv_transpose_path():
    torch.manual_seed(3)
    layer = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1).double()
    x = torch.randn(1, 2, 4, 5, dtype=torch.double, requires_grad=True)

    def upsample(inp: torch.Tensor) -> torch.Tensor:
        return layer(inp, output_size=(8, 9))

    assert torch.autograd.gradcheck(upsample, (x,), eps=1e-6, atol=1e-4)
    weight = layer.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda w: conv_transpose2d(x.detach(), w, stride=2, padding=1, output_padding=(1, 0)),
        (weight,), eps=1e-6, atol=1e-4)


def test_the_reference_and_torch_agree_on_gradients_too():
    torch.manual_seed(4)
    y = torch.randn(1, 4, 6, 6, requires_grad=True)
    weight = torch.randn(4, 2, 3, 3, requires_grad=True)
    ours = conv_transpose2d(y, weight, stride=2, padding=1, output_padding=1)
    (ours * ours).sum().backward()
    grads = y.grad.clone(), weight.grad.clone()
    y.grad = weight.grad = None
    theirs = F.conv_transpose2d(y, weight, stride=2, padding=1, output_padding=1)
    (theirs * theirs).sum().backward()
    assert torch.allclose(grads[0], y.grad, atol=1e-4)
    assert torch.allclose(grads[1], weight.grad, atol=1e-4)
