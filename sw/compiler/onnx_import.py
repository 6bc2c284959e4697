"""Read float ONNX models as exporters write them and bring them to one canonical form.

:func:`load_onnx` reads a model (a path, the file's bytes or an ``onnx.ModelProto``), checks it
with ``onnx.checker.check_model`` and refuses non-finite weights. :func:`normalize` rewrites it
into the canonical float form that the quantizer reads, and :func:`check_canonical` checks that
form (the quantizer calls it too).

The canonical form
==================

A valid ONNX model (``onnx.checker`` passes, onnxruntime runs it) with the same float outputs as
the source (within float32 rounding), and:

* one graph input, float32, static shape ``(1, K)`` or ``(1, C, H, W)`` (the batch fixed to 1,
  the source's name kept); one graph output, float32, static shape (name kept);
* every initializer finite; every node output a static shape in ``graph.value_info`` (strict
  shape inference ran last) or the graph output; nodes in topological order; only
* ``Gemm(X, W, B)``: X ``(1, K)``, W float32 ``(N, K)``, ``transB=1`` the only attribute, B
  float32 ``(N,)`` always present;
* ``Conv(X, W, B)``: W ``(O, C/group, kh, kw)``, B ``(O,)`` always present; attributes exactly
  ``kernel_shape``, ``strides``, ``pads`` ``[top, left, bottom, right]``, ``dilations [1, 1]``,
  ``group`` (1, or C with O a multiple of C: depthwise);
* ``Relu``; ``MaxPool`` / ``AveragePool`` with ``kernel_shape``, ``strides``, ``pads`` explicit
  (AveragePool also ``count_include_pad``), no ``auto_pad``, floor rounding, dilation 1, one
  output; ``GlobalAveragePool``;
* ``Add(A, B)`` of two data tensors of the same shape (no broadcasting);
* ``Reshape(X, S)``, S an int64 initializer ``[1, n]`` flattening X in row-major (NCHW) order;
* ``Softmax(X)`` of a ``(1, n)`` tensor over its ``n`` values (``axis`` -1 or 1, or absent):
  the last op of a Keras or PyTorch classifier that outputs probabilities.

``model.metadata_props`` are kept.

The passes of :func:`normalize`
===============================

1. The batch dimension of the input becomes 1 (a symbolic or unknown first dimension); any other
   symbolic dimension, several inputs or outputs, a non-float input are refused.
2. ``onnx.shape_inference``, then onnxruntime's basic graph optimizations
   (``ORT_ENABLE_BASIC``, the model saved through ``SessionOptions.optimized_model_filepath``):
   with the batch fixed they fold constants -- the dynamic-batch
   ``Shape -> Gather -> Unsqueeze -> Concat`` chain of ``torch.onnx.export`` becomes a constant
   Reshape shape, a Transpose of a constant weight a constant --, drop Identity and inference
   Dropout nodes, fuse Conv + BatchNormalization and Conv + constant Add/Mul, and fuse
   ``MatMul + Add`` into ``Gemm`` (all checked on the test models of
   :mod:`pim_macro.tb.harness.onnx_build`). ``onnxsim`` 0.8.1 (a PyPI wheel) was tried on the
   same models: it does the same, less (it keeps a Dropout with a ``training_mode`` input),
   and it is not a dependency.
3. Our own passes, for what onnxruntime's basic level leaves (each says which case it covers);
   the rules come from the ONNX operator specification (https://onnx.ai/onnx/operators/):

   * :func:`_drop_noops` -- Identity, inference-mode Dropout, identity Transposes and shape ops
     that onnxruntime keeps (e.g. one that feeds the graph output); a Dropout in training mode
     or whose mask is used is refused; ``Clip(x, 0)`` without a max becomes Relu;
   * :func:`_columns` -- ``(W @ x.T).T``: a 2-D Transpose of a ``(1, K)`` tensor, MatMul with the
     constant on the left (or onnxruntime's fusion of them, a Gemm with the constant first),
     Add/Relu on the column, Transpose back, becomes a Gemm on the row;
   * :func:`_linear_layers` -- MatMul(x, W) into ``Gemm(x, W.T, 0, transB=1)`` (what the
     MatMul + Add fusion leaves: a MatMul without a bias); every Gemm into the canonical
     attributes (alpha, beta, transB folded into W and B, B made ``(N,)``); Conv and pooling
     attributes made explicit, ``auto_pad`` resolved by the spec's rule (``SAME_UPPER``: output
     ``ceil(in / stride)``, total padding ``max(0, (out - 1) * stride + (k - 1) * dilation + 1 -
     in)``, the odd one at the end; ``SAME_LOWER``: at the beginning), a Conv's missing bias
     made zeros, ``ceil_mode=1`` accepted where it gives floor's shape;
   * :func:`_fold_into_linear` -- BatchNormalization after a Gemm (onnxruntime fuses BN only
     after Conv), and constant Add / Sub / Mul / Div after a Gemm or Conv, folded exactly into
     its weights and bias (in float64, then float32): ``s = scale / sqrt(var + epsilon)``,
     ``W' = s * W``, ``B' = s * (B - mean) + bias`` (BatchNormalization's inference formula);
     failing that, the same before a Gemm or an unpadded Conv (an input normalization such as
     ``(x - mean) / std`` or a first BatchNorm1d);
   * :func:`_reduce_means` -- ReduceMean over the spatial axes (``x.mean((2, 3))``) becomes
     GlobalAveragePool (and a flatten without keepdims);
   * :func:`_flattens` -- Flatten, Reshape, Squeeze, Unsqueeze and order-keeping Transposes of
     a batch-1 tensor to ``(1, n)`` become the canonical Reshape (a chain of them one); one
     that keeps the shape is dropped.

4. Dead nodes and initializers removed, nodes sorted, strict shape inference,
   ``onnx.checker.check_model(full_check=True)`` and :func:`check_canonical`.

What is refused
===============

Anything the canonical form cannot express, e.g. Sigmoid, Tanh, Clip with a max
(ReLU6), LeakyRelu, GlobalMaxPool, MatMul of two data tensors, a 4-D Transpose that reorders
data (an NHWC model from tf2onnx), an unflattening Reshape, a dilated or grouped (not depthwise)
Conv, ``ceil_mode=1`` that changes the shape, Dropout in training mode, BatchNormalization or
constant arithmetic with no Gemm/Conv to fold into, several inputs or outputs, a fixed batch
above 1, a symbolic dimension other than the batch, data computed in a float type other than
float32 (a ``model.double()`` or ``.half()`` export: :func:`_check_float32`).

Errors
======

``ValueError`` for a broken file or argument; :class:`~pim_macro.sw.compiler.tflite_import.\
UnsupportedModel` (a ``ValueError``) for a valid model the project cannot run, one line naming
the node (name and op) and what is wrong, e.g. ``node 'conv3' (Conv): dilation [2, 2] is not
supported``.
"""

import os
import tempfile
from pathlib import Path

import numpy as np

from pim_macro.sw.compiler.tflite_import import UnsupportedModel


__all__ = ["load_onnx", "normalize", "check_canonical", "CANONICAL_OPS", "node_label",
           "node_attributes", "static_shape"]

#: The ops of the canonical form.
CANONICAL_OPS = ("Gemm", "Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Add",
                 "Reshape", "Softmax")

_FLOAT_TYPES = None


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def node_label(node):
    """``node 'name' (Op)``: how every message names an ONNX node."""
    return f"node {node.name or '<unnamed>'!r} ({node.op_type})"


def node_attributes(node):
    """``{name: value}`` of an ONNX node's attributes (``onnx.helper.get_attribute_value``)."""
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


# ---------------------------------------------------------------------------------------------
# load_onnx


