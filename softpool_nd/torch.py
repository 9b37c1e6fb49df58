"""SoftPool for PyTorch: functions, nn.Modules and autograd (``pip install softpool_nd[torch]``).

The names of the reference implementation (``soft_pool2d``, ``SoftPool2d``, ...)
work as drop-in replacements; :func:`soft_pool` and :class:`SoftPoolNd` pool
any axes of any rank. Every function takes the parameters of
:func:`softpool_nd.pool` plus ``gradient``.

The pooling runs as the custom operators ``torch.ops.softpool_nd.forward``
(y and lse), ``.pool`` (y only), ``.backward`` and ``.jvp``
(``torch.library.custom_op``, each with a fake implementation that works on
symbolic sizes and a vmap rule). CPU tensors run on the numba kernels, CUDA
tensors on the CuPy kernels on torch's current stream; tensors are shared
with the kernels through DLPack, without copies. bfloat16 tensors on the CPU
are computed in float32 and returned as bfloat16.

Derivatives: reverse mode (``backward``, ``torch.autograd.grad``,
``torch.func.grad/vjp/jacrev``) through :func:`softpool_nd.backward` and
forward mode (``torch.autograd.forward_ad``, ``torch.func.jvp/jacfwd``)
through :func:`softpool_nd.jvp`, all under ``torch.vmap``. Second derivatives
(double backward, ``torch.func.hessian``) raise a RuntimeError saying so.
Where no derivative can be asked for (``torch.no_grad``,
``torch.inference_mode``, an input that does not require grad) lse is not
computed. ``torch.compile`` (also ``fullgraph=True``, ``dynamic=True`` and
recompiles at new sizes) and ``torch.export`` with dynamic batch and spatial
sizes trace the operators without graph breaks.
"""

import contextlib
import numbers
from typing import NamedTuple

import numpy as np
import torch
import torch.autograd.forward_ad as _forward_ad
import torch.utils._python_dispatch as _python_dispatch

from ._api import _check_beta, _check_gradient, _prepare, backward, forward, jvp, output_shape, pool
from ._dtypes import compute_dtypes
from ._geometry import _SCALARS, _frozen, make_geometry, normalize_args
from ._loops import layout_order

__all__ = [
    "soft_pool",
    "soft_pool1d",
    "soft_pool2d",
    "soft_pool3d",
    "SoftPoolNd",
    "SoftPool1d",
    "SoftPool2d",
    "SoftPool3d",
]


def _op_params(x, kernel, stride, padding, dilation, ceil_mode, axes, beta, gradient):
    """The pooling arguments as custom-operator arguments: per-axis int lists, bools, a float, a str.

    Only the input's rank is used, so this stays plain Python that
    torch.compile folds into constants; the shape-dependent checks run in
    the operator, where :func:`softpool_nd.make_geometry` sees real sizes.
    """
    shape = tuple(x.shape)
    args = normalize_args(x.dim(), kernel, stride, padding, dilation, ceil_mode, axes, shape)
    same = args.padding == "same"
    flat_pads = [] if same else [p for pair in args.padding for p in pair]
    # the operator checks that beta is finite: torch.compile cannot trace math.isfinite on a float
    if not isinstance(beta, numbers.Real) or isinstance(beta, bool):
        raise TypeError(f"beta={beta!r} must be a real number (input shape {shape})")
    _check_gradient(gradient, shape)
    return (
        list(args.kernel),
        list(args.stride),
        flat_pads,
        same,
        list(args.dilation),
        args.ceil_mode,
        list(args.axes),
        float(beta),
        gradient,
    )


#: Operator arguments of recent eager calls (as tuples: hashable, so that they also key ``_PLANS``), by the
#: input's rank and the arguments with their types: ``normalize_args`` costs more than pooling a small map.
_PARAMS = {}
_PARAMS_MAX = 1024


def _hashable(params):
    """Operator arguments with tuples for lists (the custom operators take either)."""
    return tuple(tuple(p) if type(p) is list else p for p in params)


def _cached_op_params(x, *args):
    """``_op_params(x, *args)``, from ``_PARAMS`` when the same rank and arguments came before.

    Scalar arguments and flat tuples of ints (what modules pass) are keyed by
    themselves and their types, anything else through ``_frozen``; unhashable
    arguments and traced calls are not cached. Only arguments that passed the
    checks are stored, so errors are raised as before.
    """
    if torch.compiler.is_compiling():
        return _op_params(x, *args)
    kinds = tuple(map(type, args))
    try:
        if all(k in _SCALARS or (k is tuple and all(type(e) is int for e in a)) for k, a in zip(kinds, args)):
            key = (x.dim(), kinds, args)
        else:
            key = (x.dim(), _frozen(args))
        params = _PARAMS.get(key)
    except TypeError:
        return _op_params(x, *args)
    if params is None:
        params = _hashable(_op_params(x, *args))
        if len(_PARAMS) >= _PARAMS_MAX:
            _PARAMS.clear()
        _PARAMS[key] = params
    return params


