"""softpool_nd.torch: the reference names, autograd, torch.compile and mixed precision."""

import contextlib
import itertools
import re
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import softpool_nd
import softpool_nd.torch as spt

from reference import windows

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
        torch.ops.softpool_nd.forward.default,
        (x, *params),
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
        torch.nn.Conv2d(1, 4, 3, padding=1),
        spt.SoftPool2d(2),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 2),
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


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 3e-2), (torch.float16, 3e-3), (torch.float32, 1e-5)])
def test_forward_mode_in_low_precision_keeps_dtype_and_layout(dtype, tol):
    x = _x((2, 3, 9, 8), dtype).to(memory_format=torch.channels_last)
    v = _x(x.shape, dtype, seed=1)

    def f(a):
        return spt.soft_pool(a, 3, 2, 1, beta=1.3)

    _, dy = torch.func.jvp(f, (x,), (v,))
    _, want = torch.func.jvp(f, (x.double(),), (v.double(),))
    assert dy.dtype == dtype and dy.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(dy.double(), want, rtol=tol, atol=tol)


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


def _central_jvp(f, x, v, h=1e-6):
    return (f(x + h * v) - f(x - h * v)) / (2 * h)


@pytest.mark.parametrize("kw", CONFIGS)
def test_forward_mode_is_the_derivative(kw):
    # on the old code torch.func.jvp gave a zero tangent and forward_ad a None tangent
    x, v = _x((1, 2, 5, 6)), _x((1, 2, 5, 6), seed=1)

    def f(a):
        return spt.soft_pool(a, **kw)

    want = _central_jvp(f, x, v)
    y, dy = torch.func.jvp(f, (x,), (v,))
    torch.testing.assert_close(y, f(x), rtol=0, atol=0)
    torch.testing.assert_close(dy, want, rtol=1e-6, atol=1e-8)
    with torch.autograd.forward_ad.dual_level():
        tangent = torch.autograd.forward_ad.unpack_dual(f(torch.autograd.forward_ad.make_dual(x, v))).tangent
    assert tangent is not None
    torch.testing.assert_close(tangent, dy, rtol=0, atol=0)
    # the tangent is softpool_nd.jvp's
    core = softpool_nd.jvp(x.numpy(), v.numpy(), **kw)
    np.testing.assert_array_equal(dy.numpy(), core)


def test_forward_mode_refuses_the_weights_rule():
    x, v = _x((1, 1, 4, 4)), _x((1, 1, 4, 4), seed=1)
    with pytest.raises(RuntimeError, match="forward-mode AD computes the exact derivative.*gradient='weights'"):
        torch.func.jvp(lambda a: spt.soft_pool2d(a, 2, gradient="weights"), (x,), (v,))


def test_gradcheck_reverse_forward_and_batched_modes():
    x = _x((1, 2, 5, 4), requires_grad=True)
    fn = lambda t: spt.soft_pool2d(t, 3, 2, padding=1, beta=1.5)
    assert torch.autograd.gradcheck(
        fn,
        (x,),
        check_forward_ad=True,
        check_batched_grad=True,
        check_batched_forward_grad=True,
    )


def test_torch_func_transforms_agree_with_the_reference_formula():
    kw = dict(kernel=(2, 3), dilation=(2, 1), ceil_mode=True, beta=-0.5)
    x = _x((1, 2, 5, 6))
    g = _x(softpool_nd.output_shape(x.shape, **{k: v for k, v in kw.items() if k != "beta"}), seed=1)

    def loss(f):
        return lambda a: (f(a) * g).sum()

    ours = lambda a: spt.soft_pool(a, **kw)
    ref = lambda a: torch_reference(a, **kw)
    close = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.func.grad(loss(ours))(x), torch.func.grad(loss(ref))(x), **close)
    (gx,) = torch.func.vjp(ours, x)[1](g)
    torch.testing.assert_close(gx, torch.func.grad(loss(ref))(x), **close)
    jac = torch.func.jacrev(ref)(x)
    torch.testing.assert_close(torch.func.jacrev(ours)(x), jac, **close)
    torch.testing.assert_close(torch.func.jacfwd(ours)(x), jac, **close)