def load_onnx(source):
    """An ONNX model from ``source``: a path (``str`` / ``os.PathLike``; external data is read
    from its directory), the file's ``bytes``, or an ``onnx.ModelProto`` (copied).

    Returns the ``onnx.ModelProto``, checked with ``onnx.checker.check_model``. Raises
    ``ValueError`` (one line) for a missing or unreadable file, a directory, bytes that are not an
    ONNX model, a model the checker refuses, and non-finite weights: an initializer or a
    tensor-valued node attribute (``Constant``'s value and the like) of a floating-point type
    holding NaN or an infinity (``initializer 'fc1.weight' holds NaN: a model's weights and
    biases must be finite``), or a float attribute of any node doing so (``node 'fc' (Gemm):
    attribute 'alpha' holds NaN: a node's attributes must be finite``).
    """
    import onnx

    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        where = "ONNX model"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        where = "ONNX model bytes"
        model = onnx.ModelProto()
        try:
            model.ParseFromString(bytes(source))
        except Exception as exc:        # protobuf's DecodeError
            raise ValueError(f"cannot read {where}: not an ONNX model "
                             f"({_first_line(exc)})") from None
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = f"ONNX model {str(path)!r}"
        if not path.exists():
            raise ValueError(f"cannot read {where}: no such file")
        if path.is_dir():
            raise ValueError(f"cannot read {where}: it is a directory")
        try:
            model = onnx.load(str(path))
        except OSError as exc:
            raise ValueError(f"cannot read {where}: {exc.strerror or _first_line(exc)}") \
                from None
        except Exception as exc:        # protobuf's DecodeError; a missing external data file
            from google.protobuf.message import DecodeError
            what = "not an ONNX model" if isinstance(exc, DecodeError) else "unreadable"
            raise ValueError(f"cannot read {where}: {what} ({_first_line(exc)})") from None
    else:
        raise ValueError(f"expected a path, bytes or an onnx.ModelProto, not "
                         f"{type(source).__name__}")
    if not model.HasField("graph") or not model.opset_import:
        raise ValueError(f"cannot read {where}: not an ONNX model (no graph or no opset)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:            # onnx.checker.ValidationError and friends
        raise ValueError(f"{where} is not valid ONNX: {_first_line(exc)}") from None
    _check_finite(model)
    return model


def _float_types():
    global _FLOAT_TYPES
    if _FLOAT_TYPES is None:
        from onnx import TensorProto
        _FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16,
                        TensorProto.BFLOAT16}
    return _FLOAT_TYPES


def _nonfinite(tensor):
    """``"NaN"`` / ``"inf"`` / ``"-inf"`` if a float TensorProto holds one, else ``None``."""
    from onnx import numpy_helper
    if tensor.data_type not in _float_types():
        return None
    return _nonfinite_floats(numpy_helper.to_array(tensor))


_FINITE = "a model's weights and biases must be finite"
_FINITE_ATTR = "a node's attributes must be finite"


def _nonfinite_floats(values):
    """``"NaN"`` / ``"inf"`` / ``"-inf"`` if the floats ``values`` hold one, else ``None``."""
    a = np.asarray(values, dtype=np.float64)
    if np.isnan(a).any():
        return "NaN"
    if np.isposinf(a).any():
        return "inf"
    if np.isneginf(a).any():
        return "-inf"
    return None


def _check_finite(model):
    """Refuses a NaN or infinite float initializer, or a node attribute holding one: a tensor
    attribute of a floating-point type (``Constant``'s ``value`` and the like) or a ``FLOAT`` /
    ``FLOATS`` attribute of any node (``Constant``'s ``value_float(s)``, ``Gemm``'s ``alpha`` /
    ``beta``, ``BatchNormalization``'s ``epsilon``, ...). The passes fold such attributes into
    weights, so this is the only place the node and attribute can be named."""
    from onnx import AttributeProto
    graph = model.graph
    for init in graph.initializer:
        bad = _nonfinite(init)
        if bad:
            raise ValueError(f"initializer {init.name!r} holds {bad}: {_FINITE}")
    for node in graph.node:
        for attr in node.attribute:
            bad, why = None, _FINITE_ATTR
            if attr.type == AttributeProto.TENSOR:
                bad, why = _nonfinite(attr.t), _FINITE
            elif attr.type == AttributeProto.TENSORS:
                bad = next(filter(None, map(_nonfinite, attr.tensors)), None)
                why = _FINITE
            elif attr.type == AttributeProto.FLOAT:
                bad = _nonfinite_floats(attr.f)
            elif attr.type == AttributeProto.FLOATS:
                bad = _nonfinite_floats(list(attr.floats))
            if bad:
                why = _FINITE if node.op_type == "Constant" else why     # a Constant is a weight
                raise ValueError(f"{node_label(node)}: attribute {attr.name!r} holds {bad}: {why}")


# ---------------------------------------------------------------------------------------------
# The working representation of the passes


class _Node:
    """A mutable node: ``op``, ``name``, ``inputs``, ``outputs``, ``attrs`` (Python values)."""

    def __init__(self, op, name, inputs, outputs, attrs):
        self.op_type = op
        self.name = name
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = dict(attrs)

    @classmethod
    def from_proto(cls, proto):
        from onnx import helper
        attrs = {}
        for a in proto.attribute:
            value = helper.get_attribute_value(a)
            attrs[a.name] = value.decode() if isinstance(value, bytes) else value
        return cls(proto.op_type, proto.name, proto.input, proto.output, attrs)

    def to_proto(self):
        from onnx import helper
        outputs = list(self.outputs)
        while outputs and not outputs[-1]:
            outputs.pop()
        return helper.make_node(self.op_type, self.inputs, outputs, name=self.name,
                                **self.attrs)

    @property
    def label(self):
        return node_label(self)


class _Work:
    """A graph under rewriting: nodes, constants (numpy), and static shapes of its tensors."""

    def __init__(self, model):
        from onnx import numpy_helper
        graph = model.graph
        self.model = model                       # opset, ir_version, metadata, producer
        self.input = graph.input[0].name
        self.output = graph.output[0].name
        self.consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.nodes = []
        for proto in graph.node:
            node = _Node.from_proto(proto)
            if proto.domain not in ("", "ai.onnx"):
                raise UnsupportedModel(f"{node.label}: op domain {proto.domain!r} is not "
                                       f"supported")
            if node.op_type == "Constant":
                self.consts[node.outputs[0]] = _constant_value(node)
            else:
                self.nodes.append(node)
        self.shapes = {}
        self.refresh()

    # -- names and uses ---------------------------------------------------------------------
    def names(self):
        names = {self.input, self.output, *self.consts}
        for node in self.nodes:
            names.update(node.outputs)
            names.add(node.name)
        return names

    def fresh(self, base):
        names = self.names()
        if base not in names:
            return base
        i = 1
        while f"{base}_{i}" in names:
            i += 1
        return f"{base}_{i}"

    def const(self, base, array):
        """A new initializer holding ``array``, named after ``base``; returns its name."""
        name = self.fresh(base.lstrip("."))
        self.consts[name] = np.ascontiguousarray(array)
        return name

    def consumers(self, name):
        return [n for n in self.nodes if name in n.inputs]

    def producer(self, name):
        for node in self.nodes:
            if name in node.outputs:
                return node
        return None

    def is_data(self, name):
        return bool(name) and name not in self.consts

    def only_use(self, name):
        """Whether ``name`` has exactly one consumer and is not the graph output."""
        return name != self.output and len(self.consumers(name)) == 1

    def bypass(self, node, src, dst):
        """Removes ``node``, whose output ``dst`` equals its input ``src``."""
        self.nodes.remove(node)
        if dst == self.output:
            producer = self.producer(src)
            if producer is None or src == self.input:
                raise UnsupportedModel(f"{node.label}: the graph output is a copy of "
                                       f"{'the input' if src == self.input else 'a constant'}")
            producer.outputs[producer.outputs.index(src)] = dst
            for user in self.nodes:
                user.inputs = [dst if i == src else i for i in user.inputs]
        else:
            for user in self.nodes:
                user.inputs = [src if i == dst else i for i in user.inputs]

    # -- models -----------------------------------------------------------------------------
    def to_model(self):
        import onnx
        from onnx import helper, numpy_helper
        src = self.model.graph
        used = {i for n in self.nodes for i in n.inputs}
        inits = [numpy_helper.from_array(np.asarray(a), name)
                 for name, a in self.consts.items() if name in used]
        output = onnx.ValueInfoProto()
        output.CopyFrom(src.output[0])
        output.name = self.output
        output.type.tensor_type.ClearField("shape")
        graph = helper.make_graph([n.to_proto() for n in self.nodes], src.name,
                                  [src.input[0]], [output], inits)
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        model.graph.CopyFrom(graph)
        return model

    def refresh(self):
        """Re-runs shape inference: ``self.shapes`` maps tensor names to static shapes."""
        model = _infer(self.to_model(), strict=False)
        graph = model.graph
        self.shapes = {name: a.shape for name, a in self.consts.items()}
        for v in [*graph.input, *graph.value_info, *graph.output]:
            shape = static_shape(v)
            if shape is not None:
                self.shapes[v.name] = shape

    def shape(self, name, node):
        if name not in self.shapes:
            raise UnsupportedModel(f"{node.label}: the shape of {name!r} is not static")
        return tuple(self.shapes[name])


