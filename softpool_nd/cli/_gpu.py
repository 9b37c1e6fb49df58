"""Which CUDA devices CuPy sees, without failing where there is no GPU or no CuPy."""

__all__ = ["cuda_devices"]


def cuda_devices():
    """``(devices, reason)``: a list of ``(name, total_bytes)`` and, when empty, why.

    CuPy raises on machines without a driver or a device (and on a driver older
    than its runtime), so every probe is guarded and the message kept for the user.
    """
    try:
        import cupy
    except ImportError:
        return [], "CuPy is not installed (pip install 'softpool_nd[gpu]')"
    except Exception as exc:  # a broken CUDA install fails inside cupy's import
        return [], f"CuPy failed to import: {type(exc).__name__}: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        devices = []
        for i in range(count):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            name = props["name"]
            devices.append((name.decode() if isinstance(name, bytes) else str(name), int(props["totalGlobalMem"])))
    except Exception as exc:
        return [], f"no usable CUDA device: {type(exc).__name__}: {exc}"
    return devices, None if devices else "CuPy sees no CUDA device"