def test_vmap_pools_each_slice():
    xs = _x((3, 2, 4, 7, 6))
    kw = dict(kernel=3, stride=2, padding=1, beta=0.8)
    want = torch.stack([spt.soft_pool(x, **kw) for x in xs])
    torch.testing.assert_close(torch.func.vmap(lambda a: spt.soft_pool(a, **kw))(xs), want, rtol=0, atol=0)
    # another vmapped dimension, and a vmapped tangent (jacfwd's case)
    moved = torch.func.vmap(lambda a: spt.soft_pool(a, **kw), in_dims=2, out_dims=2)(xs.movedim(0, 2))
    torch.testing.assert_close(moved, want.movedim(0, 2), rtol=0, atol=0)
    vs = _x(xs.shape, seed=3)
    dys = torch.func.vmap(lambda v: torch.func.jvp(lambda a: spt.soft_pool(a, **kw), (xs[0],), (v,))[1])(vs)
    want = torch.stack([torch.func.jvp(lambda a: spt.soft_pool(a, **kw), (xs[0],), (v,))[1] for v in vs])
    # x is broadcast over the tangents (a stride-0 axis): the cells of a window are summed in another order
    torch.testing.assert_close(dys, want, rtol=1e-14, atol=1e-15)


def test_second_derivatives_raise_what_is_supported():
    x = _x((1, 1, 4, 4), requires_grad=True)
    (g,) = torch.autograd.grad(spt.soft_pool2d(x, 2).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="softpool_nd.torch supports first derivatives only.*second derivative"):
        g.sum().backward()
    with pytest.raises(RuntimeError, match="softpool_nd.torch supports first derivatives only"):
        torch.func.hessian(lambda a: spt.soft_pool2d(a, 2).sum())(x.detach())


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "no_requires_grad"])
def test_no_lse_where_no_derivative_is_needed(monkeypatch, mode):
    x = _x((1, 2, 6, 6), torch.float32, requires_grad=mode != "no_requires_grad")
    want = softpool_nd.pool(x.detach().numpy(), 2)

    def refuse(*args, **kwargs):
        raise AssertionError("forward() (with lse) called where no derivative is needed")

    monkeypatch.setattr(spt, "forward", refuse)
    ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode, contextlib.nullcontext)
    with ctx():
        y = spt.soft_pool2d(x, 2)
    np.testing.assert_array_equal(y.numpy(), want)
    assert not y.requires_grad


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_eager_cpu_calls_skip_the_operators_with_the_same_results(monkeypatch, layout, dtype):
    # eager CPU calls run the kernels on Tensor.numpy() views (issue #14: per-call cost): y, its layout, the
    # gradient (for an expanded grad_y too) and the no-grad result are the operator path's bits
    x = _x((2, 3, 10, 9), dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = x[:, :, ::2].transpose(2, 3)
    x.requires_grad_(True)

    def run(beta):
        y = spt.soft_pool2d(x, 3, 2, padding=1, beta=beta)
        (gx,) = torch.autograd.grad(y, x, torch.ones((), dtype=dtype).expand(y.shape))
        (gx2,) = torch.autograd.grad(spt.soft_pool2d(x, 3, 2, padding=1, beta=beta).square().sum(), x)
        with torch.no_grad():
            y0 = spt.soft_pool2d(x, 3, 2, padding=1, beta=beta)
        return type(y.grad_fn).__name__, y, gx, gx2, y0

    direct = {beta: run(beta) for beta in (0.7, -1.5)}  # two betas: the cached plans must not mix
    assert all(r[0] == "_EagerSoftPoolBackward" for r in direct.values())
    monkeypatch.setattr(spt, "_cpu_plan", lambda x, params: None)
    for beta, (name, *got) in direct.items():
        name_ops, *want = run(beta)
        assert name_ops != name
        for a, b in zip(got, want):
            assert a.stride() == b.stride()
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        want = softpool_nd.pool(x.detach().numpy(), 3, 2, 1, axes=(2, 3), beta=beta)
        np.testing.assert_array_equal(got[0].detach().numpy(), want)


def test_eager_cpu_no_grad_call_computes_no_lse(monkeypatch):
    from softpool_nd.cpu import backend

    calls = []
    real = backend.forward
    monkeypatch.setattr(backend, "forward", lambda *a, **k: calls.append(k.get("with_lse", True)) or real(*a, **k))
    x = _x((1, 2, 6, 6), torch.float32)
    spt.soft_pool2d(x, 2)
    spt.soft_pool2d(x.requires_grad_(True), 2)
    assert calls == [False, True]


def test_compile_dynamic_shapes_and_recompiles_at_a_new_size():
    # the old code failed at the first call with dynamic=True (and the second size without it):
    # the fake implementation hashed SymInt strides and int() specialised the sizes
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), spt.SoftPool2d(3, 2, padding=1, beta=0.7))
    for dynamic in (True, None):
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, dynamic=dynamic, backend="aot_eager")
        for shape in [(2, 2, 9, 7), (3, 2, 12, 10)]:
            x = _x(shape, torch.float32, seed=sum(shape))
            y = compiled(x)
            y.sum().backward()
            grads = [p.grad.clone() for p in model.parameters()]
            model.zero_grad()
            y_eager = model(x)
            y_eager.sum().backward()
            torch.testing.assert_close(y, y_eager, rtol=0, atol=0)
            for gc, p in zip(grads, model.parameters()):
                torch.testing.assert_close(gc, p.grad, rtol=1e-6, atol=1e-6)
            model.zero_grad()