def _geometry_kwargs(kernel, stride, padding, same, dilation, ceil_mode, axes):
    """Operator arguments back as keyword arguments of the core functions."""
    pads = "same" if same else tuple(zip(padding[::2], padding[1::2]))
    return dict(
        kernel=tuple(kernel),
        stride=tuple(stride),
        padding=pads,
        dilation=tuple(dilation),
        ceil_mode=ceil_mode,
        axes=tuple(axes),
    )


def _cupy_stream(stream, device_index):
    """CuPy's view of torch CUDA stream ``stream``.

    ``cupy.cuda.Stream.from_external`` (CuPy 13+) reads torch's
    ``__cuda_stream__``, which older torch lacks (TypeError): then the raw
    handle goes through ``cupy.cuda.ExternalStream``.
    """
    import cupy

    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None:
        try:
            return from_external(stream)
        except TypeError:
            pass
    return cupy.cuda.ExternalStream(stream.cuda_stream, device_index)


def _on_torch_stream(t):
    """Run CuPy work for CUDA tensor ``t`` on torch's current stream of its device; nothing for CPU tensors."""
    if t.device.type != "cuda":
        return contextlib.nullcontext()
    import cupy

    ctx = contextlib.ExitStack()
    ctx.enter_context(cupy.cuda.Device(t.device.index))
    ctx.enter_context(_cupy_stream(torch.cuda.current_stream(t.device), t.device.index))
    return ctx


# torch dtype -> NumPy dtype, for the dtype rule of softpool_nd._dtypes; bfloat16 stands in as float16 (both keep
# their dtype and accumulate in float32), so the rule needs no ml_dtypes here
_AS_NUMPY = {
    torch.from_numpy(np.zeros(0, t)).dtype: np.dtype(t)
    for t in (
        np.bool_,
        np.uint8,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.float16,
        np.float32,
        np.float64,
        np.complex64,
        np.complex128,
    )
}
_AS_NUMPY[torch.bfloat16] = np.dtype(np.float16)
_AS_TORCH = {v: k for k, v in _AS_NUMPY.items() if k != torch.bfloat16}


def _result_dtypes(x):
    """dtypes of (y, lse) for input ``x``, as softpool_nd.forward gives them (the rule of softpool_nd._dtypes)."""
    stand_in = _AS_NUMPY.get(x.dtype, x.dtype)  # any other dtype: compute_dtypes' TypeError names it
    compute, acc = compute_dtypes(stand_in, "x", tuple(x.shape))
    return (x.dtype if compute == stand_in else _AS_TORCH[compute]), _AS_TORCH[acc]


def _layout_order(strides):
    """``layout_order`` of a tensor's strides; symbolic strides (torch.compile, export) skip its cache."""
    strides = tuple(strides)
    if all(type(s) is int for s in strides):
        return layout_order(strides)
    return layout_order.__wrapped__(strides)


def _empty_in_layout(shape, like, dtype):
    """An empty tensor of ``shape`` whose axes are ordered in memory like ``like``, as the backends allocate.

    Allocated by torch (its caching allocator, on the current stream), so it
    also serves as ``out=`` for CUDA tensors.
    """
    order = _layout_order(like.stride())
    buf = like.new_empty([shape[a] for a in order], dtype=dtype)
    return buf.permute([order.index(a) for a in range(len(order))])


def _like(t, ref):
    """``t``, or a copy by torch in the memory layout of ``ref`` (same shape) when its strides differ."""
    if t.stride() == ref.stride():
        return t
    return _empty_in_layout(t.shape, ref, t.dtype).copy_(t)


