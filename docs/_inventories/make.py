"""Write the small intersphinx inventories the docs build reads offline (docs/_inventories/*.inv).

    python docs/_inventories/make.py

Each file holds only the external names the pages and docstrings reference, in
Sphinx's objects.inv format (version 2), with the addresses those projects
publish them at (relative to the base URL in ``conf.py``'s
``intersphinx_mapping``). A nitpicky build fails on a reference to a name
missing here: add it to ``NAMES`` and rerun this script.
"""

import pathlib
import zlib

HERE = pathlib.Path(__file__).resolve().parent

# project -> [(name, domain:role, page relative to the project's base URL)]
NAMES = {
    "numpy": [
        ("numpy.mean", "py:function", "reference/generated/numpy.mean.html"),
        ("numpy.may_share_memory", "py:function", "reference/generated/numpy.may_share_memory.html"),
        ("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html"),
    ],
    "torch": [
        ("torch.library.custom_op", "py:function", "library.html"),
        ("torch.Tensor", "py:class", "tensors.html"),
        ("torch.compile", "py:function", "generated/torch.compile.html"),
        ("torch.nn.Module", "py:class", "generated/torch.nn.Module.html"),
        ("torch.no_grad", "py:class", "generated/torch.no_grad.html"),
        ("torch.inference_mode", "py:class", "generated/torch.autograd.grad_mode.inference_mode.html"),
        ("torch.func.jvp", "py:function", "generated/torch.func.jvp.html"),
        ("torch.func.jacfwd", "py:function", "generated/torch.func.jacfwd.html"),
        ("torch.func.grad", "py:function", "generated/torch.func.grad.html"),
        ("torch.func.vmap", "py:function", "generated/torch.func.vmap.html"),
        ("torch.func.hessian", "py:function", "generated/torch.func.hessian.html"),
        ("torch.export.export", "py:function", "export.html"),
        ("torch.onnx.export", "py:function", "onnx.html"),
    ],
    "jax": [
        ("jax.pure_callback", "py:function", "_autosummary/jax.pure_callback.html"),
        ("jax.custom_vjp", "py:class", "_autosummary/jax.custom_vjp.html"),
        ("jax.Array", "py:class", "_autosummary/jax.Array.html"),
        ("jax.jit", "py:function", "_autosummary/jax.jit.html"),
        ("jax.grad", "py:function", "_autosummary/jax.grad.html"),
        ("jax.vmap", "py:function", "_autosummary/jax.vmap.html"),
        ("jax.jvp", "py:function", "_autosummary/jax.jvp.html"),
        ("jax.jacfwd", "py:function", "_autosummary/jax.jacfwd.html"),
        ("jax.hessian", "py:function", "_autosummary/jax.hessian.html"),
    ],
    "dask": [
        ("dask.array.Array", "py:class", "generated/dask.array.Array.html"),
        ("dask.array.store", "py:function", "generated/dask.array.store.html"),
    ],
    "cupy": [
        ("cupy.ndarray", "py:class", "reference/generated/cupy.ndarray.html"),
    ],
}


def inventory(project, entries):
    """objects.inv bytes: four header lines, then zlib-compressed ``name domain:role priority uri dispname`` lines."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    # "#$" in a URI stands for "#" + the object's name; "-" as display name: the name itself
    body = "".join(f"{name} {role} 1 {page}#$ -\n" for name, role, page in sorted(entries))
    return header.encode() + zlib.compress(body.encode(), 9)


if __name__ == "__main__":
    for project, entries in NAMES.items():
        (HERE / f"{project}.inv").write_bytes(inventory(project, entries))
        print(f"{project}.inv: {len(entries)} names")
