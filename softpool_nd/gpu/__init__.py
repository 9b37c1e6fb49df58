"""GPU backend: CUDA kernels (softpool.cu) launched through CuPy, with a host emulation for tests.

Modules: ``softpool.cu`` (the kernels), ``host_shim.h`` (CUDA names for g++),
``launch`` (instantiations, argument packing, grids), ``cuda`` (CuPy launcher),
``host`` (g++/ctypes launcher), ``backend`` (memory layout and the backend
interface) and ``check`` (the correctness and bandwidth report for a GPU).
"""