def static_shape(value_info):
    """The static shape (a tuple of ints) of an ONNX ``ValueInfoProto``, or ``None`` when a
    dimension is symbolic or unknown."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(d.dim_value)
    return tuple(dims)


def _constant_value(node):
    from onnx import numpy_helper
    a = node.attrs
    if "value" in a:
        return numpy_helper.to_array(a["value"])
    if "value_float" in a:
        return np.array(a["value_float"], dtype=np.float32)
    if "value_floats" in a:
        return np.array(a["value_floats"], dtype=np.float32)
    if "value_int" in a:
        return np.array(a["value_int"], dtype=np.int64)
    if "value_ints" in a:
        return np.array(a["value_ints"], dtype=np.int64)
    raise UnsupportedModel(f"{node.label}: only numeric constants are supported "
                           f"(attributes {sorted(a)})")


def _infer(model, *, strict):
    import onnx
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=strict, data_prop=True)
    except Exception as exc:            # onnx.shape_inference.InferenceError
        raise UnsupportedModel(f"shape inference fails: {_first_line(exc)}") from None


# ---------------------------------------------------------------------------------------------
# normalize


def normalize(model):
    """The canonical float form (see the module docstring) of an ONNX model.

    ``model``: an ``onnx.ModelProto`` or anything :func:`load_onnx` reads. Returns a new
    ``onnx.ModelProto`` (the argument is not changed) whose float32 outputs equal the source's
    for a batch of 1 within float32 rounding. Raises ``ValueError`` for a broken model and
    :class:`UnsupportedModel` for one the canonical form cannot express (one line naming the
    node and op, or the input).
    """
    model = load_onnx(model)
    _fix_batch(model)
    model = _infer(model, strict=False)
    _check_float32(model)
    model = _ort_basic(model)
    work = _Work(model)
    _drop_noops(work)
    work.refresh()
    _columns(work)
    work.refresh()
    _linear_layers(work)
    work.refresh()
    _fold_into_linear(work)
    _reduce_means(work)
    work.refresh()
    _flattens(work)
    _prune(work)
    out = _infer(work.to_model(), strict=True)
    import onnx
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as exc:            # a bug of ours: say so in one line
        raise UnsupportedModel(f"the normalized model is not valid ONNX: "
                               f"{_first_line(exc)}") from None
    check_canonical(out)
    return out


def _fix_batch(model):
    """Fixes the batch dimension (the first) of the input and output to 1, in place; drops
    initializers listed as graph inputs (IR < 4 lists them; the IR version becomes at least 4)
    and stale ``value_info``."""
    from onnx import TensorProto
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in inits]
    if len(inputs) != 1:
        names = ", ".join(repr(v.name) for v in inputs)
        raise UnsupportedModel(f"the model has {len(inputs)} inputs ({names}): one is "
                               f"supported")
    if len(graph.output) != 1:
        names = ", ".join(repr(v.name) for v in graph.output)
        raise UnsupportedModel(f"the model has {len(graph.output)} outputs ({names}): one is "
                               f"supported")
    del graph.input[:]
    graph.input.append(inputs[0])
    # IR < 4 lists initializers as graph inputs, and its shape inference reads only those: IR 4
    # lets initializers stand alone (onnx/docs/IR.md, "Graphs")
    model.ir_version = max(model.ir_version, 4)
    value = graph.input[0]
    t = value.type.tensor_type
    if not value.type.HasField("tensor_type") or t.elem_type != TensorProto.FLOAT:
        kind = (TensorProto.DataType.Name(t.elem_type) if value.type.HasField("tensor_type")
                else "not a tensor")
        raise UnsupportedModel(f"input {value.name!r} is {kind}: only float32 inputs are "
                               f"supported")
    if not t.HasField("shape") or len(t.shape.dim) not in (2, 4):
        rank = len(t.shape.dim) if t.HasField("shape") else "unknown"
        raise UnsupportedModel(f"input {value.name!r} has rank {rank}: only (batch, features) "
                               f"or (batch, channels, height, width) inputs are supported")
    for axis, d in enumerate(t.shape.dim):
        if axis == 0:
            if d.HasField("dim_value") and d.dim_value not in (0, 1):
                raise UnsupportedModel(f"input {value.name!r} has a fixed batch of "
                                       f"{d.dim_value}: only 1 or a symbolic batch is supported")
            d.Clear()
            d.dim_value = 1
        elif not d.HasField("dim_value") or d.dim_value < 1:
            what = f"symbolic dimension {d.dim_param!r}" if d.dim_param else "unknown dimension"
            raise UnsupportedModel(f"input {value.name!r} has a {what} at axis {axis}: only "
                                   f"the batch dimension (axis 0) may be symbolic")
    output = graph.output[0]
    if output.type.tensor_type.elem_type not in (0, TensorProto.FLOAT):
        kind = TensorProto.DataType.Name(output.type.tensor_type.elem_type)
        raise UnsupportedModel(f"output {output.name!r} is {kind}: only float32 outputs are "
                               f"supported")
    output.type.tensor_type.ClearField("shape")
    del graph.value_info[:]


#: Floating-point element types other than float32, by ``TensorProto`` name, and what to call
#: them (the float8 / float4 types exist in newer onnx releases only).
_OTHER_FLOATS = {"DOUBLE": "float64", "FLOAT16": "float16", "BFLOAT16": "bfloat16",
                 "FLOAT8E4M3FN": "float8", "FLOAT8E4M3FNUZ": "float8", "FLOAT8E5M2": "float8",
                 "FLOAT8E5M2FNUZ": "float8", "FLOAT4E2M1": "float4"}


def _check_float32(model):
    """Refuses a model whose data (the tensors computed from the graph input) is of a float type
    other than float32 anywhere: e.g. ``model.double()`` exported behind a float32 interface
    (``Cast`` to double, float64 weights, ``Cast`` back), or a float16 one. One line naming the
    first node that produces such a tensor. The canonical form and the int8 quantizer are
    float32 throughout, and silently computing in float32 instead would change the outputs by
    more than float32 rounding (float16) or need every dtype-carrying attribute rewritten
    (``Cast``, ``ConstantOfShape``, ...); refusing is exact. Constant subgraphs (float16 weights
    cast to float32) are not data and stay accepted: onnxruntime folds them.
    ``model``: after shape inference (element types in ``value_info``). Raises
    :class:`UnsupportedModel`."""
    from onnx import TensorProto
    others = {getattr(TensorProto, name): text for name, text in _OTHER_FLOATS.items()
              if hasattr(TensorProto, name)}
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*graph.value_info, *graph.output] if v.type.HasField("tensor_type")}
    data = {graph.input[0].name}
    for node in graph.node:                 # topological order: onnx.checker enforces it
        if not any(i in data for i in node.input):
            continue
        data.update(o for o in node.output if o)
        for out in node.output:
            elem = types.get(out, 0)
            if not elem and node.op_type == "Cast":     # type unknown: the Cast says it
                elem = next((a.i for a in node.attribute if a.name == "to"), 0)
            if elem in others:
                kind = TensorProto.DataType.Name(elem)
                raise UnsupportedModel(
                    f"{node_label(node)}: output {out!r} is {kind} ({others[elem]}): only float32 "
                    f"models are supported (export the model in float32, e.g. model.float() "
                    f"in PyTorch)")


def _ort_basic(model):
    """onnxruntime's ``ORT_ENABLE_BASIC`` optimizations on CPU, the result read back."""
    import onnx
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        try:
            ort.InferenceSession(model.SerializeToString(), options,
                                 providers=["CPUExecutionProvider"])
        except Exception as exc:        # onnxruntime's Fail / InvalidGraph / NotImplemented
            raise UnsupportedModel(f"onnxruntime cannot run the model: "
                                   f"{_first_line(exc)}") from None
        optimized = onnx.load(options.optimized_model_filepath)
    # onnxruntime declares its own domains (com.microsoft, ...) and names itself the producer:
    # the model's own header back (a node of another domain is refused later)
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version",
                  "doc_string"):
        setattr(optimized, field, getattr(model, field))
    del optimized.opset_import[:]
    optimized.opset_import.extend(model.opset_import)
    del optimized.metadata_props[:]
    optimized.metadata_props.extend(model.metadata_props)
    return optimized


