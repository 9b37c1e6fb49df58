"""softpool_nd.composite in torch: soft_pool(impl='composite') against the kernels and the NumPy oracle."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import softpool_nd
import softpool_nd.composite
from softpool_nd.torch import soft_pool

from configs import random_config, tolerance
from reference import reference_backward, reference_forward

BETAS = (1.0, 2.5, -0.7, 0.0)
fmax32 = float(np.finfo(np.float32).max)
inf, nan = np.inf, np.nan


def _composite(a, beta=1.0, gradient="exact", **kw):
    return soft_pool(torch.as_tensor(a), **kw, beta=beta, gradient=gradient, impl="composite")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_configs_match_kernels_and_oracle(seed, dtype):
    """Forward and both gradients, every geometry parameter, against softpool_nd's CPU kernels and the oracle."""
    rng = np.random.default_rng(100 + seed)
    rtol, atol = tolerance(dtype)
    for _ in range(8):
        shape, kw = random_config(rng, max_cells=600)
        beta = float(rng.choice(BETAS))
        a = rng.standard_normal(shape).astype(dtype)
        x = torch.tensor(a, requires_grad=True)
        y = _composite(x, beta, **kw)
        assert y.dtype == x.dtype and tuple(y.shape) == softpool_nd.output_shape(shape, **kw)
        np.testing.assert_allclose(y.detach().numpy(), softpool_nd.pool(a, **kw, beta=beta), rtol=rtol, atol=atol)
        np.testing.assert_allclose(y.detach().numpy(), reference_forward(a, beta=beta, **kw)[0], rtol=rtol, atol=atol)
        g = rng.standard_normal(y.shape).astype(dtype)
        for gradient in ("exact", "weights"):
            yg = _composite(x, beta, gradient, **kw)
            assert torch.equal(yg, y)
            (gx,) = torch.autograd.grad(yg, x, torch.tensor(g))
            want = softpool_nd.backward(g, a, **kw, beta=beta, gradient=gradient)
            np.testing.assert_allclose(gx.numpy(), want, rtol=rtol, atol=atol, err_msg=f"{shape} {kw} {beta}")
        np.testing.assert_allclose(
            gx.numpy(), reference_backward(g, a, beta=beta, gradient="weights", **kw), rtol=rtol, atol=atol
        )


def test_half_precision_accumulates_in_float32():
    a = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.tensor(a).to(dtype)
        y = _composite(x, kernel=3, stride=2, padding=1)
        assert y.dtype == dtype
        want = softpool_nd.pool(x.float().numpy(), kernel=3, stride=2, padding=1)
        np.testing.assert_array_equal(y.float().numpy(), torch.tensor(want).to(dtype).float().numpy())


def test_integer_input_gives_float64_and_complex_is_refused():
    y = _composite(torch.arange(6), kernel=2)
    assert y.dtype == torch.float64
    np.testing.assert_allclose(y.numpy(), softpool_nd.pool(np.arange(6), 2), rtol=1e-15)
    with pytest.raises(TypeError, match="complex64"):
        _composite(torch.zeros(4, dtype=torch.complex64), kernel=2)
    with pytest.raises(ValueError, match="impl='fast'"):
        soft_pool(torch.zeros(4), 2, impl="fast")


def test_numerics_rules_examples():
    """NUMERICS.md rules 2-3: the examples, huge betas and values, overflowed x - m."""
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)
    assert _composite(f32([0, 1, -1, 0]), 1e30, kernel=2).tolist() == [1.0, 0.0]
    assert _composite(torch.tensor([1e300, 2e300], dtype=torch.float64), 1e10, kernel=2).tolist() == [2e300]
    assert _composite(f32([fmax32, -fmax32]), 0.0, kernel=2).tolist() == [0.0]
    # x - m overflows in float32 but the weights are not 0: y is finite, as in the float64 oracle
    y = _composite(f32([fmax32, -fmax32]), 1e-38, kernel=2)
    np.testing.assert_allclose(
        y.numpy(), reference_forward(np.array([fmax32, -fmax32]), beta=1e-38, kernel=2)[0], rtol=1e-5
    )


def test_non_finite_rules_match_kernels():
    cases = [
        np.array([1.0, nan, 2.0, 3.0, inf, nan]),
        np.array([inf, 5.0, -inf, 5.0, inf, inf, -inf, -inf]),
        np.array([-inf, 1.0, 2.0, 5.0, 3.0, -inf, -inf, -inf]),
        np.array([1.0, inf, -inf, -inf, inf, -inf, 2.0, 4.0]),
    ]
    for a in cases:
        for beta in (1.0, -1.0, 0.0, 3.0):
            np.testing.assert_array_equal(_composite(a, beta, kernel=2).numpy(), softpool_nd.pool(a, 2, beta=beta))
    # -inf next to finite cells: weight 0 and gradient 0, no NaN
    x = torch.tensor([[-inf, 1.0, 2.0, 5.0]], requires_grad=True)
    _composite(x, kernel=2, axes=1).sum().backward()
    np.testing.assert_array_equal(x.grad[0, :2].numpy(), [0.0, 1.0])


