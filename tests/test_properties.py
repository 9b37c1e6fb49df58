"""Property-based checks (hypothesis): for any valid configuration the result has the promised
shape and equals the oracle; for any invalid one, a ValueError, never a crash."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import softpool_nd

from reference import reference_forward, windows


@st.composite
def configs(draw):
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank)))
    axes = tuple(sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1))))
    n = len(axes)
    per_axis = lambda lo, hi: st.tuples(*[st.integers(lo, hi)] * n)
    kw = dict(
        kernel=draw(per_axis(1, 4)),
        stride=draw(per_axis(1, 3)),
        dilation=draw(per_axis(1, 2)),
        padding=draw(
            st.one_of(
                st.just("same"), st.just("valid"), st.tuples(*[st.tuples(st.integers(0, 2), st.integers(0, 2))] * n)
            )
        ),
        ceil_mode=draw(st.booleans()),
        axes=axes,
    )
    return shape, kw


def _oracle_valid(shape, kw):
    axes, out, cells = windows(shape, **kw)
    return all(out[a] >= 1 for a in axes) and all(c for per in cells for c in per)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(configs(), st.sampled_from([1.0, 0.0, -2.0]))
def test_valid_configs_match_the_oracle_and_invalid_ones_raise(config, beta):
    shape, kw = config
    x = np.random.default_rng(0).normal(size=shape)
    if not _oracle_valid(shape, kw):
        try:
            softpool_nd.pool(x, beta=beta, **kw)
        except ValueError as err:
            assert str(shape) in str(err)
            return
        raise AssertionError(f"no ValueError for {shape} {kw}")
    y = softpool_nd.pool(x, beta=beta, **kw)
    assert y.shape == softpool_nd.output_shape(shape, **kw)
    np.testing.assert_allclose(y, reference_forward(x, beta=beta, **kw)[0], rtol=1e-12, atol=1e-12)