# -- pass: no-ops -----------------------------------------------------------------------------


def _drop_noops(work):
    """Removes Identity, inference-mode Dropout, identity Transposes and shape ops (Flatten,
    Reshape, Squeeze, Unsqueeze) whose output has their input's shape; a ``Clip`` with min 0 and
    no max becomes Relu (onnxruntime's basic level removes a Clip only right after a Relu).
    onnxruntime's basic level removes the first two itself except where, e.g., one feeds the
    graph output; this pass takes the rest. A Dropout with ``training_mode`` true or not
    constant, or whose mask output is used, is refused (ONNX Dropout-13: it is the identity
    only in inference mode)."""
    for node in list(work.nodes):
        op = node.op_type
        if op == "Identity":
            work.bypass(node, node.inputs[0], node.outputs[0])
        elif op == "Dropout":
            if len(node.inputs) > 2 and node.inputs[2]:
                mode = work.consts.get(node.inputs[2])
                if mode is None:
                    raise UnsupportedModel(f"{node.label}: training_mode is not a constant")
                if bool(np.asarray(mode).reshape(-1)[0]):
                    raise UnsupportedModel(f"{node.label}: training mode (training_mode=True)"
                                           f" is not supported: export in inference mode")
            if len(node.outputs) > 1 and node.outputs[1] and (
                    work.consumers(node.outputs[1]) or node.outputs[1] == work.output):
                raise UnsupportedModel(f"{node.label}: its mask output is used")
            work.bypass(node, node.inputs[0], node.outputs[0])
        elif op == "Transpose" and list(node.attrs.get("perm", [1, 0])) == list(
                range(len(node.attrs.get("perm", [1, 0])))):
            work.bypass(node, node.inputs[0], node.outputs[0])
        elif op == "Clip" and _clip_is_relu(work, node):
            node.op_type, node.inputs, node.attrs = "Relu", node.inputs[:1], {}
        elif op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze") and work.is_data(
                node.inputs[0]):
            src, dst = node.inputs[0], node.outputs[0]
            if src in work.shapes and work.shapes.get(dst) == work.shapes[src]:
                work.bypass(node, src, dst)


def _clip_is_relu(work, node):
    """Whether a Clip is ``max(x, 0)``: min 0 and no max (ONNX Clip-11+: min and max are optional
    inputs; Clip-6: attributes, max defaulting to the largest float)."""
    if "min" in node.attrs or "max" in node.attrs:
        return node.attrs.get("min") == 0.0 and node.attrs.get("max", 3.4028234663852886e38) \
            >= 3.4028234663852886e38
    lo = node.inputs[1] if len(node.inputs) > 1 else ""
    hi = node.inputs[2] if len(node.inputs) > 2 else ""
    return bool(lo) and lo in work.consts and not hi and \
        np.asarray(work.consts[lo]).size == 1 and float(work.consts[lo]) == 0.0


# -- pass: column vectors ---------------------------------------------------------------------


def _columns(work):
    """Rewrites computations on a transposed batch-1 vector: ``Transpose(perm [1, 0])`` of a
    ``(1, K)`` tensor gives the column ``(K, 1)``; ``MatMul(W (N, K), column)`` becomes
    ``Gemm(row, W, 0, transB=1)`` on the row (``W @ x.T == (x @ W.T).T``); ``Add`` / ``Sub`` of
    a constant broadcasting to ``(N, 1)`` and ``Relu`` go to the row; a Transpose, Flatten or
    flattening Reshape of a column gives its row back, and so does a Gemm's ``transA=1`` on a
    column. Any other use of a column is refused. onnxruntime's basic level keeps all of these
    (checked on :func:`pim_macro.tb.harness.onnx_build.transposed_matmul`), except that its
    GemmTransposeFusion writes ``MatMul(W, Transpose(x)) + b`` as ``Gemm(W, x, b,
    transB=1)``, a column too (:func:`_gemm_to_row`), and ``Transpose(column)`` into a Gemm
    as ``transA=1``."""
    rows = {}                                   # column tensor -> its row tensor (1, n)
    for node in list(work.nodes):
        op = node.op_type
        cols = [i for i in node.inputs if i in rows]
        if op == "Transpose" and not cols and work.is_data(node.inputs[0]):
            shape = work.shape(node.inputs[0], node)
            if len(shape) == 2 and shape[0] == 1 and list(node.attrs.get("perm", [1, 0])) \
                    == [1, 0]:
                rows[node.outputs[0]] = node.inputs[0]
                work.nodes.remove(node)
                continue
        if op == "Gemm" and node.inputs[0] in work.consts:
            work.nodes[work.nodes.index(node)] = _gemm_to_row(work, node, rows)
            continue
        if not cols:
            continue
        if op == "Gemm" and cols == node.inputs[:1] and node.attrs.get("transA", 0):
            node.inputs[0] = rows[node.inputs[0]]             # (column)^T: the row
            del node.attrs["transA"]
            continue
        out = node.outputs[0]
        if op in ("Transpose", "Flatten", "Reshape", "Squeeze") and work.shapes.get(out) \
                and len(work.shapes[out]) == 2 and work.shapes[out][0] == 1:
            row = rows[node.inputs[0]]
            work.bypass(node, row, out)
            if out == work.output:                  # the row's producer now writes ``out``
                rows.update({c: out for c, r in rows.items() if r == row})
            continue
        index = work.nodes.index(node)
        row = work.fresh(f"{out}_row")
        if op == "MatMul" and node.inputs[1] in rows and node.inputs[0] in work.consts:
            w = np.asarray(work.consts[node.inputs[0]], dtype=np.float32)
            if w.ndim != 2:
                raise UnsupportedModel(f"{node.label}: a {w.ndim}-D constant times a column "
                                       f"vector is not supported")
            new = _Node("Gemm", node.name, [rows[node.inputs[1]],
                                            work.const(f"{node.name}.weight", w),
                                            work.const(f"{node.name}.bias",
                                                       np.zeros(w.shape[0], np.float32))],
                        [row], {"transB": 1})
        elif op in ("Add", "Sub") and len(cols) == 1 and any(
                i in work.consts for i in node.inputs):
            col, = cols
            const = next(i for i in node.inputs if i in work.consts)
            n = work.shape(col, node)[0]
            c = np.asarray(work.consts[const], dtype=np.float32)
            try:
                if np.broadcast_shapes(c.shape, (n, 1)) != (n, 1):
                    raise ValueError
                c = np.broadcast_to(c, (n, 1)).reshape(1, n)
            except ValueError:
                raise UnsupportedModel(f"{node.label}: a constant of shape {c.shape} with a "
                                       f"column vector ({n}, 1) is not supported") from None
            if op == "Sub" and node.inputs[0] == const:      # c - x: not a row op we keep
                raise UnsupportedModel(f"{node.label}: constant minus a column vector is not "
                                       f"supported")
            new = _Node(op, node.name, [rows[col], work.const(f"{const}_row", c)], [row], {})
        elif op == "Relu":
            new = _Node("Relu", node.name, [rows[cols[0]]], [row], {})
        else:
            raise UnsupportedModel(f"{node.label}: a transposed (column) vector input is not "
                                   f"supported")
        work.nodes[index] = new
        rows[out] = row
    if work.output in rows:
        raise UnsupportedModel(f"the graph output {work.output!r} is a column vector (n, 1): "
                               f"only a row (1, n) is supported")


