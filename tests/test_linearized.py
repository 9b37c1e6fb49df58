"""backward and jvp share one preamble (softpool_nd._api._linearized): what each sees of it."""

import pytest

import softpool_nd


def test_jvp_names_a_tangent_that_requires_grad():
    # jvp passed no argument names to the DLPack layer, so its message said "an array"; backward said "grad_y"
    torch = pytest.importorskip("torch")
    x = torch.ones(1, 1, 4, 4)
    with pytest.raises(TypeError, match="dx is a torch.Tensor that requires grad"):
        softpool_nd.jvp(x, torch.ones(1, 1, 4, 4, requires_grad=True), 2)
    with pytest.raises(TypeError, match="out is a torch.Tensor that requires grad"):
        softpool_nd.jvp(x, torch.ones(1, 1, 4, 4), 2, out=torch.ones(1, 1, 2, 2, requires_grad=True))
