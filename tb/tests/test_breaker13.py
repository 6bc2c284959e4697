"""Issue 13's breaker: each test is one fault found by probing, with the exact input that breaks.

Every test here FAILS on the branch it was written against (``brk`` at 08db51d) and should pass
once the fault is fixed. References: onnxruntime on the original float model, LiteRT's reference
kernels on the written ``.tflite``. Cost: golden/numpy-level only, a few seconds in all.
"""

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from pim_macro.sw.compiler.graph_quantizer import (quantize_graph, to_model_layout,
                                                   to_user_layout)
from pim_macro.sw.compiler.onnx_import import normalize
from pim_macro.sw.compiler.tflite_import import UnsupportedModel, load_tflite
from pim_macro.tb.harness.onnx_build import make_model


def _pim(*args):
    """``pim *args`` in this process: ``(exit code, stdout, stderr)``."""
    from pim_macro.sw import cli
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def _w(rng, *shape):
    return rng.normal(0, 0.5, shape).astype(np.float32)


def _onnxruntime(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: s[None]})[0] for s in x])


def _quantize_and_compare(model, shape, seed=0):
    """normalize + quantize_graph on ``model``; Graph.run's dequantized outputs against
    onnxruntime on the original (saturated at the calibrated output range): max error within
    10 % of the output range."""
    rng = np.random.default_rng(seed)
    canonical = normalize(model)
    calib = rng.normal(0, 1, (256, *shape)).astype(np.float32)
    g = load_tflite(quantize_graph(canonical, calib))
    x = calib[:8]
    y = to_user_layout(g, np.concatenate([g.run([s[None]])[0] for s in to_model_layout(g, x)]))
    out = g.tensors[g.ops[-1].inputs[0]]
    ref = np.clip(_onnxruntime(model, x), out.scale * (-128 - out.zero_point),
                  out.scale * (127 - out.zero_point))
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= 0.10 * np.abs(ref).max()


# -- 1. A Relu that is not right after a Gemm / Conv / Add ----------------------------------------

def _relu_after_maxpool(rng):
    """PyTorch's classic MNIST net: ``F.relu(F.max_pool2d(self.conv1(x), 2))``."""
    return make_model(
        [helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[3, 3]),
         helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("Relu", ["p"], ["r"]),
         helper.make_node("Flatten", ["r"], ["f"]),
         helper.make_node("Gemm", ["f", "fw", "fb"], ["output"], transB=1)],
        [("input", ["N", 1, 8, 8])], [("output", ["N", 4])],
        {"w": _w(rng, 4, 1, 3, 3), "b": _w(rng, 4), "fw": _w(rng, 4, 36), "fb": _w(rng, 4)})


def _relu_on_one_branch(rng):
    """A residual add with a Relu on one branch only: ``y + relu(y)``, y = Gemm(x)."""
    return make_model(
        [helper.make_node("Gemm", ["input", "w", "b"], ["g"], transB=1),
         helper.make_node("Relu", ["g"], ["r"]),
         helper.make_node("Add", ["r", "g"], ["output"])],
        [("input", ["N", 6])], [("output", ["N", 3])], {"w": _w(rng, 3, 6), "b": _w(rng, 3)})


def _relu_after_flatten(rng):
    return make_model(
        [helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[3, 3]),
         helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("Relu", ["f"], ["r"]),
         helper.make_node("Gemm", ["r", "fw", "fb"], ["output"], transB=1)],
        [("input", ["N", 1, 5, 5])], [("output", ["N", 3])],
        {"w": _w(rng, 2, 1, 3, 3), "b": _w(rng, 2), "fw": _w(rng, 3, 18), "fb": _w(rng, 3)})


@pytest.mark.parametrize("build, shape", [(_relu_after_maxpool, (1, 8, 8)),
                                          (_relu_on_one_branch, (6,)),
                                          (_relu_after_flatten, (1, 5, 5))],
                         ids=["relu_after_maxpool", "relu_on_one_branch", "relu_after_flatten"])
def test_relu_not_fused_is_quantized(build, shape):
    """FAULT: normalize accepts these (Relu is canonical; check_canonical passes), but
    quantize_graph refuses them: "a Relu must follow a Gemm, Conv or Add whose output nothing
    else uses". TFLite has a standalone int8 RELU (and Relu commutes with MaxPool / reshapes),
    so they should quantize and match onnxruntime within the int8 error."""
    _quantize_and_compare(build(np.random.default_rng(1)), shape)