def _gemm_to_row(work, node, rows):
    """``Gemm(A const, B, C)`` = ``alpha * A' @ B' + beta * C``, B' a column: the data row
    ``(1, K)`` with ``transB=1`` or a column of ``rows``. onnxruntime's GemmTransposeFusion
    writes it for ``MatMul(W, Transpose(x)) + b`` (seen). Returns a Gemm on the row, recorded in
    ``rows`` as the column's row."""
    a = node.attrs
    const, data = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else ""
    w = np.asarray(work.consts[const], dtype=np.float64)
    if w.ndim != 2 or not work.is_data(data) or (c and c not in work.consts):
        raise UnsupportedModel(f"{node.label}: only a Gemm of a constant matrix by a vector is "
                               f"supported with the constant first")
    w = (w.T if a.get("transA", 0) else w) * float(a.get("alpha", 1.0))
    n = w.shape[0]
    if a.get("transB", 0):
        if data in rows or work.shape(data, node) != (1, w.shape[1]):
            raise UnsupportedModel(f"{node.label}: B must be a (1, {w.shape[1]}) row with "
                                   f"transB=1")
        row_in = data
    elif data in rows:
        row_in = rows[data]
    else:
        raise UnsupportedModel(f"{node.label}: a constant times a matrix is not supported")
    bias = np.zeros(n)
    if c:
        cv = np.asarray(work.consts[c], dtype=np.float64) * float(a.get("beta", 1.0))
        try:
            if np.broadcast_shapes(cv.shape, (n, 1)) != (n, 1):
                raise ValueError
            bias = np.broadcast_to(cv, (n, 1)).reshape(n)
        except ValueError:
            raise UnsupportedModel(f"{node.label}: C of shape {cv.shape} does not broadcast "
                                   f"to ({n}, 1)") from None
    row = work.fresh(f"{node.outputs[0]}_row")
    rows[node.outputs[0]] = row
    return _Node("Gemm", node.name, [row_in, work.const(f"{node.name}.weight",
                                                        w.astype(np.float32)),
                                     work.const(f"{node.name}.bias", bias.astype(np.float32))],
                 [row], {"transB": 1})


# -- pass: Gemm, MatMul, Conv and pooling attributes ------------------------------------------


def _pads(node, in_hw, kernel, strides, dilations):
    """Explicit ``[top, left, bottom, right]`` pads of a Conv / pool node (ONNX spec:
    ``auto_pad`` SAME_UPPER / SAME_LOWER give ``ceil(in / stride)`` outputs, the odd padding at
    the end / beginning; VALID none; NOTSET the ``pads`` attribute, default 0)."""
    auto_pad = node.attrs.pop("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4:
            raise UnsupportedModel(f"{node.label}: pads {pads} are not 2-D")
        return pads
    if auto_pad == "VALID":
        return [0, 0, 0, 0]
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedModel(f"{node.label}: auto_pad {auto_pad!r} is not supported")
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small = total // 2
        if auto_pad == "SAME_UPPER":
            begin.append(small)
            end.append(total - small)
        else:
            begin.append(total - small)
            end.append(small)
    return begin + end


def _spatial(work, node):
    """The ``(C, H, W)`` of a node's 4-D data input."""
    shape = work.shape(node.inputs[0], node)
    if len(shape) != 4:
        raise UnsupportedModel(f"{node.label}: a {len(shape)}-D input {shape} is not "
                               f"supported: only (1, C, H, W)")
    return shape[1:]


def _linear_layers(work):
    """MatMul into Gemm, Gemm into canonical attributes, Conv and pool attributes explicit
    (see the module docstring; onnxruntime writes none of these)."""
    for index, node in enumerate(list(work.nodes)):
        op = node.op_type
        if op == "MatMul":
            work.nodes[index] = _matmul(work, node)
        elif op == "Gemm":
            work.nodes[index] = _gemm(work, node)
        elif op == "Conv":
            _conv(work, node)
        elif op in ("MaxPool", "AveragePool"):
            _pool(work, node)
        elif op == "GlobalAveragePool":
            _spatial(work, node)


def _matmul(work, node):
    x, w = node.inputs
    if not work.is_data(x) or w not in work.consts:
        raise UnsupportedModel(f"{node.label}: only a MatMul of data by a constant matrix is "
                               f"supported")
    xs = work.shape(x, node)
    w = np.asarray(work.consts[w], dtype=np.float32)
    if len(xs) != 2 or xs[0] != 1 or w.ndim != 2:
        raise UnsupportedModel(f"{node.label}: a MatMul of {xs} by {w.shape} is not supported: "
                               f"only (1, K) by (K, N)")
    return _Node("Gemm", node.name, [x, work.const(f"{node.name}.weight", w.T),
                                     work.const(f"{node.name}.bias",
                                                np.zeros(w.shape[1], np.float32))],
                 node.outputs, {"transB": 1})


def _gemm(work, node):
    a = node.attrs
    x, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else ""
    if a.get("transA", 0):
        raise UnsupportedModel(f"{node.label}: transA=1 is not supported")
    if not work.is_data(x) or b not in work.consts or (c and c not in work.consts):
        raise UnsupportedModel(f"{node.label}: only a Gemm of data by constant weights and "
                               f"bias is supported")
    xs = work.shape(x, node)
    if len(xs) != 2 or xs[0] != 1:
        raise UnsupportedModel(f"{node.label}: input shape {xs} is not supported: only (1, K)")
    w = np.asarray(work.consts[b], dtype=np.float64)
    w = w if a.get("transB", 0) else w.T
    n = w.shape[0]
    w = w * float(a.get("alpha", 1.0))
    bias = np.zeros(n)
    if c:
        cv = np.asarray(work.consts[c], dtype=np.float64) * float(a.get("beta", 1.0))
        try:
            bias = np.broadcast_to(cv, (1, n)).reshape(n)
        except ValueError:
            raise UnsupportedModel(f"{node.label}: bias of shape {cv.shape} does not broadcast "
                                   f"to (1, {n})") from None
    wb, cb = work.consts[b], work.consts.get(c)
    if (set(a) <= {"alpha", "beta", "transA", "transB"} and a.get("alpha", 1.0) == 1.0
            and a.get("beta", 1.0) == 1.0 and a.get("transB", 0) == 1 and cb is not None
            and wb.dtype == cb.dtype == np.float32 and cb.shape == (n,)):
        return _Node("Gemm", node.name, [x, b, c], node.outputs, {"transB": 1})
    return _Node("Gemm", node.name, [x, work.const(f"{node.name}.weight", w.astype(np.float32)),
                                     work.const(f"{node.name}.bias", bias.astype(np.float32))],
                 node.outputs, {"transB": 1})


def _conv(work, node):
    a = node.attrs
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else ""
    c, h, wd = _spatial(work, node)
    if w not in work.consts or (b and b not in work.consts):
        raise UnsupportedModel(f"{node.label}: only constant weights and bias are supported")
    weight = work.consts[w]
    if weight.ndim != 4:
        raise UnsupportedModel(f"{node.label}: a {weight.ndim - 2}-D convolution is not "
                               f"supported")
    out_ch = weight.shape[0]
    kernel = list(a.get("kernel_shape", weight.shape[2:]))
    dilations = list(a.get("dilations", [1, 1]))
    strides = list(a.get("strides", [1, 1]))
    group = int(a.get("group", 1))
    if dilations != [1, 1]:
        raise UnsupportedModel(f"{node.label}: dilation {dilations} is not supported")
    if group != 1 and not (group == c and out_ch % c == 0):
        raise UnsupportedModel(f"{node.label}: grouped convolution (group {group} of {c} "
                               f"input channels) is not supported: only group 1 or depthwise "
                               f"(group = input channels)")
    pads = _pads(node, (h, wd), kernel, strides, dilations)
    if not b:
        b = work.const(f"{node.name}.bias", np.zeros(out_ch, np.float32))
    node.inputs = [x, w, b]
    node.attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads,
                  "dilations": [1, 1], "group": group}


