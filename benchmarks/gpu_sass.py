"""Instruction and emulated-integer-division counts of every CUDA kernel, from its SASS.

    python benchmarks/gpu_sass.py [--arch sm_90]

Compiles every instantiation of softpool_nd/gpu/softpool.cu with ``nvcc -cubin``
and disassembles it with ``cuobjdump -sass`` (which needs ``nvdisasm``; both
come with a CUDA toolkit or the nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm
wheels). GPUs have no integer divide instruction: each ``/`` or ``%`` by a
run-time value becomes ~25 instructions starting with a reciprocal
approximation, ``I2F.RP``/``I2F.U32.RP`` (32-bit) or ``I2F.U64.RP`` (64-bit),
which is what is counted as one division. No GPU is needed.

    python benchmarks/gpu_sass.py --loops [--match 'float, float, int']

prints, instead, each kernel's innermost loops (a backward branch's range with
no loop inside): instructions, global loads (LDG), stores (STG) and special
function calls (MUFU: exp, log, reciprocal) per iteration. nvcc unrolls the
window walks, so a loop with n LDG of x covers about n cells: the hot path's
cost per cell is a loop's size over its loads. These are static sizes of loop
bodies (both sides of every branch), not executed counts.

    python benchmarks/gpu_sass.py --sass --match 'softpool_forward<float, float, int, 2>'

prints the SASS itself, to count the instructions along one path by hand (a
decode row: from the loop head to the back branch, skipping the branches
that path does not take).
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


def _sass(cubin_path):
    env = dict(os.environ)
    nvdisasm = tool("nvdisasm")
    if nvdisasm:
        env["PATH"] = str(Path(nvdisasm).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run(
        [tool("cuobjdump"), "-sass", str(cubin_path)], check=True, capture_output=True, text=True, env=env
    ).stdout


def _demangle(mangled):
    names = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True, check=True)
    return [n.split("(")[0].removeprefix("void ") for n in names.stdout.splitlines()]


def counts(cubin_path):
    """{demangled kernel: (instructions, divisions)} from ``cuobjdump -sass``."""
    parts = re.split(r"^\s*Function : (\S+)\s*$", _sass(cubin_path), flags=re.M)
    result = {}
    for name, body in zip(_demangle(parts[1::2]), parts[2::2]):
        instructions = [i for i in _INSTRUCTION.findall(body) if not i.startswith("NOP")]
        result[name] = (len(instructions), sum(bool(_DIVISION.search(i)) for i in instructions))
    return result


_BRANCH = re.compile(r"\bBRA (?:`\(.*?\) )?0x([0-9a-f]+)")
_ADDRESSED = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(\S.*?);", re.M)


def loops(cubin_path):
    """{demangled kernel: [(instructions, LDG, STG, MUFU) of each innermost loop, in address order]}."""
    sass = _sass(cubin_path)
    parts = re.split(r"^\s*Function : (\S+)\s*$", sass, flags=re.M)
    result = {}
    for name, body in zip(_demangle(parts[1::2]), parts[2::2]):
        code = [(int(a, 16), t) for a, t in _ADDRESSED.findall(body) if not t.startswith("NOP")]
        spans = []
        for at, text in code:
            m = _BRANCH.search(text)
            if m and int(m.group(1), 16) < at:
                spans.append((int(m.group(1), 16), at))
        inner = [s for s in spans if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in spans)]
        rows = []
        for lo, hi in sorted(inner):
            loop = [t for a, t in code if lo <= a <= hi]
            rows.append((len(loop),) + tuple(sum(op in t for t in loop) for op in ("LDG", "STG", "MUFU")))
        result[name] = rows
    return result


def main(argv=None):
    from softpool_nd.gpu.launch import instantiations

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--loops", action="store_true", help="innermost loop sizes instead of totals")
    parser.add_argument("--match", default="", help="only the instantiations whose name contains this")
    parser.add_argument("--sass", action="store_true", help="print the matched kernels' SASS (to read paths by hand)")
    args = parser.parse_args(argv)
    missing = [t for t in ("nvcc", "cuobjdump", "nvdisasm") if tool(t) is None]
    if missing:
        print(
            f"missing CUDA tools: {', '.join(missing)} (a CUDA toolkit, or pip install nvidia-cuda-cuobjdump "
            f"nvidia-cuda-nvdisasm)"
        )
        return 2
    names = [n for n in instantiations(True) if args.match in n]
    if args.sass:
        with tempfile.TemporaryDirectory() as tmp:
            print(_sass(cubin(names, args.arch, tmp)))
        return 0
    if args.loops:
        with tempfile.TemporaryDirectory() as tmp:
            table = loops(cubin(names, args.arch, tmp))
        for name, rows in table.items():
            print(f"{name} ({args.arch}): innermost loops as instructions/LDG/STG/MUFU")
            print("    " + "  ".join(f"{n}/{ld}/{st}/{mu}" for n, ld, st, mu in rows))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        table = counts(cubin(names, args.arch, tmp))
    width = max(map(len, table))
    print(f"{'kernel (' + args.arch + ')':{width}} {'instructions':>12} {'divisions':>9}")
    for name, (n, d) in table.items():
        print(f"{name:{width}} {n:>12} {d:>9}")
    print(f"{'total':{width}} {sum(n for n, _ in table.values()):>12} {sum(d for _, d in table.values()):>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
