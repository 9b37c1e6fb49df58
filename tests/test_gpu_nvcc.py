"""softpool.cu through a real CUDA compiler: nvcc -ptx for every instantiation.

The host emulation cannot see CUDA-only mistakes (half intrinsics,
qualifiers, device overloads); nvcc can, without a GPU. Skipped, with the
reason, only where nvcc is not installed.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from softpool_nd.gpu.launch import SOURCE_DIR, instantiations


def _nvcc():
    for cand in (shutil.which("nvcc"), os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if cand and os.path.exists(cand):
            return cand
    return None


NVCC = _nvcc()
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH, in $CUDA_HOME/bin or /usr/local/cuda/bin")


@pytest.mark.parametrize("arch,bf16", [("sm_80", True), ("sm_90", True), ("sm_80", False)])
def test_gpu_nvcc_ptx_every_instantiation(tmp_path, arch, bf16):
    names = instantiations(bf16)
    # Taking each kernel's address instantiates it, from the same name expressions CuPy gets.
    unit = '#include "softpool.cu"\nvoid* sp_all[] = {\n' + "".join(f"    (void*)&{n},\n" for n in names) + "};\n"
    src = Path(tmp_path) / "all.cu"
    src.write_text(unit)
    ptx = Path(tmp_path) / "all.ptx"
    cmd = [
        NVCC,
        "-ptx",
        f"-arch={arch}",
        "-std=c++17",
        f"-DSOFTPOOL_BF16={int(bf16)}",
        "-Werror",
        "all-warnings",
        "-I",
        str(SOURCE_DIR),
        str(src),
        "-o",
        str(ptx),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = ptx.read_text()
    entries = re.findall(r"^\.visible \.entry (\w+)\(", text, flags=re.M)
    assert len(entries) == len(names) == (120 if bf16 else 90)
    assert f".target {arch}" in text
    # the kernels emitted are exactly the name expressions CuPy asks for
    demangled = subprocess.run(["c++filt"], input="\n".join(entries), capture_output=True, text=True, check=True)
    emitted = {line.split("(")[0].removeprefix("void ") for line in demangled.stdout.splitlines()}
    assert emitted == set(names)


def test_gpu_nvcc_hot_kernels_keep_counters_in_registers(tmp_path):
    """The 2-D pooling kernels use no local memory (stack frame) and few registers on sm_90.

    Window counters indexed at run time would be placed in local memory; the
    fixed-capacity Slots/Walk design exists to avoid that.
    """
    names = [n for n in instantiations(False) if "long long" not in n and ", 2>" in n]
    names = [n for n in names if "<float," in n or "<__half," in n]
    assert len(names) == 10  # forward, jvp, the three backwards; float and half
    src = Path(tmp_path) / "hot.cu"
    src.write_text(
        '#include "softpool.cu"\nvoid* sp_all[] = {\n' + "".join(f"    (void*)&{n},\n" for n in names) + "};\n"
    )
    cmd = [
        NVCC,
        "-cubin",
        "-arch=sm_90",
        "-std=c++17",
        "-DSOFTPOOL_BF16=0",
        "-Xptxas",
        "-v",
        "-I",
        str(SOURCE_DIR),
        str(src),
        "-o",
        str(Path(tmp_path) / "hot.cubin"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    frames = re.findall(r"(\d+) bytes stack frame", done.stderr)
    registers = [int(r) for r in re.findall(r"Used (\d+) registers", done.stderr)]
    assert len(frames) == len(registers) == 10
    assert set(frames) == {"0"}
    assert max(registers) <= 64  # at least half occupancy with 256-thread blocks
