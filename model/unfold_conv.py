"""Convolution written as unfold + matmul + fold: the reference the network's layers are held to
(tests/model/test_unfold_conv.py), and where three of the project's ideas live.

**Convolution is a matrix product.** `F.unfold` copies every k×k patch of the input into a
column, (N, C·kh·kw, L) for L output positions; a conv is then the weight, reshaped to
(O, C·kh·kw), times those columns, and the L results are the output grid. The transposed conv
runs the same matrix the other way: the input (N, C, H·W) times the weight reshaped to
(C, O·kh·kw) gives one column of kernel-sized contributions per input pixel, and `F.fold` adds
the overlapping ones into the output. Fold is unfold's adjoint (`fold(unfold(x))` is x times
how many patches cover each pixel), which is why ConvTranspose2d is shaped as the inverse of
Conv2d: its output size formula, (H − 1)·s − 2p + d·(k − 1) + output_padding + 1, undoes conv's,
and `output_padding` picks which of the several input sizes a strided conv maps to one output
size is wanted back.

**Autograd.** The transposed conv is exactly the vector–Jacobian product of the conv with
respect to its input, which `conv_transpose2d_by_autograd` computes by asking autograd for that
gradient; tests hold it equal to `F.conv_transpose2d` and run `torch.autograd.gradcheck` through
the ConvTranspose2d path in float64. Serving needs none of this bookkeeping, so inference runs
under `torch.inference_mode()` (app/inference.py): no graph is recorded and tensors skip the
version counters autograd keeps, which saves memory and time on every forward.

**No lazy modules.** Every layer in model/net.py states its input channels (no `nn.Lazy*`): the
parameter shapes are then known before any data is seen, so a checkpoint's state dict loads
into a freshly built network, the FLOP count and the TorchScript/ONNX exports are fixed up
front, and a wrong channel count fails at construction, not at the first request.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Pair = int | tuple[int, int]


def _pair(value: Pair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride: Pair = 1, padding: Pair = 0, dilation: Pair = 1) -> torch.Tensor:
    """`F.conv2d` (groups=1) as unfold, then matmul."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (weight.shape[-2:], _pair(stride), _pair(padding),
                                              _pair(dilation))
    n, _, h, w = x.shape
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    columns = F.unfold(x, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))
    out = weight.reshape(weight.shape[0], -1) @ columns  # (N, O, L)
    if bias is not None:
        out = out + bias[:, None]
    return out.reshape(n, weight.shape[0], out_h, out_w)


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     stride: Pair = 1, padding: Pair = 0, output_padding: Pair = 0,
                     dilation: Pair = 1) -> torch.Tensor:
    """`F.conv_transpose2d` (groups=1) as matmul, then fold. `weight` is (C_in, C_out, kh, kw),
    as ConvTranspose2d stores it."""
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[-2:], _pair(stride), _pair(padding)
    (oph, opw), (dh, dw) = _pair(output_padding), _pair(dilation)
    n, c_in, h, w = x.shape
    out_h = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    out_w = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    columns = weight.reshape(c_in, -1).T @ x.reshape(n, c_in, h * w)  # (N, O·kh·kw, H·W)
    # Fold onto the whole canvas the kernels reach, then crop `padding` from each side, less
    # `output_padding` at the bottom and right (zeros where the kernels never reach).
    full = F.fold(columns, ((h - 1) * sh + dh * (kh - 1) + 1, (w - 1) * sw + dw * (kw - 1) + 1),
                  (kh, kw), dilation=(dh, dw), stride=(sh, sw))
    full = F.pad(full, (0, max(opw - pw, 0), 0, max(oph - ph, 0)))
    out = full[..., ph:ph + out_h, pw:pw + out_w]
    if bias is not None:
        out = out + bias[:, None, None]
    return out


def conv_transpose2d_by_autograd(y: torch.Tensor, weight: torch.Tensor,
                                 input_size: tuple[int, int], stride: Pair = 1,
                                 padding: Pair = 0, dilation: Pair = 1) -> torch.Tensor:
    """The transposed conv of `y` as the gradient of conv2d(x, weight) at the x of
    `input_size`, in the direction `y`: what autograd's backward of a conv computes."""
    # The transposed conv's weight (C_in, C_out, kh, kw), read as a conv's (out, in, kh, kw),
    # is the conv from C_out channels back to C_in that this one is the adjoint of.
    x = torch.zeros(y.shape[0], weight.shape[1], *input_size, dtype=y.dtype,
                    requires_grad=True)
    out = F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation)
    (grad,) = torch.autograd.grad(out, x, grad_outputs=y)
    return grad
