"""softpool_nd.torch: the reference names, autograd, torch.compile and mixed precision."""
import itertools
import re

import numpy as np
import pytest
import torch

import softpool_nd
import softpool_nd.torch as spt
from reference import windows
from test_interop import seen  # noqa: F401 (fixture)

torch.set_num_threads(1)

CONFIGS = [
    dict(kernel=2),
    dict(kernel=3, stride=2, padding=1, beta=2.0),
    dict(kernel=(2, 3), dilation=(2, 1), ceil_mode=True, beta=-0.5),
    dict(kernel=3, stride=1, padding="same", axes=(1, 3)),
]


def _x(shape, dtype=torch.float64, seed=0, requires_grad=False):
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).to(dtype)
    return x.requires_grad_(requires_grad)


def torch_reference(x, beta=1.0, gradient="exact", **kw):
    """SoftPool written with differentiable torch ops, window by window, on the oracle's windows.

    With ``gradient='weights'`` the softmax weights are constants to autograd.
    """
    axes, out_shape, cells = windows(tuple(x.shape), **kw)
    front = list(range(x.dim() - len(axes), x.dim()))
    xt = torch.movedim(x, axes, front)
    lead = xt.shape[: x.dim() - len(axes)]
    ys = []
    for o in itertools.product(*(range(out_shape[a]) for a in axes)):
        ix = np.ix_(*(cells[i][oi] for i, oi in enumerate(o)))
        win = xt[(Ellipsis,) + tuple(torch.from_numpy(i) for i in ix)].reshape(*lead, -1)
        w = torch.softmax(beta * win, dim=-1)
        ys.append(((w.detach() if gradient == "weights" else w) * win).sum(-1))
    y = torch.stack(ys, -1).reshape(*lead, *(out_shape[a] for a in axes))
    return torch.movedim(y, front, axes)


@pytest.mark.parametrize("kw", CONFIGS)
def test_output_equals_numpy_path(kw):
    x = _x((2, 3, 7, 6), torch.float32)
    y = spt.soft_pool(x, **kw)
    np.testing.assert_array_equal(y.numpy(), softpool_nd.pool(x.numpy(), **kw))


@pytest.mark.parametrize("kw", CONFIGS)
@pytest.mark.parametrize("gradient", ["exact", "weights"])
def test_gradient_equals_autograd_of_reference_formula(kw, gradient):
    x = _x((1, 2, 5, 6), requires_grad=True)
    g = _x(softpool_nd.output_shape(x.shape, **{k: v for k, v in kw.items() if k != "beta"}), seed=1)
    (got,) = torch.autograd.grad(spt.soft_pool(x, gradient=gradient, **kw), x, g)
    (want,) = torch.autograd.grad(torch_reference(x, gradient=gradient, **kw), x, g)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_tensors_reach_the_kernels_and_come_back_without_copies(seen):
    x = _x((2, 3, 6, 6), torch.float32, requires_grad=True)
    y = spt.soft_pool2d(x, 2)
    assert seen["x"].ctypes.data == x.data_ptr() and y.data_ptr() == seen["y"].ctypes.data
    y.backward(torch.ones_like(y))
    assert x.grad.data_ptr() == seen["grad_x"].ctypes.data


def test_gradcheck_float64():
    x = _x((1, 2, 5, 4), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: spt.soft_pool2d(t, 3, 2, padding=1, beta=1.5), (x,))


def test_opcheck_schema_fake_and_autograd_registration():
    x = _x((1, 2, 6, 5), requires_grad=True)
    params = spt._op_params(x, 3, 2, 1, 1, True, None, 0.5, "exact")
    torch.library.opcheck(
        torch.ops.softpool_nd.forward.default, (x, *params),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


@pytest.mark.parametrize("n", [1, 2, 3])
def test_reference_names_pool_the_spatial_axes_batched_or_not(n):
    fn, module = getattr(spt, f"soft_pool{n}d"), getattr(spt, f"SoftPool{n}d")
    x = _x((2, 3) + (4,) * n, torch.float32)
    want = softpool_nd.pool(x.numpy(), kernel=(2,) * n)
    np.testing.assert_array_equal(fn(x).numpy(), want)
    # positional arguments of the reference implementation: kernel_size, stride, force_inplace
    np.testing.assert_array_equal(module(2, 2, True)(x).numpy(), want)
    np.testing.assert_array_equal(fn(x[0]).numpy(), want[0])
    bad = x.new_zeros(4) if n > 1 else x.new_zeros(1, 1, 1, 4)
    with pytest.raises(ValueError, match=rf"soft_pool{n}d takes .* got shape {re.escape(str(tuple(bad.shape)))}"):
        fn(bad)


def test_soft_pool_nd_module_and_layout():
    x = _x((2, 8, 6, 3), torch.float32).permute(0, 3, 1, 2)  # channels-last memory
    m = spt.SoftPoolNd(kernel=(2, 3), stride=(2, 1), beta=0.5)
    y = m(x)
    np.testing.assert_array_equal(y.numpy(), softpool_nd.pool(x.numpy(), (2, 3), (2, 1), beta=0.5))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert "beta=0.5" in repr(m)


def test_bad_arguments_name_themselves():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="gradient='fast'"):
        spt.soft_pool(x, gradient="fast")
    with pytest.raises(ValueError, match=r"kernel=\(5, 5\).*input shape \(1, 1, 4, 4\)"):
        spt.soft_pool2d(x, 5)


def test_small_cnn_trains():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    target = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), spt.SoftPool2d(2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(64, 2),
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0], losses


def test_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), spt.SoftPool2d(3, 2, padding=1, beta=0.7))
    x = _x((2, 2, 7, 7), torch.float32)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    y.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    y_eager = model(x)
    y_eager.square().sum().backward()
    torch.testing.assert_close(y, y_eager, rtol=0, atol=0)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=0, atol=0)


def test_bfloat16_and_float16_keep_their_dtype():
    for dtype in (torch.bfloat16, torch.float16):
        x = _x((1, 2, 6, 6), dtype, requires_grad=True)
        y = spt.soft_pool2d(x, 2)
        assert y.dtype == dtype
        want = softpool_nd.pool(x.detach().float().numpy(), 2)
        torch.testing.assert_close(y.float(), torch.from_numpy(want).to(dtype).float(), rtol=0, atol=0)
        y.sum().backward()
        assert x.grad.dtype == dtype
        want = softpool_nd.backward(np.ones((1, 2, 3, 3), np.float32), x.detach().float().numpy(), 2)
        torch.testing.assert_close(x.grad.float(), torch.from_numpy(want), rtol=1e-2, atol=1e-2)


def test_autocast_bfloat16():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        y = spt.SoftPool2d(2)(h)
    assert h.dtype == y.dtype == torch.bfloat16
    want = softpool_nd.pool(h.detach().float().numpy(), 2)
    torch.testing.assert_close(y.float(), torch.from_numpy(want).bfloat16().float(), rtol=0, atol=0)
    y.float().sum().backward()
    assert conv.weight.grad.dtype == torch.float32 and torch.isfinite(conv.weight.grad).all()
    assert conv.weight.grad.abs().sum() > 0


def test_cpu_tensors_need_no_stream():
    assert spt._on_torch_stream(torch.zeros(1)).__class__.__name__ == "nullcontext"

