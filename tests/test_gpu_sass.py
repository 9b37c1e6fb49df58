"""Static SASS check of the hot CUDA kernels: nvcc -cubin for sm_90, then cuobjdump -sass.

Counts emulated integer divisions (``I2F*.RP`` reciprocal sequences, ~25
instructions each) per kernel with benchmarks/gpu_sass.py. There must be none
in any instantiation: every divisor comes with a magic number from launch.py.
Skipped, with the reason, where nvcc, cuobjdump or nvdisasm is missing
(.ci/run installs the last two from their wheels).
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


def test_gpu_sass_no_integer_division_in_any_kernel(tmp_path):
    from softpool_nd.gpu.launch import instantiations

    names = instantiations(True)
    table = gpu_sass.counts(gpu_sass.cubin(names, "sm_90", tmp_path, bf16=True))
    assert set(table) == set(names)
    assert all(n > 100 for n, _ in table.values())
    assert {name: d for name, (_, d) in table.items() if d} == {}


def test_gpu_sass_counter_on_a_known_kernel(tmp_path):
    """One 32-bit division by a run-time value is one I2F.U32.RP site (or I2F.RP); a shift is none."""
    src = tmp_path / "k.cu"
    src.write_text(
        'extern "C" __global__ void divide(unsigned* a, unsigned b) { a[threadIdx.x] /= b; }\n'
        'extern "C" __global__ void shift_right(unsigned* a) { a[threadIdx.x] >>= 3; }\n'
    )
    import subprocess

    out = tmp_path / "k.cubin"
    subprocess.run([gpu_sass.tool("nvcc"), "-cubin", "-arch=sm_90", str(src), "-o", str(out)], check=True)
    table = gpu_sass.counts(out)
    assert table["divide"][1] == 1 and table["shift_right"][1] == 0