def test_export_with_dynamic_batch_and_spatial_sizes():
    from torch.export import Dim

    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), spt.SoftPool2d(3, 2, padding=1, beta=0.7))
    dims = {0: Dim("n"), 2: Dim("h", min=4, max=64), 3: Dim("w", min=4, max=64)}
    ep = torch.export.export(model, (_x((2, 2, 16, 12), torch.float32),), dynamic_shapes=(dims,))
    module = ep.module()
    for shape in [(5, 2, 11, 9), (1, 2, 4, 30)]:
        x = _x(shape, torch.float32)
        torch.testing.assert_close(module(x), model(x), rtol=0, atol=0)


def test_opcheck_of_the_pool_and_jvp_operators():
    x = _x((1, 2, 6, 5))
    params = spt._op_params(x, 3, 2, 1, 1, True, None, 0.5, "exact")
    y, lse = softpool_nd.forward(x.numpy(), 3, 2, 1, ceil_mode=True, beta=0.5)
    y, lse = torch.from_numpy(y), torch.from_numpy(lse)
    for op, args in (
        (torch.ops.softpool_nd.pool.default, (x, *params[:-1])),
        (torch.ops.softpool_nd.jvp.default, (_x(x.shape, seed=2), x, y, lse, *params[:-1])),
    ):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


def test_cupy_stream_falls_back_to_external_stream(monkeypatch):
    made = []

    class Stream:
        @staticmethod
        def from_external(stream):
            raise TypeError("no __cuda_stream__ on this torch")

    def external_stream(ptr, device_id):
        made.append((ptr, device_id))
        return "external"

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(Stream=Stream, ExternalStream=external_stream))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    torch_stream = types.SimpleNamespace(cuda_stream=1234)
    assert spt._cupy_stream(torch_stream, 1) == "external" and made == [(1234, 1)]
    # from_external is used where it works, and ExternalStream where CuPy lacks it
    Stream.from_external = staticmethod(lambda stream: ("from_external", stream))
    assert spt._cupy_stream(torch_stream, 1) == ("from_external", torch_stream)
    del Stream.from_external
    assert spt._cupy_stream(torch_stream, 0) == "external" and made[-1] == (1234, 0)


_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch")


