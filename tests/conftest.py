"""Fixtures shared by several test modules (pytest finds them here; tests import no other test module)."""

import pytest


@pytest.fixture
def seen(monkeypatch):
    """Record the arrays the CPU backend receives and returns."""
    from softpool_nd.cpu import backend as cpu_backend

    log = {}
    forward, backward = cpu_backend.forward, cpu_backend.backward

    def spy_forward(x, *args, **kwargs):
        log["x"] = x
        log["y"], log["lse"] = forward(x, *args, **kwargs)
        return log["y"], log["lse"]

    def spy_backward(grad_y, x, *args, **kwargs):
        log["grad_y"], log["x"] = grad_y, x
        log["grad_x"] = backward(grad_y, x, *args, **kwargs)
        return log["grad_x"]

    monkeypatch.setattr(cpu_backend, "forward", spy_forward)
    monkeypatch.setattr(cpu_backend, "backward", spy_backward)
    return log
