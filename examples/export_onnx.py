"""Export a network with SoftPool2d to ONNX and run it in onnxruntime (``pip install softpool_nd[onnx]``).

While ``torch.onnx.export`` runs, SoftPool modules switch to
``softpool_nd.composite``: SoftPool written with standard ONNX operators (Pad,
Slice/Gather, Max, Exp, Where, Add, Mul, Div), so the file runs in any ONNX
runtime without a custom-op library. With ``dynamo=True`` the batch size and
the image size are dynamic (``torch.export.Dim``): the pooled output sizes
follow the input. The example runs the file at another batch and image size
than at export.

Run: ``python examples/export_onnx.py [model.onnx]``
"""

import sys

import numpy as np
import onnxruntime
import torch
from torch.export import Dim

import softpool_nd.torch as spt

model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3, padding=1),
    spt.SoftPool2d(kernel_size=3, stride=2, padding=1),
    torch.nn.ReLU(),
    spt.SoftPool2d(kernel_size=2, ceil_mode=True),
).eval()
x = torch.randn(2, 3, 32, 32)
path = sys.argv[1] if len(sys.argv) > 1 else "softpool.onnx"

# every length from 4 up: the windows of both pools then hold input cells
dynamic = {0: Dim("batch"), 2: Dim("height", min=4, max=4096), 3: Dim("width", min=4, max=4096)}
program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=(dynamic,))
program.save(path)
print("ops:", sorted({node.op_type for node in program.model_proto.graph.node}))

session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
other = torch.randn(5, 3, 45, 29)  # another batch size and image size than at export
(got,) = session.run(None, {session.get_inputs()[0].name: other.numpy()})
with torch.no_grad():
    want = model(other).numpy()  # the eager model runs softpool_nd's kernels
print("output shape:", got.shape, "max |onnxruntime - softpool_nd| =", float(np.abs(got - want).max()))