@pytest.mark.parametrize("beta", [1.0, -1.0, 1e-38, 1e30])
def test_huge_finite_values_stay_finite_forward_and_backward(beta):
    rng = np.random.default_rng(0)
    a = (rng.choice([-1.0, 1.0, 0.5, -0.25], size=(2, 3, 8, 8)) * fmax32 / 2).astype(np.float32)
    for kw in (dict(kernel=2), dict(kernel=3, stride=2, padding=1)):
        for gradient in ("exact", "weights"):
            x = torch.tensor(a, requires_grad=True)
            y = _composite(x, beta, gradient, **kw)
            (g,) = torch.autograd.grad(y.sum(), x)
            assert torch.isfinite(y).all() and torch.isfinite(g).all(), (kw, gradient)


def test_forward_mode_and_second_order_against_finite_differences():
    """Autograd through the decomposition: jvp, jacfwd and hessian-vector products, in float64."""
    rng = np.random.default_rng(7)
    a = torch.tensor(rng.standard_normal((1, 2, 5, 6)))
    v = torch.tensor(rng.standard_normal(a.shape))
    kw = dict(kernel=(2, 3), stride=(1, 2), padding=((1, 0), (0, 1)), dilation=(2, 1), ceil_mode=True, beta=1.7)
    f = lambda t: soft_pool(t, **kw, impl="composite")
    _, dy = torch.func.jvp(f, (a,), (v,))
    h = 1e-6
    np.testing.assert_allclose(dy.numpy(), ((f(a + h * v) - f(a - h * v)) / (2 * h)).numpy(), rtol=1e-6, atol=1e-8)
    loss = lambda t: (f(t) ** 2).sum()
    _, hvp = torch.func.jvp(torch.func.grad(loss), (a,), (v,))
    g = torch.func.grad(loss)
    np.testing.assert_allclose(hvp.numpy(), ((g(a + h * v) - g(a - h * v)) / (2 * h)).numpy(), rtol=1e-5, atol=1e-7)


def test_plan_pads_and_slices_follow_the_geometry():
    args = dict(kernel=(3,), stride=2, padding=((2, 0),), ceil_mode=True, axes=1)
    p = softpool_nd.composite.plan((3, 8), **args)
    assert p.geom.out_shape == softpool_nd.output_shape((3, 8), **args) == (3, 5)
    # windows start at -2, 0, 2, 4, 6; ceil mode's last one reaches one cell past the input, within stride - 1
    assert p.pads == ((0, 0), (2, 1))
    assert p.offsets == tuple((slice(None), slice(j, j + 9, 2)) for j in range(3))
    # the real cells per window (beta == 0 divides by them): [1, 3, 3, 3, 2]
    y = _composite(torch.ones(1, 8, dtype=torch.float64), 0.0, **args)
    np.testing.assert_array_equal(y.numpy(), [[1.0] * 5])
    y = _composite(torch.arange(8.0).reshape(1, 8), 0.0, **args)
    np.testing.assert_allclose(y.numpy(), [[0 / 1, 3 / 3, 9 / 3, 15 / 3, 13 / 2]], rtol=1e-7)


def test_export_with_symbolic_pooled_lengths_follows_the_input():
    """torch.export with a Dim on every pooled axis: one program, run at other lengths (random configurations).

    Checked to fail before plan() kept symbolic lengths (the lengths were specialised: export refused the Dims).
    """
    from torch.export import Dim

    class Pool(torch.nn.Module):
        def __init__(self, **kw):
            super().__init__()
            self.kw = kw

        def forward(self, t):
            return soft_pool(t, **self.kw, impl="composite")

    rng = np.random.default_rng(23)
    for case in range(4):
        dims, kw = {}, {}
        # padding always, dilation in half of them; torch specialises lengths 0 and 1 (in the input or the
        # output), and 'same' is symbolic from L >= dilation on
        while not dims or "padding" not in kw or ("dilation" in kw) != case % 2:
            shape, kw = random_config(rng, max_rank=3, max_cells=300)
            geom = softpool_nd.make_geometry(shape, **kw)
            dims = {
                a: Dim(f"n{case}_{a}", min=shape[a], max=64)
                for i, a in enumerate(geom.axes)
                if shape[a] >= max(2, geom.dilation[i]) and geom.out_shape[a] >= 2
            }
        beta = float(rng.choice(BETAS))

        program = torch.export.export(
            Pool(**kw, beta=beta), (torch.tensor(rng.standard_normal(shape)),), dynamic_shapes=(dims,)
        )
        for grow in (1, 2):  # with the example's length, every residue modulo a stride up to 3
            bigger = tuple(n + grow * (a in dims) for a, n in enumerate(shape))
            a = rng.standard_normal(bigger)
            np.testing.assert_allclose(
                program.module()(torch.tensor(a)).numpy(),
                softpool_nd.pool(a, **kw, beta=beta),
                rtol=1e-12,
                atol=1e-12,
                err_msg=f"{shape} {kw} {beta} at {bigger}",
            )