def _pool(work, node):
    a = node.attrs
    _, h, wd = _spatial(work, node)
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1, 1]))
    dilations = list(a.get("dilations", [1, 1]))
    if len(kernel) != 2:
        raise UnsupportedModel(f"{node.label}: a {len(kernel)}-D pool is not supported")
    if dilations != [1, 1]:
        raise UnsupportedModel(f"{node.label}: dilation {dilations} is not supported")
    if len(node.outputs) > 1 and node.outputs[1]:
        if work.consumers(node.outputs[1]) or node.outputs[1] == work.output:
            raise UnsupportedModel(f"{node.label}: its Indices output is not supported")
        node.outputs = node.outputs[:1]
    pads = _pads(node, (h, wd), kernel, strides, dilations)
    if a.get("ceil_mode", 0):
        for size, k, s, p0, p1 in zip((h, wd), kernel, strides, pads[:2], pads[2:]):
            if (size + p0 + p1 - k) % s:
                raise UnsupportedModel(f"{node.label}: ceil_mode=1 is not supported (here it "
                                       f"gives a larger output than floor)")
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads}
    if node.op_type == "AveragePool":
        attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
    node.attrs = attrs


# -- pass: folding BatchNormalization and constant arithmetic into Gemm / Conv ----------------


def _fold_into_linear(work):
    """Folds BatchNormalization and a constant Add / Sub / Mul / Div -- a per-channel affine
    map ``y = scale * x + shift`` -- into the Gemm or Conv before it (``W' = scale * W``,
    ``B' = scale * B + shift``) or, failing that, after it, as the first layer's input
    normalization does (``W' = W * scale`` along the input axis, ``B' = B + W @ shift``; for a
    Conv only without padding, where every window sees the shift). onnxruntime's basic level
    folds only into a Conv before (Conv + BatchNormalization, Conv + Add, Conv + Mul fusions);
    after a Gemm it leaves them (checked on :func:`pim_macro.tb.harness.onnx_build.bn1d_mlp`).
    Any other BatchNormalization or constant arithmetic is refused."""
    pending = []
    for node in list(work.nodes):
        affine = _node_affine(work, node)
        if affine is None:
            continue
        y, scale, shift = affine
        layer = work.producer(y)
        if layer is None or layer.op_type not in ("Gemm", "Conv") or not work.only_use(y):
            pending.append((node, affine))
            continue
        channels = len(scale)
        w = np.asarray(work.consts[layer.inputs[1]], dtype=np.float64)
        b = np.asarray(work.consts[layer.inputs[2]], dtype=np.float64)
        w = w * scale.reshape((channels,) + (1,) * (w.ndim - 1))
        _set_weights(work, layer, w, b * scale + shift)
        work.bypass(node, y, node.outputs[0])
    for node, (y, scale, shift) in reversed(pending):    # the last before the layer first
        out = node.outputs[0]
        users = work.consumers(out)
        layer = users[0] if len(users) == 1 and out != work.output else None
        if layer is None or layer.op_type not in ("Gemm", "Conv") or layer.inputs[0] != out \
                or (layer.op_type == "Conv" and any(layer.attrs["pads"])):
            what = "BatchNormalization" if node.op_type == "BatchNormalization" else \
                f"a constant {node.op_type}"
            raise UnsupportedModel(f"{node.label}: {what} is supported only next to a Gemm, "
                                   f"MatMul or Conv (whose weights it is folded into: directly "
                                   f"after one, or directly before one without padding)")
        w = np.asarray(work.consts[layer.inputs[1]], dtype=np.float64)
        b = np.asarray(work.consts[layer.inputs[2]], dtype=np.float64)
        if layer.op_type == "Gemm":                       # W (N, K): input features along K
            b = b + w @ shift
            w = w * scale[None, :]
        elif layer.attrs["group"] == 1:                   # W (O, C, kh, kw)
            b = b + (w * shift[None, :, None, None]).sum(axis=(1, 2, 3))
            w = w * scale[None, :, None, None]
        else:                                             # depthwise: output o reads o // m
            channel = np.arange(w.shape[0]) // (w.shape[0] // len(scale))
            b = b + w.sum(axis=(1, 2, 3)) * shift[channel]
            w = w * scale[channel][:, None, None, None]
        _set_weights(work, layer, w, b)
        work.bypass(node, y, out)


def _set_weights(work, layer, w, b):
    layer.inputs[1] = work.const(f"{layer.name}.weight", w.astype(np.float32))
    layer.inputs[2] = work.const(f"{layer.name}.bias", b.astype(np.float32))


def _node_affine(work, node):
    """``(x, scale, shift)`` with the node's output ``= scale * x + shift`` per channel (axis 1;
    float64 arrays) for a BatchNormalization or an Add / Sub / Mul / Div of a data tensor and a
    constant; ``None`` for any other node (e.g. an Add of two branches)."""
    op = node.op_type
    if op == "BatchNormalization":
        x = node.inputs[0]
        return (x, *_bn_affine(work, node, work.shape(x, node)[1]))
    if op not in ("Add", "Sub", "Mul", "Div") or len(node.inputs) != 2:
        return None
    consts = [i for i in node.inputs if i in work.consts]
    if len(consts) != 1:
        return None
    x = next(i for i in node.inputs if i not in work.consts)
    shape = work.shape(x, node)
    c = _per_channel(work, node, consts[0], shape)
    one, zero = np.ones_like(c), np.zeros_like(c)
    first = node.inputs[0] == x
    if op == "Add":
        return x, one, c
    if op == "Sub":
        return (x, one, -c) if first else (x, -one, c)
    if op == "Mul":
        return x, c, zero
    if not first:
        raise UnsupportedModel(f"{node.label}: a constant divided by a tensor is not supported")
    if (c == 0).any():
        raise UnsupportedModel(f"{node.label}: division by zero")
    return x, 1.0 / c, zero