# gradient is unused by the forward pass; it is an operator argument so that autograd reads it from the inputs
@torch.library.custom_op("softpool_nd::forward", mutates_args=())
def _forward_op(
    x: torch.Tensor,
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    same: bool,
    dilation: list[int],
    ceil_mode: bool,
    axes: list[int],
    beta: float,
    gradient: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    kwargs = _geometry_kwargs(kernel, stride, padding, same, dilation, ceil_mode, axes)
    if x.device.type == "cuda":
        # y and lse from torch's allocator on the current stream: the op launches kernels only (CUDA graphs)
        out_shape = _out_shape(x, kernel, stride, padding, same, dilation, ceil_mode, axes)
        out = tuple(_empty_in_layout(out_shape, x, dt) for dt in _result_dtypes(x))
        with _on_torch_stream(x):
            forward(x.detach(), beta=beta, out=out, **kwargs)
        return out
    # what torch.compile'd programs call on every step: the eager direct path where it applies (no DLPack, no
    # geometry keyed per call)
    plan = _cpu_plan(x, (kernel, stride, padding, same, dilation, ceil_mode, axes, beta, gradient))
    if plan is not None:
        return plan.forward(x)
    return forward(x.detach(), beta=beta, **kwargs)


def _out_shape(x, kernel, stride, padding, same, dilation, ceil_mode, axes):
    """The pooled shape of ``x``; its entries stay symbolic under torch.compile and torch.export."""
    return output_shape(x.shape, **_geometry_kwargs(kernel, stride, padding, same, dilation, ceil_mode, axes))


@_forward_op.register_fake
def _(x, kernel, stride, padding, same, dilation, ceil_mode, axes, beta, gradient):
    out_shape = _out_shape(x, kernel, stride, padding, same, dilation, ceil_mode, axes)
    y_dtype, lse_dtype = _result_dtypes(x)
    return _empty_in_layout(out_shape, x, y_dtype), _empty_in_layout(out_shape, x, lse_dtype)


@torch.library.custom_op("softpool_nd::pool", mutates_args=())
def _pool_op(
    x: torch.Tensor,
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    same: bool,
    dilation: list[int],
    ceil_mode: bool,
    axes: list[int],
    beta: float,
) -> torch.Tensor:
    """SoftPool without lse, where no derivative is needed (no_grad, inference_mode, inputs without grad)."""
    plan = _cpu_plan(x, (kernel, stride, padding, same, dilation, ceil_mode, axes, beta))  # as in _forward_op
    if plan is not None:
        return plan.forward(x, with_lse=False)[0]
    kwargs = _geometry_kwargs(kernel, stride, padding, same, dilation, ceil_mode, axes)
    out = None
    if x.device.type == "cuda":
        # torch's allocator on the current stream: the op launches kernels only (CUDA graph capture)
        out = _empty_in_layout(
            _out_shape(x, kernel, stride, padding, same, dilation, ceil_mode, axes), x, _result_dtypes(x)[0]
        )
    with _on_torch_stream(x):
        y = pool(x.detach(), beta=beta, out=out, **kwargs)
    return y


@_pool_op.register_fake
def _(x, kernel, stride, padding, same, dilation, ceil_mode, axes, beta):
    return _empty_in_layout(
        _out_shape(x, kernel, stride, padding, same, dilation, ceil_mode, axes), x, _result_dtypes(x)[0]
    )


@torch.library.custom_op("softpool_nd::backward", mutates_args=())
def _backward_op(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    lse: torch.Tensor,
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    same: bool,
    dilation: list[int],
    ceil_mode: bool,
    axes: list[int],
    beta: float,
    gradient: str,
) -> torch.Tensor:
    kwargs = _geometry_kwargs(kernel, stride, padding, same, dilation, ceil_mode, axes)
    if x.device.type == "cuda":
        # grad_x from torch's allocator; grad_y in y's layout (an expanded grad_y would be copied by CuPy)
        gx = _empty_in_layout(x.shape, x, _result_dtypes(x)[0])
        with _on_torch_stream(x):
            backward(
                _like(grad_y.detach(), y),
                x.detach(),
                y=y.detach(),
                lse=lse.detach(),
                beta=beta,
                gradient=gradient,
                out=gx,
                **kwargs,
            )
        return gx
    plan = _cpu_plan(x, (kernel, stride, padding, same, dilation, ceil_mode, axes, beta, gradient))
    if plan is not None and plan.takes(x, grad_y, y, lse):  # as in _forward_op
        return plan.backward(grad_y, x, y, lse, gradient == "exact")
    return backward(grad_y.detach(), x.detach(), y=y.detach(), lse=lse.detach(), beta=beta, gradient=gradient, **kwargs)


@_backward_op.register_fake
def _(grad_y, x, y, lse, kernel, stride, padding, same, dilation, ceil_mode, axes, beta, gradient):
    return _empty_in_layout(x.shape, x, _result_dtypes(x)[0])


@torch.library.custom_op("softpool_nd::jvp", mutates_args=())
def _jvp_op(
    dx: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    lse: torch.Tensor,
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    same: bool,
    dilation: list[int],
    ceil_mode: bool,
    axes: list[int],
    beta: float,
) -> torch.Tensor:
    """Forward-mode derivative through :func:`softpool_nd.jvp`."""
    kwargs = _geometry_kwargs(kernel, stride, padding, same, dilation, ceil_mode, axes)
    if x.device.type == "cuda":
        # dy from torch's allocator; dx in x's layout (the kernel reads both with one set of offsets)
        dy = _empty_in_layout(y.shape, x, _result_dtypes(x)[0])
        with _on_torch_stream(x):
            jvp(x.detach(), _like(dx.detach(), x), y=y.detach(), lse=lse.detach(), beta=beta, out=dy, **kwargs)
        return dy
    return jvp(x.detach(), dx.detach(), y=y.detach(), lse=lse.detach(), beta=beta, **kwargs)


@_jvp_op.register_fake
def _(dx, x, y, lse, kernel, stride, padding, same, dilation, ceil_mode, axes, beta):
    return _empty_in_layout(y.shape, x, _result_dtypes(x)[0])


def _register_vmap(op, n_tensors):
    """torch.vmap of ``op`` (whose first ``n_tensors`` arguments are tensors): one call on a stacked input.

    The vmapped dimension becomes a leading unpooled axis: tensors are moved
    (or, when not vmapped, broadcast) to it and every pooled axis shifts by one.
    """

    @torch.library.register_vmap(op)
    def _(info, in_dims, *args):
        tensors, params = args[:n_tensors], list(args[n_tensors:])
        dims = in_dims[:n_tensors]
        if all(d is None for d in dims):
            out = op(*args)
            return out, (None,) * len(out) if isinstance(out, tuple) else None
        tensors = [
            t.movedim(d, 0) if d is not None else t.expand(info.batch_size, *t.shape) for t, d in zip(tensors, dims)
        ]
        params[_AXES] = [a + 1 for a in params[_AXES]]
        out = op(*tensors, *params)
        return out, (0,) * len(out) if isinstance(out, tuple) else 0


#: Position of ``axes`` among an operator's non-tensor arguments.
_AXES = 6
for _op, _n in ((_forward_op, 1), (_pool_op, 1), (_backward_op, 4), (_jvp_op, 4)):
    _register_vmap(_op, _n)


def _setup_context(ctx, inputs, output):
    y, lse = output
    ctx.mark_non_differentiable(lse)
    # lse's gradient would otherwise arrive as a zero-filled tensor a quarter of x's size (k2s2), every step
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(inputs[0], y, lse)
    ctx.params = inputs[1:]


def _autograd_backward(ctx, grad_y, grad_lse):
    x, y, lse = ctx.saved_tensors
    grad_x = None if grad_y is None else _Backward.apply(grad_y, x, y, lse, _Params(ctx.params))
    return (grad_x,) + (None,) * len(ctx.params)


# what torch.compile traces (dynamo cannot trace an autograd.Function with a jvp)
_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


_SUPPORTED = (
    "softpool_nd.torch supports first derivatives only: backward, torch.autograd.grad, torch.func.grad/vjp/"
    "jacrev (reverse mode) and torch.autograd.forward_ad, torch.func.jvp/jacfwd (forward mode, through "
    "softpool_nd.jvp), each under torch.vmap; "
)


def _no_second_derivative(*_):
    raise RuntimeError(
        _SUPPORTED + "a second derivative (double backward, create_graph=True then backward, "
        "torch.func.hessian, jacfwd(jacrev(...))) of SoftPool is not implemented"
    )


class _Params:
    """The operator arguments as one opaque value: torch.func flattens list arguments of a
    Function into its leaves in some transforms and not in others."""

    __slots__ = ("args",)

    def __init__(self, args):
        self.args = tuple(args)


class _SoftPool(torch.autograd.Function):
    """SoftPool with reverse mode (``backward``), forward mode (``jvp``) and torch.func support.

    ``apply(x, _Params(operator arguments))`` returns (y, lse).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, params):
        return _forward_op(x, *params.args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, params = inputs
        y, lse = output
        ctx.mark_non_differentiable(lse)
        ctx.set_materialize_grads(False)  # as in _setup_context
        ctx.save_for_backward(x, y, lse)
        ctx.save_for_forward(x, y, lse)
        ctx.params = params

    @staticmethod
    def backward(ctx, grad_y, grad_lse):
        if grad_y is None:
            return None, None
        x, y, lse = ctx.saved_tensors
        return _Backward.apply(grad_y, x, y, lse, ctx.params), None

    @staticmethod
    def jvp(ctx, dx, _):
        if dx is None:  # not materialized (setup_context)
            return None, None
        *args, gradient = ctx.params.args
        if gradient != "exact":
            # reverse mode would give the paper's rule and forward mode the true derivative: jacfwd != jacrev
            raise RuntimeError(
                f"softpool_nd.torch: forward-mode AD computes the exact derivative (softpool_nd.jvp); it has no "
                f"form of gradient={gradient!r} (the paper's rule, reverse mode only); use gradient='exact'"
            )
        x, y, lse = ctx.saved_tensors
        return _jvp_op(dx, x, y, lse, *args), None


class _Backward(torch.autograd.Function):
    """The vector-Jacobian product; differentiating it again raises what is supported."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_y, x, y, lse, params):
        return _backward_op(grad_y, x, y, lse, *params.args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    backward = staticmethod(_no_second_derivative)
    jvp = staticmethod(_no_second_derivative)


def _needs_derivative(x):
    """Whether pooling ``x`` must keep lse for a derivative: autograd records, forward AD or a torch.func transform."""
    if torch.is_grad_enabled() and x.requires_grad:
        return True
    if torch.compiler.is_compiling():
        return False
    return _forward_ad._current_level >= 0 or torch._C._functorch.is_functorch_wrapped_tensor(x)


#: Checked arguments of recent eager CPU calls, by (shape, dtype, operator arguments): a training loop
#: repeats a few of them, and the dispatcher, DLPack and the core API's checks cost more than the
#: kernels on small maps (issue #14).
_PLANS = {}
_PLANS_MAX = 1024
#: dtypes that torch and NumPy share, so that the kernels can run on ``Tensor.numpy()`` views.
_NUMPY_DTYPES = frozenset((torch.float16, torch.float32, torch.float64))


def _plain(t):
    """Whether CPU tensor ``t`` may go to the kernels as ``t.numpy()``: nothing traces, transforms or watches it."""
    # first what torch.compile folds to a constant: dynamo cannot trace the checks after it
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or type(t) not in (torch.Tensor, torch.nn.Parameter):
        return False
    # the dispatch keys of dense CPU memory and nothing else: no vmap level (torch.func's or gradcheck's
    # batched gradients), no lazy negation, no Python dispatch
    keys = torch._C._dispatch_keys(t)
    return (
        (keys == _CPU_KEYS or keys == _CPU_INFERENCE_KEYS)
        and not torch._C._is_torch_function_mode_enabled()
        and not _python_dispatch.is_in_torch_dispatch_mode()
    )


_CPU_KEYS = torch._C._dispatch_keys(torch.empty(0))
with torch.inference_mode():
    _CPU_INFERENCE_KEYS = torch._C._dispatch_keys(torch.empty(0))


def _cpu_plan(x, params):
    """How to run ``x`` directly on the CPU kernels (a ``_Plan``), or None.

    None where the operators must run: CUDA tensors, tensor subclasses,
    dtypes NumPy lacks, empty outputs, and whenever something watches or
    transforms the call (torch.compile, tracing, dispatch and function
    modes, torch.func, forward AD). Otherwise the checks are the core API's
    own (:func:`softpool_nd._api._prepare`), made once per key.
    """
    if not _plain(x) or x.dtype not in _NUMPY_DTYPES or _forward_ad._current_level >= 0:
        return None
    strides = x.stride()
    key = (tuple(x.shape), strides, x.dtype, params if type(params[0]) is tuple else _hashable(params))
    try:
        return _PLANS[key]
    except KeyError:
        pass
    xn = x.detach().numpy()
    kwargs = _geometry_kwargs(*params[:7])
    _, geom, dtype, acc_dtype, beta, backend = _prepare(xn, beta=params[7], **kwargs)
    plan = None
    if dtype == xn.dtype and 0 not in geom.out_shape + geom.in_shape:
        order = _layout_order(strides)
        if order == tuple(range(x.dim())) or not xn.transpose(order).flags.c_contiguous:
            plan = _Plan(geom, beta, acc_dtype, backend, None, None, geom.out_shape, _AS_TORCH[acc_dtype])
        else:
            # dense in another axis order (channels_last): the kernels get the C-contiguous view of the same
            # memory, which they walk with the same loop table (it is ordered by stride), but which the
            # backend views as flat memory without as_strided (tens of microseconds per array)
            inverse = tuple(order.index(a) for a in range(len(order)))
            kwargs["axes"] = tuple(inverse[a] for a in kwargs["axes"])
            view = make_geometry(tuple(geom.in_shape[a] for a in order), **kwargs)
            plan = _Plan(view, beta, acc_dtype, backend, order, inverse, geom.out_shape, _AS_TORCH[acc_dtype])
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


class _Plan(NamedTuple):
    """A checked eager CPU call: the geometry of the arrays the kernels get, ``x.numpy().transpose(order)``
    (``order`` None: no transposition); results come back through ``.transpose(inverse)``."""

    geom: object
    beta: float
    acc_dtype: np.dtype
    backend: object
    order: tuple | None
    inverse: tuple | None
    #: The pooled shape in x's axis order.
    out_shape: tuple
    #: lse's torch dtype.
    lse_dtype: torch.dtype

    def array(self, t):
        """The NumPy view of CPU tensor ``t`` (x's shape or the pooled shape) that the kernels get."""
        a = t.detach().numpy()
        return a if self.order is None else a.transpose(self.order)

    def tensor(self, a):
        """The tensor of kernel result ``a``, in the axis order of x; not a torch view (autograd would refuse
        in-place changes of a view made inside a Function), as the operators return."""
        return torch.from_numpy(a if self.inverse is None else a.transpose(self.inverse))

    def forward(self, x, with_lse=True):
        y, lse = self.backend.forward(self.array(x), self.geom, self.beta, self.acc_dtype, with_lse=with_lse)
        return self.tensor(y), (None if lse is None else self.tensor(lse))

    def takes(self, x, grad_y, y, lse):
        """Whether the backward's arrays need none of the core API's checks or conversions: plain tensors of
        the pooled shape, grad_y and y in x's dtype, lse in the accumulation dtype (else the core API runs)."""
        shape = self.out_shape
        return (
            grad_y.shape == shape
            and y.shape == shape
            and lse.shape == shape
            and grad_y.dtype == x.dtype
            and y.dtype == x.dtype
            and lse.dtype == self.lse_dtype
            and _plain(grad_y)
            and _plain(y)
            and _plain(lse)
        )

    def backward(self, grad_y, x, y, lse, exact):
        """grad_x, from arrays that ``takes``."""
        arrays = map(self.array, (grad_y, x, y, lse))
        return self.tensor(self.backend.backward(*arrays, self.geom, self.beta, self.acc_dtype, exact))


class _EagerSoftPool(torch.autograd.Function):
    """Eager reverse mode on CPU tensors with the kernels called directly on NumPy views (``_cpu_plan``).

    ``apply(x, operator arguments, plan)`` returns (y, lse). A backward that
    records a graph (``create_graph=True``) takes ``_Backward``, which says
    that second derivatives are not supported.
    """

    @staticmethod
    def forward(ctx, x, params, plan):
        y, lse = plan.forward(x)
        ctx.mark_non_differentiable(lse)
        ctx.set_materialize_grads(False)  # as in _setup_context
        ctx.save_for_backward(x, y, lse)
        ctx.params, ctx.plan = params, plan
        return y, lse

    @staticmethod
    def backward(ctx, grad_y, grad_lse):
        if grad_y is None:
            return None, None, None
        x, y, lse = ctx.saved_tensors
        if torch.is_grad_enabled() or not _plain(grad_y) or grad_y.dtype != x.dtype:
            return _Backward.apply(grad_y, x, y, lse, _Params(ctx.params)), None, None
        return ctx.plan.backward(grad_y, x, y, lse, ctx.params[-1] == "exact"), None, None


def _soft_pool(x, params):
    """The pooled tensor; lse is computed only where a derivative may need it."""
    plan = _cpu_plan(x, params)
    if not _needs_derivative(x):
        if plan is not None:
            return plan.forward(x, with_lse=False)[0]
        return _pool_op(x, *params[:-1])
    if plan is not None:
        return _EagerSoftPool.apply(x, params, plan)[0]
    if torch.compiler.is_compiling():
        return _forward_op(x, *params)[0]
    return _SoftPool.apply(x, _Params(params))[0]


def soft_pool(
    x,
    kernel=2,
    stride=None,
    padding=0,
    *,
    dilation=1,
    ceil_mode=False,
    axes=None,
    beta=1.0,
    gradient="exact",
    impl="kernels",
):
    """SoftPool of a tensor over any axes, differentiable and compilable.

    Parameters
    ----------
    x : torch.Tensor
        Input of any rank on the CPU or a CUDA device.
    kernel, stride, padding, dilation, ceil_mode, axes, beta
        As in :func:`softpool_nd.pool`; an int ``kernel`` pools every axis from
        the third on (batch and channel lead).
    gradient : {'exact', 'weights'}, default 'exact'
        The gradient autograd uses, as in :func:`softpool_nd.backward`.
    impl : {'kernels', 'composite'}, default 'kernels'
        ``'kernels'``: the custom operators on softpool_nd's kernels.
        ``'composite'``: the same arithmetic as standard torch operations
        (:mod:`softpool_nd.composite`), which ``torch.export``, inductor and
        any device see through; autograd differentiates it, forward mode and
        higher orders included. While ``torch.onnx.export`` runs, every call
        takes ``'composite'``, so exported graphs hold only standard ONNX ops;
        with ``dynamo=True`` the pooled lengths may be dynamic
        (``torch.export.Dim``), with the legacy tracer only the batch.

    Returns
    -------
    torch.Tensor
        The pooled tensor, on ``x``'s device, in ``x``'s dtype (float64 for
        integer ``x``), laid out in memory like ``x`` (``'kernels'``).

    Examples
    --------
    >>> import torch
    >>> from softpool_nd.torch import soft_pool
    >>> x = torch.tensor([[0.0, 1.0, 4.0, 4.0]], requires_grad=True)
    >>> y = soft_pool(x, 2, axes=1)
    >>> y.detach()
    tensor([[0.7311, 4.0000]])
    >>> y.sum().backward()
    >>> x.grad
    tensor([[0.0723, 0.9277, 0.5000, 0.5000]])
    """
    params = _cached_op_params(x, kernel, stride, padding, dilation, ceil_mode, axes, beta, gradient)
    if impl == "composite" or torch.onnx.is_in_onnx_export():
        return _composite(x, params)
    if impl != "kernels":
        raise ValueError(f"impl={impl!r} must be 'kernels' or 'composite' (input shape {tuple(x.shape)})")
    return _soft_pool(x, params)


def _composite(x, params):
    """soft_pool through softpool_nd.composite: the operator's checks, then the decomposition."""
    from . import composite
    from .composite.torch import pool

    kwargs = _geometry_kwargs(*params[:7])
    y_dtype, acc_dtype = _result_dtypes(x)
    beta = _check_beta(params[7], tuple(x.shape), _AS_NUMPY[acc_dtype])
    return pool(x.to(y_dtype), composite.plan(x.shape, **kwargs), beta, params[8])


def _spatial(n, name, x, kernel_size, stride, padding, dilation, ceil_mode, beta, gradient):
    """Pool the last ``n`` axes of a batched or unbatched input, as torch's own pooling layers do."""
    if x.dim() not in (n + 1, n + 2):
        raise ValueError(
            f"{name} takes a {n + 1}-d (C, *spatial) or {n + 2}-d (N, C, *spatial) input, got shape {tuple(x.shape)}"
        )
    spatial = tuple(range(x.dim() - n, x.dim()))
    return soft_pool(
        x,
        kernel_size,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        axes=spatial,
        beta=beta,
        gradient=gradient,
    )


_SPATIAL_DOC = """SoftPool over the last {n} axes of a ({shape}) or unbatched input.

    A drop-in for ``{name}`` of the reference implementation, with the true
    gradient and every option of :func:`softpool_nd.pool`.

    Parameters
    ----------
    x : torch.Tensor
        ``({shape})`` or unbatched ``(C, ...)`` input.
    kernel_size : int or tuple of {n} ints, default 2
    stride : int or tuple of {n} ints, optional
        Defaults to ``kernel_size``.
    force_inplace : bool, default False
        Accepted for compatibility with the reference implementation and ignored.
    padding, dilation, ceil_mode, beta, gradient
        As in :func:`soft_pool`.

    Returns
    -------
    torch.Tensor

    Examples
    --------
    >>> import torch
    >>> from softpool_nd.torch import {name}
    >>> {name}(torch.zeros({example}), kernel_size=2).shape
    torch.Size([{result}])
    """


def _check_force_inplace(force_inplace):
    """The reference signature's third parameter is force_inplace, not padding: refuse an int there."""
    if not isinstance(force_inplace, bool):
        raise TypeError(
            f"force_inplace={force_inplace!r} must be True or False: the third positional parameter is "
            f"force_inplace, as in the reference implementation, not padding; pass padding as a keyword, "
            f"e.g. SoftPool2d(3, 2, padding=1)"
        )


def soft_pool1d(
    x,
    kernel_size=2,
    stride=None,
    force_inplace=False,
    *,
    padding=0,
    dilation=1,
    ceil_mode=False,
    beta=1.0,
    gradient="exact",
):
    _check_force_inplace(force_inplace)
    return _spatial(1, "soft_pool1d", x, kernel_size, stride, padding, dilation, ceil_mode, beta, gradient)


def soft_pool2d(
    x,
    kernel_size=2,
    stride=None,
    force_inplace=False,
    *,
    padding=0,
    dilation=1,
    ceil_mode=False,
    beta=1.0,
    gradient="exact",
):
    _check_force_inplace(force_inplace)
    return _spatial(2, "soft_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode, beta, gradient)


def soft_pool3d(
    x,
    kernel_size=2,
    stride=None,
    force_inplace=False,
    *,
    padding=0,
    dilation=1,
    ceil_mode=False,
    beta=1.0,
    gradient="exact",
):
    _check_force_inplace(force_inplace)
    return _spatial(3, "soft_pool3d", x, kernel_size, stride, padding, dilation, ceil_mode, beta, gradient)


soft_pool1d.__doc__ = _SPATIAL_DOC.format(n=1, shape="N, C, L", name="soft_pool1d", example="1, 3, 8", result="1, 3, 4")
soft_pool2d.__doc__ = _SPATIAL_DOC.format(
    n=2, shape="N, C, H, W", name="soft_pool2d", example="1, 3, 8, 8", result="1, 3, 4, 4"
)
soft_pool3d.__doc__ = _SPATIAL_DOC.format(
    n=3, shape="N, C, D, H, W", name="soft_pool3d", example="1, 3, 4, 8, 8", result="1, 3, 2, 4, 4"
)


class SoftPoolNd(torch.nn.Module):
    """Module form of :func:`soft_pool`: SoftPool over any axes of any rank.

    Parameters are those of :func:`soft_pool`.

    Examples
    --------
    >>> import torch
    >>> from softpool_nd.torch import SoftPoolNd
    >>> SoftPoolNd(kernel=(2, 2), axes=(1, 2))(torch.zeros(4, 8, 8, 3)).shape
    torch.Size([4, 4, 4, 3])
    """

    def __init__(
        self, kernel=2, stride=None, padding=0, *, dilation=1, ceil_mode=False, axes=None, beta=1.0, gradient="exact"
    ):
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.dilation, self.ceil_mode, self.axes = dilation, ceil_mode, axes
        self.beta, self.gradient = beta, gradient

    def forward(self, x):
        return soft_pool(
            x,
            self.kernel,
            self.stride,
            self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
            axes=self.axes,
            beta=self.beta,
            gradient=self.gradient,
        )

    def extra_repr(self):
        return (
            f"kernel={self.kernel}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"ceil_mode={self.ceil_mode}, axes={self.axes}, beta={self.beta}, gradient={self.gradient!r}"
        )


class _SoftPoolSpatial(torch.nn.Module):
    """SoftPool over the last ``_n`` axes; the reference implementation's module signature."""

    _fn = None

    def __init__(
        self,
        kernel_size=2,
        stride=None,
        force_inplace=False,
        *,
        padding=0,
        dilation=1,
        ceil_mode=False,
        beta=1.0,
        gradient="exact",
    ):
        super().__init__()
        _check_force_inplace(force_inplace)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.ceil_mode, self.beta, self.gradient = dilation, ceil_mode, beta, gradient

    def forward(self, x):
        return type(self)._fn(
            x,
            self.kernel_size,
            self.stride,
            padding=self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
            beta=self.beta,
            gradient=self.gradient,
        )

    def extra_repr(self):
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}, beta={self.beta}, gradient={self.gradient!r}"
        )


class SoftPool1d(_SoftPoolSpatial):
    """Module form of :func:`soft_pool1d`; input ``(N, C, L)`` or ``(C, L)``.

    Examples
    --------
    >>> import torch
    >>> from softpool_nd.torch import SoftPool1d
    >>> SoftPool1d(2)(torch.zeros(1, 3, 8)).shape
    torch.Size([1, 3, 4])
    """

    _fn = staticmethod(soft_pool1d)


class SoftPool2d(_SoftPoolSpatial):
    """Module form of :func:`soft_pool2d`; input ``(N, C, H, W)`` or ``(C, H, W)``.

    Examples
    --------
    >>> import torch
    >>> from softpool_nd.torch import SoftPool2d
    >>> SoftPool2d(kernel_size=3, stride=2, padding=1)(torch.zeros(1, 3, 8, 8)).shape
    torch.Size([1, 3, 4, 4])
    """

    _fn = staticmethod(soft_pool2d)


class SoftPool3d(_SoftPoolSpatial):
    """Module form of :func:`soft_pool3d`; input ``(N, C, D, H, W)`` or ``(C, D, H, W)``.

    Examples
    --------
    >>> import torch
    >>> from softpool_nd.torch import SoftPool3d
    >>> SoftPool3d(2)(torch.zeros(1, 3, 4, 8, 8)).shape
    torch.Size([1, 3, 2, 4, 4])
    """

    _fn = staticmethod(soft_pool3d)
