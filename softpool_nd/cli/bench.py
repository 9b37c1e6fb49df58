"""``softpool-nd bench``: run the CPU comparison and, where a GPU is present, the GPU one.

The benchmarks themselves live in ``softpool_nd.bench`` (CPU) and
``softpool_nd.gpu.check`` (GPU); each ``run(quick)`` prints its table and
returns it. They are imported only here, so a build without them still offers
every other command.
"""

import importlib

from ._errors import CLIError
from ._gpu import cuda_devices

__all__ = ["run"]


def _load(module, what):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise CLIError(f"this installation of softpool_nd has no {what} ({module} is missing)") from None
        raise CLIError(f"the {what} needs '{exc.name}', which is not installed ({module}: {exc})") from None


def run(quick=False, out=print):
    """Run every benchmark that applies here; ``out`` receives the status lines.

    The GPU check runs even when the CPU benchmark is missing, so that one
    missing piece does not hide the other; the missing one still fails the command.

    Returns
    -------
    int
        0 when every benchmark that applies here ran and the GPU check marked no row FAIL.

    Raises
    ------
    CLIError
        When the CPU benchmark module, or the GPU one on a machine with a GPU, is missing.
    """
    missing = []
    try:
        cpu = _load("softpool_nd.bench", "CPU benchmark")
        cpu.use_passive_wait_policy()  # this command's own process: before torch loads
        cpu.run(quick=quick)
    except CLIError as exc:
        missing.append(str(exc))
    devices, reason = cuda_devices()
    status = 0
    if not devices:
        out(f"GPU comparison skipped: {reason}.")
    else:
        out(f"GPU: {devices[0][0]}")
        try:
            report = _load("softpool_nd.gpu.check", "GPU benchmark").run(quick=quick)
        except CLIError as exc:
            missing.append(str(exc))
        else:
            if "FAIL" in report:
                out("GPU check: rows marked FAIL missed a correctness tolerance or a speed target.")
                status = 1
    if missing:
        raise CLIError("; ".join(missing))
    return status