def _bn_affine(work, node, channels):
    """BatchNormalization's inference affine map per channel (ONNX BatchNormalization-15:
    ``Y = (X - input_mean) / sqrt(input_var + epsilon) * scale + B``)."""
    if node.attrs.get("training_mode", 0):
        raise UnsupportedModel(f"{node.label}: training_mode=1 is not supported")
    if any(o and (work.consumers(o) or o == work.output) for o in node.outputs[1:]):
        raise UnsupportedModel(f"{node.label}: its running mean / variance outputs are used")
    params = node.inputs[1:5]
    if len(params) != 4 or any(p not in work.consts for p in params):
        raise UnsupportedModel(f"{node.label}: scale, B, mean and var must be constants")
    scale, bias, mean, var = (np.asarray(work.consts[p], dtype=np.float64).reshape(-1)
                              for p in params)
    if any(len(v) != channels for v in (scale, bias, mean, var)):
        raise UnsupportedModel(f"{node.label}: parameters are not per channel ({channels})")
    eps = float(node.attrs.get("epsilon", 1e-5))
    if (var + eps <= 0).any():
        raise UnsupportedModel(f"{node.label}: var + epsilon is not positive")
    s = scale / np.sqrt(var + eps)
    return s, bias - mean * s


def _per_channel(work, node, const, shape):
    """A constant operand broadcast over ``shape`` (``(1, N)`` or ``(1, C, H, W)``) as one value
    per channel (axis 1); refused if it varies along any other axis or widens the shape."""
    c = np.asarray(work.consts[const], dtype=np.float64)
    try:
        if tuple(np.broadcast_shapes(c.shape, shape)) != tuple(shape):
            raise ValueError
        full = np.broadcast_to(c, shape)
    except ValueError:
        raise UnsupportedModel(f"{node.label}: a constant of shape {c.shape} does not "
                               f"broadcast to {tuple(shape)}") from None
    per = full[(0, slice(None)) + (0,) * (len(shape) - 2)]
    if not np.array_equal(full, np.broadcast_to(
            per.reshape((1, -1) + (1,) * (len(shape) - 2)), shape)):
        raise UnsupportedModel(f"{node.label}: a constant that varies within a channel is not "
                               f"supported")
    return per


# -- pass: flattens ---------------------------------------------------------------------------


_RESHAPES = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose")


def _is_reshape(work, node):
    """Whether ``node`` only reshapes a data tensor, keeping its row-major order: Flatten,
    Reshape, Squeeze, Unsqueeze, or a Transpose that keeps the order of the axes longer than 1
    (any other Transpose of data is refused)."""
    if node.op_type not in _RESHAPES or not work.is_data(node.inputs[0]):
        return False
    if node.op_type == "Transpose":
        shape = work.shape(node.inputs[0], node)
        perm = list(node.attrs.get("perm", range(len(shape))[::-1]))
        kept = [p for p in perm if shape[p] != 1]
        if kept != sorted(kept):
            raise UnsupportedModel(f"{node.label}: a {len(shape)}-D Transpose (perm {perm}) of "
                                   f"{shape} is not supported")
    return True


def _flattens(work):
    """Flatten / Reshape / Squeeze / Unsqueeze / order-keeping Transpose of data to
    ``(1, n)``: the canonical ``Reshape(X, [1, n])`` (row-major order is unchanged by any of
    them; a chain of them is one reshape of the first one's input); one that keeps the shape
    is dropped; any other is refused (e.g. an unflattening ``(1, n) -> (1, C, H, W)``).
    onnxruntime keeps Flatten, and writes a folded Reshape's shape with its ``-1``."""
    reshapes = [n for n in work.nodes if _is_reshape(work, n)]
    for node in reshapes:                       # topological order: chains collapse fully
        producer = work.producer(node.inputs[0])
        if any(producer is r for r in reshapes):
            node.inputs[0] = producer.inputs[0]
    _prune(work)                                # the intermediates nothing uses any more
    for node in list(work.nodes):
        if not any(node is r for r in reshapes):
            continue
        src, dst = node.inputs[0], node.outputs[0]
        in_shape = work.shape(src, node)
        out_shape = work.shapes.get(dst)
        if out_shape is None:
            raise UnsupportedModel(f"{node.label}: its output shape is not static")
        if out_shape == in_shape:
            work.bypass(node, src, dst)
        elif len(out_shape) == 2 and out_shape[0] == 1:
            shape = work.const(f"{node.name or dst}.shape", np.array(out_shape, dtype=np.int64))
            work.nodes[work.nodes.index(node)] = _Node("Reshape", node.name, [src, shape],
                                                       [dst], {})
        else:
            raise UnsupportedModel(f"{node.label}: a reshape of {in_shape} to {out_shape} is "
                                   f"not supported: only flattening to (1, n)")


def _reduce_means(work):
    """``ReduceMean`` over the two spatial axes of a ``(1, C, H, W)`` tensor (PyTorch's
    ``x.mean((2, 3))``) becomes ``GlobalAveragePool``, followed with ``keepdims=0`` by a
    Reshape to ``(1, C)`` (ONNX ReduceMean: axes an attribute up to opset 17, an input from 18;
    keepdims defaults to 1). onnxruntime's basic level keeps ReduceMean."""
    for node in list(work.nodes):
        if node.op_type != "ReduceMean" or not work.is_data(node.inputs[0]):
            continue
        shape = work.shape(node.inputs[0], node)
        axes = node.attrs.get("axes")
        if len(node.inputs) > 1 and node.inputs[1]:
            if node.inputs[1] not in work.consts:
                raise UnsupportedModel(f"{node.label}: axes are not constant")
            axes = work.consts[node.inputs[1]].tolist()
        axes = sorted(a % len(shape) for a in axes) if axes is not None else None
        if len(shape) != 4 or axes != [2, 3]:
            raise UnsupportedModel(f"{node.label}: only a mean over the spatial axes [2, 3] of "
                                   f"a (1, C, H, W) tensor is supported, not axes {axes} of "
                                   f"{shape}")
        index = work.nodes.index(node)
        out = node.outputs[0]
        if node.attrs.get("keepdims", 1):
            work.nodes[index] = _Node("GlobalAveragePool", node.name, node.inputs[:1], [out], {})
            continue
        pooled = work.fresh(f"{out}_pooled")
        shape_name = work.const(f"{node.name or out}.shape", np.array([1, shape[1]], np.int64))
        work.nodes[index:index + 1] = [
            _Node("GlobalAveragePool", node.name, node.inputs[:1], [pooled], {}),
            _Node("Reshape", work.fresh(f"{node.name}_flatten"), [pooled, shape_name], [out], {})]


def _prune(work):
    """Drops nodes nothing uses and sorts the rest topologically (Kahn's algorithm)."""
    needed = {work.output}
    for node in reversed(work.nodes):
        if any(o in needed for o in node.outputs):
            needed.update(i for i in node.inputs if i)
    nodes = [n for n in work.nodes if any(o in needed for o in n.outputs)]
    ready = {work.input, *work.consts}
    order = []
    while nodes:
        node = next((n for n in nodes if all(i in ready for i in n.inputs if i)), None)
        if node is None:
            raise UnsupportedModel(f"{nodes[0].label}: the graph is cyclic or incomplete")
        order.append(node)
        ready.update(node.outputs)
        nodes.remove(node)
    work.nodes = order


