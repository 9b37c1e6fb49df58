"""Instruction and emulated-integer-division counts of every CUDA kernel, from its SASS.

    python benchmarks/gpu_sass.py [--arch sm_90]

Compiles every instantiation of softpool_nd/gpu/softpool.cu with ``nvcc -cubin``
and disassembles it with ``cuobjdump -sass`` (which needs ``nvdisasm``; both
come with a CUDA toolkit or the nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm
wheels). GPUs have no integer divide instruction: each ``/`` or ``%`` by a
run-time value becomes ~25 instructions starting with a reciprocal
approximation, ``I2F.RP``/``I2F.U32.RP`` (32-bit) or ``I2F.U64.RP`` (64-bit),
which is what is counted as one division. No GPU is needed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_DIVISION = re.compile(r"\bI2F(?:\.[A-Z0-9]+)*\.RP\b")
_INSTRUCTION = re.compile(r"^\s+/\*[0-9a-f]{4,}\*/\s+(\S.*?);", re.M)


def tool(name):
    """Path of a CUDA tool: PATH, $CUDA_HOME/bin, /usr/local/cuda/bin or an nvidia-* wheel; None if absent."""
    found = shutil.which(name)
    if found:
        return found
    candidates = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / name]
    try:
        import nvidia

        for base in nvidia.__path__:
            candidates += sorted(Path(base).glob(f"*/bin/{name}"))
    except ImportError:
        pass
    return next((str(c) for c in candidates if c.exists()), None)


def cubin(names, arch, out_dir, bf16=True):
    """Compile the instantiations ``names`` into one cubin for ``arch``; its path."""
    from softpool_nd.gpu.launch import SOURCE_DIR

    src = Path(out_dir) / "all.cu"
    src.write_text(
        '#include "softpool.cu"\nvoid* sp_all[] = {\n' + "".join(f"    (void*)&{n},\n" for n in names) + "};\n"
    )
    out = Path(out_dir) / "all.cubin"
    cmd = [
        tool("nvcc"),
        "-cubin",
        f"-arch={arch}",
        "-std=c++17",
        f"-DSOFTPOOL_BF16={int(bf16)}",
        "-I",
        str(SOURCE_DIR),
        str(src),
        "-o",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def counts(cubin_path):
    """{demangled kernel: (instructions, divisions)} from ``cuobjdump -sass``."""
    env = dict(os.environ)
    nvdisasm = tool("nvdisasm")
    if nvdisasm:
        env["PATH"] = str(Path(nvdisasm).parent) + os.pathsep + env.get("PATH", "")
    sass = subprocess.run(
        [tool("cuobjdump"), "-sass", str(cubin_path)], check=True, capture_output=True, text=True, env=env
    ).stdout
    parts = re.split(r"^\s*Function : (\S+)\s*$", sass, flags=re.M)
    mangled = parts[1::2]
    names = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True, check=True)
    result = {}
    for name, body in zip(names.stdout.splitlines(), parts[2::2]):
        name = name.split("(")[0].removeprefix("void ")
        instructions = [i for i in _INSTRUCTION.findall(body) if not i.startswith("NOP")]
        result[name] = (len(instructions), sum(bool(_DIVISION.search(i)) for i in instructions))
    return result


def main(argv=None):
    from softpool_nd.gpu.launch import instantiations

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    args = parser.parse_args(argv)
    missing = [t for t in ("nvcc", "cuobjdump", "nvdisasm") if tool(t) is None]
    if missing:
        print(
            f"missing CUDA tools: {', '.join(missing)} (a CUDA toolkit, or pip install nvidia-cuda-cuobjdump "
            f"nvidia-cuda-nvdisasm)"
        )
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        table = counts(cubin(instantiations(True), args.arch, tmp))
    width = max(map(len, table))
    print(f"{'kernel (' + args.arch + ')':{width}} {'instructions':>12} {'divisions':>9}")
    for name, (n, d) in table.items():
        print(f"{name:{width}} {n:>12} {d:>9}")
    print(f"{'total':{width}} {sum(n for n, _ in table.values()):>12} {sum(d for _, d in table.values()):>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
