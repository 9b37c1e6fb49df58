"""Bad arguments raise TypeError/ValueError naming the argument, its value and the input's shape."""

import numpy as np
import pytest

import softpool_nd

X = np.zeros((2, 3, 8, 8), np.float32)
SHAPE = "(2, 3, 8, 8)"

TYPE_ERRORS = [
    (dict(kernel=2.0), "kernel=2.0"),
    (dict(kernel="2"), "kernel='2'"),
    (dict(kernel=(2, 2.5)), "kernel=(2, 2.5)"),
    (dict(stride=1.5), "stride=1.5"),
    (dict(dilation=None), "dilation=None"),
    (dict(padding=1.0), "padding=1.0"),
    (dict(padding=((1, 2, 3), 0)), "padding=((1, 2, 3), 0)"),
    (dict(axes=2.0), "axes=2.0"),
    (dict(ceil_mode="yes"), "ceil_mode='yes'"),
    (dict(beta="1"), "beta='1'"),
    (dict(beta=1j), "beta=1j"),
]

VALUE_ERRORS = [
    (dict(kernel=0), "kernel=0"),
    (dict(kernel=(2, -1)), "kernel=(2, -1)"),
    (dict(stride=0), "stride=0"),
    (dict(dilation=0), "dilation=0"),
    (dict(padding=-1), "padding=-1"),
    (dict(padding=((0, -1), 0)), "padding=((0, -1), 0)"),
    (dict(padding="full"), "padding='full'"),
    (dict(axes=(2, 2)), "axes=(2, 2)"),
    (dict(axes=(2, -2)), "axes=(2, -2)"),
    (dict(axes=4), "axes=4"),
    (dict(axes=-5), "axes=-5"),
    (dict(axes=()), "axes=()"),
    (dict(kernel=(2, 2, 2), axes=(2, 3)), "kernel=(2, 2, 2)"),
    (dict(kernel=(2, 2, 2, 2, 2)), "kernel=(2, 2, 2, 2, 2)"),
    (dict(kernel=2, stride=(1, 1, 1)), "stride=(1, 1, 1)"),
    (dict(kernel=2, dilation=(1, 1, 1)), "dilation=(1, 1, 1)"),
    (dict(kernel=2, padding=(1, 1, 1)), "padding=(1, 1, 1)"),
    (dict(kernel=9), "kernel=9"),
    (dict(kernel=3, dilation=4), "kernel=3"),
    (dict(kernel=2, padding=2), "padding=2"),
    (dict(kernel=2, padding=((0, 2), 0)), "padding=((0, 2), 0)"),
    (dict(beta=float("inf")), "beta=inf"),
    (dict(beta=float("nan")), "beta=nan"),
]


@pytest.mark.parametrize("kw, named", TYPE_ERRORS)
def test_type_errors(kw, named):
    with pytest.raises(TypeError) as err:
        softpool_nd.pool(X, **kw)
    assert named in str(err.value) and SHAPE in str(err.value)


@pytest.mark.parametrize("kw, named", VALUE_ERRORS)
def test_value_errors(kw, named):
    for fn in (softpool_nd.pool, softpool_nd.forward):
        with pytest.raises(ValueError) as err:
            fn(X, **kw)
        assert named in str(err.value) and SHAPE in str(err.value)


@pytest.mark.parametrize("bad", [[1.0, 2.0, 3.0], 3.0, None, "abc"])
def test_non_array_input_is_a_type_error(bad):
    with pytest.raises(TypeError, match="not an array"):
        softpool_nd.pool(bad)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, object, "datetime64[s]", "U3"])
def test_unsupported_dtypes(dtype):
    with pytest.raises(TypeError, match=r"dtype .*input shape \(4, 4\)"):
        softpool_nd.pool(np.zeros((4, 4), dtype=dtype))


def test_zero_dimensional_input():
    with pytest.raises(ValueError, match=r"0-d.*input shape \(\)"):
        softpool_nd.pool(np.float64(3.0).reshape(()))


def test_out_checks():
    with pytest.raises(ValueError, match=r"out has shape \(2, 3, 4, 5\).*input shape \(2, 3, 8, 8\)"):
        softpool_nd.pool(X, 2, out=np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="dtype float64"):
        softpool_nd.pool(X, 2, out=np.zeros((2, 3, 4, 4), np.float64))
    ro = np.zeros((2, 3, 4, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        softpool_nd.pool(X, 2, out=ro)
    with pytest.raises(TypeError, match="out"):
        softpool_nd.pool(X, 2, out=[0.0])


def test_backward_argument_checks():
    gy = np.ones((2, 3, 4, 4), np.float32)
    with pytest.raises(
        ValueError, match=r"grad_y has shape \(2, 3, 4, 3\).*\(2, 3, 4, 4\).*input shape \(2, 3, 8, 8\)"
    ):
        softpool_nd.backward(np.ones((2, 3, 4, 3), np.float32), X, 2)
    with pytest.raises(ValueError, match=r"lse has shape"):
        softpool_nd.backward(gy, X, 2, y=gy, lse=np.ones((1,), np.float32))
    with pytest.raises(ValueError, match="gradient='true'"):
        softpool_nd.backward(gy, X, 2, gradient="true")
    with pytest.raises(TypeError, match="grad_y"):
        softpool_nd.backward([1.0], X, 2)
    with pytest.raises(TypeError, match="grad_y has dtype complex128"):
        softpool_nd.backward(gy.astype(np.complex128), X, 2)


def test_output_shape_checks_like_pool():
    with pytest.raises(ValueError, match=r"kernel=0.*input shape \(5,\)"):
        softpool_nd.output_shape((5,), 0)
    with pytest.raises(ValueError, match="0-d"):
        softpool_nd.output_shape((), 2)
