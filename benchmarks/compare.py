"""Print the table of CPU speed ratios against PyTorch, in one run, without asv.

Usage: ``python benchmarks/compare.py [--quick]`` (also ``softpool-nd bench``).
The measuring code is :func:`softpool_nd.bench.run`.
"""
import sys

from softpool_nd import bench  # first: it sets OMP_WAIT_POLICY before torch loads

if __name__ == "__main__":
    bench.run(quick="--quick" in sys.argv[1:])
