"""Static SASS check of the hot CUDA kernels: nvcc -cubin for sm_90, then cuobjdump -sass.

Counts emulated integer divisions (``I2F*.RP`` reciprocal sequences, ~25
instructions each) per kernel with benchmarks/gpu_sass.py. The goal of issue
15 is zero; the kernels do not reach it yet, so this test holds the hot
kernels to the counts measured on 2026-12-02 (a ceiling: a change that adds
division sites fails) and checks that the counter sees them. Skipped, with the
reason, where nvcc, cuobjdump or nvdisasm is missing (.ci/run installs the
last two from their wheels).
"""
import importlib.util
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_sass.py"
_spec = importlib.util.spec_from_file_location("gpu_sass_script", _SCRIPT)
gpu_sass = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_sass)

_MISSING = [t for t in ("nvcc", "cuobjdump", "nvdisasm") if gpu_sass.tool(t) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"CUDA tools not found: {', '.join(_MISSING)}")

# hot kernels (2-D pooling, 32-bit indices) -> most division sites allowed (measured: nvcc 13.0, sm_90)
CEILING = {
    "softpool_forward<float, float, int, 2>": 9,
    "softpool_forward<__half, float, int, 2>": 9,
    "softpool_backward<float, float, int, true, 2>": 7,
    "softpool_backward<__half, float, int, true, 2>": 7,
    "softpool_backward<float, float, int, false, 1>": 10,
    "softpool_backward<__half, float, int, false, 1>": 9,
}


def test_gpu_sass_division_sites_do_not_grow(tmp_path):
    table = gpu_sass.counts(gpu_sass.cubin(list(CEILING), "sm_90", tmp_path, bf16=False))
    assert set(table) == set(CEILING)
    for name, most in CEILING.items():
        instructions, divisions = table[name]
        assert instructions > 100, name
        assert 0 < divisions <= most, (name, divisions)  # > 0: the counter sees today's divisions


def test_gpu_sass_counter_on_a_known_kernel(tmp_path):
    """One 32-bit division by a run-time value is one I2F.U32.RP site (or I2F.RP); a shift is none."""
    src = tmp_path / "k.cu"
    src.write_text('extern "C" __global__ void divide(unsigned* a, unsigned b) { a[threadIdx.x] /= b; }\n'
                   'extern "C" __global__ void shift_right(unsigned* a) { a[threadIdx.x] >>= 3; }\n')
    import subprocess

    out = tmp_path / "k.cubin"
    subprocess.run([gpu_sass.tool("nvcc"), "-cubin", "-arch=sm_90", str(src), "-o", str(out)], check=True)
    table = gpu_sass.counts(out)
    assert table["divide"][1] == 1 and table["shift_right"][1] == 0
