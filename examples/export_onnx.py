"""Export a network with SoftPool2d to ONNX and run it in onnxruntime (``pip install softpool_nd[onnx]``).

While ``torch.onnx.export`` runs, SoftPool modules switch to
``softpool_nd.composite``: SoftPool written with standard ONNX operators (Pad,
Slice, Max, Exp, Where, Add, Mul, Div), so the file runs in any ONNX runtime
without a custom-op library. The batch size stays dynamic; the pooled
(spatial) lengths are those of the example input.

Run: ``python examples/export_onnx.py [model.onnx]``
"""
import sys

import numpy as np
import onnxruntime
import torch

import softpool_nd.torch as spt

model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3, padding=1),
    spt.SoftPool2d(kernel_size=3, stride=2, padding=1),
    torch.nn.ReLU(),
    spt.SoftPool2d(kernel_size=2),
).eval()
x = torch.randn(2, 3, 32, 32)
path = sys.argv[1] if len(sys.argv) > 1 else "softpool.onnx"

program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
program.save(path)
print("ops:", sorted({node.op_type for node in program.model_proto.graph.node}))

session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
batch = torch.randn(5, 3, 32, 32)  # another batch size than at export
(got,) = session.run(None, {session.get_inputs()[0].name: batch.numpy()})
with torch.no_grad():
    want = model(batch).numpy()  # the eager model runs softpool_nd's kernels
print("max |onnxruntime - softpool_nd| =", float(np.abs(got - want).max()))
