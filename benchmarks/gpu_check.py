"""Correctness and bandwidth check of softpool_nd's GPU backend on a CUDA machine.

Runs the randomized comparison with the CPU backend, then times forward and
backward on large inputs against a device-to-device copy of the input and the
PyTorch formula (when torch with CUDA is installed), and prints one table::

    python benchmarks/gpu_check.py          # full run (about a minute on an H100)
    python benchmarks/gpu_check.py --quick  # smoke test: small inputs, few repetitions

Exits 1 when a row fails, 2 without a GPU; the logic lives in softpool_nd.gpu.check.
"""
import argparse
import sys

from softpool_nd.gpu import check


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs and few repetitions")
    args = parser.parse_args(argv)
    if not check.available():
        print("no CUDA GPU visible to CuPy (pip install softpool_nd[gpu] on a CUDA machine); nothing to check")
        return 2
    report = check.run(quick=args.quick)
    return 1 if "FAIL" in report else 0


if __name__ == "__main__":
    sys.exit(main())