@pytest.mark.gpu
@_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_forward_backward_jvp_match_the_cpu(dtype, channels_last):
    x = _x((2, 3, 9, 8), dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    v, g = _x(x.shape, dtype, seed=1), _x((2, 3, 5, 4), dtype, seed=2)
    kw = dict(kernel=3, stride=2, padding=1, beta=1.3)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    xc = x.cuda().requires_grad_()
    y = spt.soft_pool(xc, **kw)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    (gx,) = torch.autograd.grad(y, xc, g.cuda())
    _, dy = torch.func.jvp(lambda a: spt.soft_pool(a, **kw), (xc.detach(),), (v.cuda(),))
    xr = x.clone().requires_grad_()
    yr = spt.soft_pool(xr, **kw)
    (gr,) = torch.autograd.grad(yr, xr, g)
    _, dyr = torch.func.jvp(lambda a: spt.soft_pool(a, **kw), (x,), (v,))
    for got, want in ((y, yr), (gx, gr), (dy, dyr)):
        torch.testing.assert_close(got.cpu().float(), want.float(), **tol)


@pytest.mark.gpu
@_cuda
def test_cuda_graph_capture_of_the_pool_path():
    x = _x((2, 3, 16, 16), torch.float32).cuda()
    with torch.no_grad():
        want = spt.soft_pool2d(x, 2)  # first call compiles and loads the module, outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = spt.soft_pool2d(x, 2)
        x.mul_(2.0)
        graph.replay()
        torch.cuda.synchronize()
    torch.testing.assert_close(y, spt.soft_pool2d(x, 2), rtol=0, atol=0)
    assert not torch.equal(y, want)


def test_cpu_tensors_need_no_stream():
    assert spt._on_torch_stream(torch.zeros(1)).__class__.__name__ == "nullcontext"


@pytest.mark.parametrize(
    "make, kw",
    [
        (lambda: _x((2, 3, 4, 6, 5), torch.float32).contiguous(memory_format=torch.channels_last_3d), dict(kernel=2)),
        (lambda: _x((1, 3, 1, 9), torch.float64).contiguous(memory_format=torch.channels_last), dict(kernel=(1, 3))),
        (lambda: _x((5, 4, 3), torch.float32).permute(2, 0, 1), dict(kernel=2, axes=(0, 2), padding=1, beta=-0.6)),
        (lambda: _x((2, 8, 7, 3), torch.float16).permute(0, 3, 1, 2), dict(kernel=3, stride=2, axes=1, beta=2.0)),
    ],
)
def test_eager_cpu_calls_on_permuted_dense_inputs_take_the_c_contiguous_view(monkeypatch, make, kw):
    # channels-last and other dense permuted inputs reach the kernels as the C-contiguous view of their memory
    # (issue #14: per-call cost); the results are the operator path's bits, in the same layout
    x = make().requires_grad_(True)
    args = [kw.get(k, d) for k, d in (("kernel", 2), ("stride", None), ("padding", 0), ("dilation", 1))]
    args += [False, kw.get("axes"), kw.get("beta", 1.0), "exact"]
    plan = spt._cpu_plan(x, spt._op_params(x, *args))
    assert plan is not None and plan.order is not None

    def run():
        y = spt.soft_pool(x, **kw)
        g = _x(y.shape, x.dtype, seed=3)
        (gx,) = torch.autograd.grad(y, x, g)
        with torch.no_grad():
            y0 = spt.soft_pool(x, **kw)
        return type(y.grad_fn).__name__, y, gx, y0

    name, *got = run()
    assert name == "_EagerSoftPoolBackward"
    monkeypatch.setattr(spt, "_cpu_plan", lambda x, params: None)
    name_ops, *want = run()
    assert name_ops != name
    for a, b in zip(got, want):
        assert a.stride() == b.stride() and a._base is None and b._base is None
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cached_operator_arguments_keep_every_check():
    # soft_pool caches checked arguments by rank and by value *and type*: 2, 2.0 and True are equal keys in a
    # dict but not equal arguments, so a cached call must not let the refused ones through
    x = _x((1, 2, 6, 6), torch.float32)
    for _ in range(2):
        assert spt.soft_pool(x, 2, axes=(2, 3)).shape == (1, 2, 3, 3)
        assert spt.soft_pool2d(x, 2).shape == (1, 2, 3, 3)
    with pytest.raises(TypeError, match="kernel"):
        spt.soft_pool(x, 2.0, axes=(2, 3))
    with pytest.raises(TypeError, match="kernel"):
        spt.soft_pool(x, True, axes=(2, 3))
    with pytest.raises(TypeError, match="axes"):
        spt.soft_pool(x, 2, axes=(2.0, 3))
    with pytest.raises(ValueError, match="axes"):
        spt.soft_pool(x[0], 2, axes=(2, 3))  # the same arguments at another rank
    with pytest.raises(TypeError, match="beta"):
        spt.soft_pool(x, 2, axes=(2, 3), beta=True)
    assert spt.soft_pool(x, [2, 2], axes=[2, 3]).shape == (1, 2, 3, 3)  # lists: keyed through _frozen
    assert spt.soft_pool(x, np.int64(2), axes=(2, 3)).shape == (1, 2, 3, 3)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("gradient", ["exact", "weights"])
def test_cpu_operator_bodies_take_the_direct_path_with_the_same_results(monkeypatch, channels_last, gradient):
    # what a torch.compile'd program calls on every step: the forward, pool and backward operators run the
    # kernels on NumPy views (no DLPack, no geometry keyed per call) and give the core API's bits
    x = _x((2, 3, 9, 8), torch.float32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    params = spt._op_params(x, 3, 2, 1, 1, True, None, -0.8, gradient)

    def run():
        y, lse = torch.ops.softpool_nd.forward(x, *params)
        grads = [_x(y.shape, torch.float32, seed=1), torch.ones((), dtype=torch.float32).expand(y.shape)]
        gxs = [torch.ops.softpool_nd.backward(g, x, y, lse, *params) for g in grads]
        return [y, lse, torch.ops.softpool_nd.pool(x, *params[:-1]), *gxs]

    def refuse(*args, **kwargs):
        raise AssertionError("the core API was called")

    with monkeypatch.context() as m:
        for name in ("forward", "pool", "backward"):
            m.setattr(spt, name, refuse)
        got = run()
    monkeypatch.setattr(spt, "_cpu_plan", lambda x, params: None)
    for a, b in zip(got, run()):
        assert a.stride() == b.stride()
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # arguments the core API must check or convert still reach it
    y, lse = torch.ops.softpool_nd.forward(x, *params)
    with pytest.raises(ValueError, match="grad_y has shape"):
        torch.ops.softpool_nd.backward(y[:, :, :-1], x, y, lse, *params)
    g64 = torch.ops.softpool_nd.backward(torch.ones(y.shape, dtype=torch.float64), x, y, lse, *params)
    assert g64.dtype == torch.float32
