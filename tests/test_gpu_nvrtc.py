"""softpool.cu through CuPy's own NVRTC path, as a RawModule compiles it at run time, without a GPU.

CuPy's RawModule hands its options to ``cupy._core.core.compile_with_cache``,
which prepends CuPy's include paths (``assemble_cupy_compiler_options``: CCCL,
CuPy's headers, the CUDA runtime wheel's headers, where cuda_fp16.h comes
from), adds ``-ftz=true`` and calls ``cupy.cuda.compiler.compile_using_nvrtc``,
which adds ``--device-as-default-execution-space``, ``--pch`` and the
architecture. This test takes the same route for sm_80 and sm_90. The one
step that needs a device, asking it for its architecture, is replaced by the
answer it gives on such a device (``-arch=sm_XX``, a cubin). Needs cupy and
the NVRTC wheel (``pip install softpool_nd[gpu]``), both installed by .ci/run.
"""

import io

import pytest

from softpool_nd.gpu import cuda
from softpool_nd.gpu.launch import instantiations, source

cupy = pytest.importorskip("cupy")
core = pytest.importorskip("cupy._core.core")
compiler = pytest.importorskip("cupy.cuda.compiler")


def _nvrtc_version():
    try:
        return compiler._get_nvrtc_version()
    except Exception as e:  # the NVRTC library itself is missing
        pytest.skip(f"NVRTC cannot be loaded ({type(e).__name__}: {e}); pip install nvidia-cuda-nvrtc-cu12")


@pytest.mark.parametrize("arch", ["80", "90"])
def test_gpu_nvrtc_compiles_every_instantiation_as_cupy_does(monkeypatch, arch):
    _nvrtc_version()
    monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc", lambda a=None: (f"-arch=sm_{a}", "cubin"))
    bf16 = cuda.cupy_has_bfloat16()
    names = instantiations(bf16)
    options = core.assemble_cupy_compiler_options(cuda.options(bf16)) + ("-ftz=true",)
    log = io.StringIO()
    cubin, mapping = compiler.compile_using_nvrtc(source(), options, arch=arch, name_expressions=names, log_stream=log)
    assert log.getvalue().strip() == ""  # no warnings either
    assert cubin[:4] == b"\x7fELF"  # a cubin (SASS for sm_XX), what CuPy loads
    assert set(mapping) == set(names) and all(mapping[n] for n in names)
    assert len(names) == (120 if bf16 else 90)