# ---------------------------------------------------------------------------------------------
# check_canonical


def check_canonical(model):
    """Checks that ``model`` (an ``onnx.ModelProto``) is in the canonical form of the module
    docstring. Returns ``None``; raises :class:`UnsupportedModel` with one line naming the node
    (or the input / output / initializer) that is not."""
    from onnx import TensorProto, numpy_helper
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    if graph.sparse_initializer:
        raise UnsupportedModel("sparse initializers are not canonical")
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise UnsupportedModel(f"the graph has {len(graph.input)} inputs and "
                               f"{len(graph.output)} outputs: canonical is one of each")
    for role, v in (("input", graph.input[0]), ("output", graph.output[0])):
        if v.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise UnsupportedModel(f"graph {role} {v.name!r} is not float32")
        shape = static_shape(v)
        if shape is None or not shape or shape[0] != 1 or min(shape) < 1:
            raise UnsupportedModel(f"graph {role} {v.name!r} has no static batch-1 shape")
    in_shape = static_shape(graph.input[0])
    if len(in_shape) not in (2, 4):
        raise UnsupportedModel(f"graph input {graph.input[0].name!r} has shape {in_shape}: "
                               f"canonical is (1, K) or (1, C, H, W)")
    for name, a in inits.items():
        if a.dtype == np.float32:
            if not np.isfinite(a).all():
                raise UnsupportedModel(f"initializer {name!r} is not finite")
        elif a.dtype != np.int64:
            raise UnsupportedModel(f"initializer {name!r} is {a.dtype}: canonical is float32 "
                                   f"(int64 for a Reshape's shape)")
    shapes = {graph.input[0].name: in_shape, graph.output[0].name: static_shape(graph.output[0])}
    for v in graph.value_info:
        shape = static_shape(v)
        if shape is not None and v.type.tensor_type.elem_type == TensorProto.FLOAT:
            shapes[v.name] = shape
    ready = {graph.input[0].name}
    for node in graph.node:
        label = node_label(node)
        if node.domain not in ("", "ai.onnx") or node.op_type not in CANONICAL_OPS:
            raise UnsupportedModel(f"{label}: op {node.op_type} is not supported (canonical: "
                                   f"{', '.join(CANONICAL_OPS)})")
        for name in node.input:
            if name not in ready and name not in inits:
                raise UnsupportedModel(f"{label}: input {name!r} is not computed before it "
                                       f"(nodes are not in topological order)")
        if len(node.output) != 1:
            raise UnsupportedModel(f"{label}: {len(node.output)} outputs, canonical is one")
        out = node.output[0]
        if out not in shapes:
            raise UnsupportedModel(f"{label}: output {out!r} has no static float32 shape in "
                                   f"value_info")
        _check_node(node, label, inits, shapes)
        ready.add(out)
    if graph.output[0].name not in ready:
        raise UnsupportedModel(f"graph output {graph.output[0].name!r} is not computed")


def _check_node(node, label, inits, shapes):
    attrs = node_attributes(node)
    op = node.op_type
    ins = list(node.input)
    n_in = {"Gemm": 3, "Conv": 3, "Add": 2, "Reshape": 2}.get(op, 1)
    if len(ins) != n_in:
        raise UnsupportedModel(f"{label}: {len(ins)} inputs, canonical is {n_in}")
    data = [i for i in ins if i not in inits]
    n_data = 2 if op == "Add" else 1
    if len(data) != n_data or ins[0] in inits:
        raise UnsupportedModel(f"{label}: {len(data)} data inputs, canonical is {n_data}")
    x = shapes.get(ins[0])
    if x is None:
        raise UnsupportedModel(f"{label}: input {ins[0]!r} has no static float32 shape")
    y = shapes[node.output[0]]

    def attrs_are(expected, optional=()):
        extra = set(attrs) - set(expected) - set(optional)
        missing = set(expected) - set(attrs)
        if extra or missing:
            raise UnsupportedModel(f"{label}: attributes {sorted(attrs)}, canonical "
                                   f"{sorted(expected)}")

    def weight(name, shape, what):
        a = inits[name]
        if a.dtype != np.float32 or a.shape != tuple(shape):
            raise UnsupportedModel(f"{label}: {what} {name!r} is {a.dtype} {a.shape}, canonical "
                                   f"float32 {tuple(shape)}")
        return a

    if op == "Gemm":
        attrs_are(["transB"])
        if attrs["transB"] != 1 or len(x) != 2 or x[0] != 1:
            raise UnsupportedModel(f"{label}: canonical is X (1, K) and transB=1")
        n = inits[ins[1]].shape[0] if inits[ins[1]].ndim == 2 else -1
        weight(ins[1], (n, x[1]), "weight")
        weight(ins[2], (n,), "bias")
    elif op == "Conv":
        attrs_are(["kernel_shape", "strides", "pads", "dilations", "group"])
        if len(x) != 4:
            raise UnsupportedModel(f"{label}: input shape {x}, canonical (1, C, H, W)")
        c, group = x[1], attrs["group"]
        o = inits[ins[1]].shape[0]
        kernel = list(attrs["kernel_shape"])
        if group != 1 and not (group == c and o % c == 0):
            raise UnsupportedModel(f"{label}: group {group} of {c} channels is not canonical")
        weight(ins[1], (o, c // group, *kernel), "weight")
        weight(ins[2], (o,), "bias")
        if list(attrs["dilations"]) != [1, 1] or len(attrs["strides"]) != 2 \
                or len(attrs["pads"]) != 4 or len(kernel) != 2:
            raise UnsupportedModel(f"{label}: attributes {attrs} are not canonical")
    elif op in ("MaxPool", "AveragePool"):
        expected = ["kernel_shape", "strides", "pads"]
        if op == "AveragePool":
            expected.append("count_include_pad")
        attrs_are(expected, optional=["ceil_mode", "dilations", "storage_order"])
        if attrs.get("ceil_mode", 0) or list(attrs.get("dilations", [1, 1])) != [1, 1] \
                or len(x) != 4 or len(attrs["pads"]) != 4 or len(attrs["kernel_shape"]) != 2:
            raise UnsupportedModel(f"{label}: attributes {attrs} are not canonical")
    elif op in ("GlobalAveragePool", "Relu"):
        attrs_are([])
        if op == "GlobalAveragePool" and len(x) != 4:
            raise UnsupportedModel(f"{label}: input shape {x}, canonical (1, C, H, W)")
    elif op == "Add":
        attrs_are([])
        if shapes.get(ins[1]) != x or y != x:
            raise UnsupportedModel(f"{label}: inputs of shapes {x} and {shapes.get(ins[1])}: "
                                   f"canonical is the same shape (no broadcasting)")
    elif op == "Softmax":
        attrs_are([], optional=["axis"])
        if len(x) != 2 or attrs.get("axis", -1) not in (-1, 1):
            raise UnsupportedModel(f"{label}: a softmax of {x} over axis "
                                   f"{attrs.get('axis', -1)}: canonical is (1, n) over n")
    elif op == "Reshape":
        attrs_are([], optional=["allowzero"])
        target = inits[ins[1]]
        n = int(np.prod(x))
        if target.dtype != np.int64 or target.tolist() != [1, n] or y != (1, n):
            raise UnsupportedModel(f"{label}: a reshape of {x} to {target.tolist()} is not "
                                   f"canonical: [1, {n}]")
