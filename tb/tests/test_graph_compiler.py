"""The graph compiler and runner (sw/compiler/graph_compiler.py) against Graph.run, bit for bit.

Graphs are built by hand from sw/compiler/graph.py's classes (seeded random weights, per-tensor
and per-channel multipliers from requant.quantize_multiplier, zero points at the extremes), and
run on the golden model and the cycle model at configurations chosen to force every path of the
lowering: bands and double buffering, patches sent piece by piece, streamed K, passes, channel
reloads, R = 2 and 4. Every macro op's output is compared, not only the graph's.
"""

import numpy as np
import pytest

from pim_macro.hw.isa import MacroConfig
from pim_macro.sw.compiler.graph import (Conv2D, DepthwiseConv2D, FullyConnected, Graph, MacroOp,
                                         Tensor)
from pim_macro.sw.compiler.graph_compiler import compile_graph, run_graph
from pim_macro.sw.models.requant import quantize_multiplier


class Reshape:
    """A host op for these tests (the real ones are in host_ops.py): reshape, in numpy."""
    name = "RESHAPE"

    def __init__(self, input, output, shape):
        self.input, self.output, self.shape = input, output, tuple(shape)

    @property
    def inputs(self):
        return (self.input,)

    def run(self, x):
        return np.asarray(x).reshape(self.shape)


def _quant(rng, n, k, per_channel):
    """Per-channel (or one shared) Q31 multipliers and shifts that keep outputs in range."""
    base = 30.0 / (5500.0 * np.sqrt(k))
    scales = base * rng.uniform(0.5, 2.0, n if per_channel else 1)
    pairs = [quantize_multiplier(s) for s in scales]
    m = np.array([p[0] for p in pairs], dtype=np.int64)
    s = np.array([p[1] for p in pairs], dtype=np.int64)
    return (m, s) if per_channel else (np.repeat(m, n), np.repeat(s, n))


def _common(rng, n, k, zp_in, per_channel, zp_out=None, relu=False, double=False):
    m, s = _quant(rng, n, k, per_channel)
    zp_out = int(rng.integers(-20, 20)) if zp_out is None else zp_out
    return dict(bias=rng.integers(-5000, 5000, n).astype(np.int32), multiplier=m, shift=s,
                input_zero_point=zp_in, output_zero_point=zp_out,
                act_min=zp_out if relu else -128, act_max=127, double_rounding=double)


class Builder:
    """Collects tensors and ops; ``tensor`` returns an index."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.tensors, self.ops = [], []

    def tensor(self, shape, zp=0):
        self.tensors.append(Tensor(f"t{len(self.tensors)}", (1, *shape), np.int8, 0.1, zp))
        return len(self.tensors) - 1

    def fc(self, x, n, *, per_channel=True, **kw):
        shape = self.tensors[x].shape[1:]
        k = shape[-1]
        out = self.tensor((*shape[:-1], n), kw.get("zp_out") or 0)
        w = self.rng.integers(-128, 128, (n, k)).astype(np.int8)
        self.ops.append(FullyConnected(
            x, out, w, output_shape=(*shape[:-1], n),
            **_common(self.rng, n, k, self.tensors[x].zero_point, per_channel, **kw)))
        return out

    def conv(self, x, n, kernel, stride=(1, 1), padding=(0, 0, 0, 0), *, per_channel=True,
             depthwise=0, **kw):
        h, w_, c = self.tensors[x].shape[1:]
        kh, kw_ = kernel
        if depthwise:
            filt = self.rng.integers(-128, 128, (1, kh, kw_, c * depthwise)).astype(np.int8)
            weights = DepthwiseConv2D.block_diagonal(filt, depthwise)
            n, k = c * depthwise, kh * kw_
            cls, extra = DepthwiseConv2D, {"depth_multiplier": depthwise}
        else:
            weights = self.rng.integers(-128, 128, (n, kh * kw_ * c)).astype(np.int8)
            k = kh * kw_ * c
            cls, extra = Conv2D, {}
        op = cls(x, -1, weights, in_shape=(h, w_, c), kernel=kernel, stride=stride,
                 padding=padding,
                 **_common(self.rng, n, k, self.tensors[x].zero_point, per_channel, **kw),
                 **extra)
        out = self.tensor(op.out_shape(), op.output_zero_point)
        object.__setattr__(op, "output", out)
        self.ops.append(op)
        return out

    def reshape(self, x, shape):
        out = self.tensor(shape, self.tensors[x].zero_point)
        self.ops.append(Reshape(x, out, shape))
        return out

    def graph(self, inputs, outputs):
        return Graph(self.tensors, self.ops, inputs, outputs, source="test")


def fc_chain(seed=1):
    """Three FULLY_CONNECTED layers, per-tensor then per-channel, both roundings, ReLU, zero
    points at the extremes."""
    b = Builder(seed)
    x = b.tensor((40,), zp=-128)
    h = b.fc(x, 20, per_channel=False, zp_out=127)
    h = b.fc(h, 13, relu=True, double=True, zp_out=-128)
    y = b.fc(h, 6)
    return b.graph([x], [y])


def conv_net(seed=2):
    """SAME 3x3 conv (stride 1), VALID stride-2 conv, depthwise 3x3 (multiplier 2) SAME, 1x1
    conv, then a reshape (host) and a FULLY_CONNECTED."""
    b = Builder(seed)
    x = b.tensor((7, 6, 3), zp=-128)
    h = b.conv(x, 10, (3, 3), padding=(1, 1, 1, 1), double=True, zp_out=127)
    h = b.conv(h, 12, (3, 3), stride=(2, 2), per_channel=False, relu=True)
    h = b.conv(h, 0, (3, 3), padding=(1, 1, 1, 1), depthwise=2, double=True)
    h = b.conv(h, 9, (1, 1))
    h = b.reshape(h, (int(np.prod(b.tensors[h].shape[1:])),))
    y = b.fc(h, 5)
    return b.graph([x], [y])


def _inputs(graph, batch, seed):
    rng = np.random.default_rng(seed)
    t = graph.tensors[graph.inputs[0]]
    return rng.integers(-128, 128, (batch, *t.shape[1:])).astype(np.int8)


def _check(graph, x, result):
    """Every macro op's output and the graph's outputs equal Graph.run's, sample by sample."""
    for s in range(len(x)):
        outs, values = graph.run([x[s]], keep=True)
        for k, out in enumerate(outs):
            np.testing.assert_array_equal(result.outputs[k][s], out)
        for op in graph.ops:
            if isinstance(op, MacroOp):
                np.testing.assert_array_equal(result.tensors[op.output][s],
                                              values[op.output], err_msg=f"op {op.name}")
