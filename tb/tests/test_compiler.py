"""The network container (pim_macro.sw.compiler.network) and compiler
(pim_macro.sw.compiler.compiler): hand-computed layers, seeded random networks against the numpy
reference on the golden model, the spill schedule, the RTL on both architectures (Amaranth
simulator, then Icarus and Verilator with stalls), and every validation error."""

import dataclasses
import zlib

import numpy as np
import pytest

from pim_macro.hw.isa import ARCHES, Header, MacroConfig, Opcode, unpack
from pim_macro.sw.runtime.asm import frame_program
from pim_macro.sw.compiler.compiler import compile_network, run_network
from pim_macro.sw.models.golden import GoldenMacro
from pim_macro.sw.compiler.network import (Conv, Dense, Network, forward, load_network,
                                           network_from_arrays, save_network)
from pim_macro.sw.runtime.rtl import SIMULATORS, Job, run_rtl
from pim_macro.tb.harness.macro_sim import play
from pim_macro.tb.harness.programs import STALLS, compare_timing


def _quant(rng, n_out, relu, k):
    """Random TFLite-like requantization for a layer of ``k`` inputs: per-channel Q31 multipliers
    and shifts (scales that bring accumulators of about ``sqrt(k) * 7400`` to about 40, within a
    factor of 2 or so), a random output zero point and rounding, a fused ReLU or none; the input
    zero point is random too (:func:`chain` makes it the previous layer's output zero point)."""
    # ReLU outputs sit near -128 (their range starts at the zero point), others near 0
    zp = int(rng.integers(-128, -60)) if relu else int(rng.integers(-30, 30))
    shift = round(np.log2(40 / (np.sqrt(k) * 7400))) + 1       # M0 is 0.5 .. 1 of 2**shift
    return dict(multiplier=rng.integers(1 << 30, 1 << 31, n_out),
                shift=shift + rng.integers(-1, 1, n_out, endpoint=True),
                input_zero_point=int(rng.integers(-128, 128)), output_zero_point=zp,
                act_min=zp if relu else -128, double_rounding=bool(rng.integers(0, 2)))


def dense(rng, n_in, n_out, relu=True):
    return Dense(rng.integers(-128, 128, (n_out, n_in), dtype=np.int8),
                 rng.integers(-20000, 20000, n_out, dtype=np.int32),
                 **_quant(rng, n_out, relu, n_in))


def conv(rng, c_in, c_out, hw, k=3, stride=1, pad=1, relu=True):
    return Conv(rng.integers(-128, 128, (c_out, c_in, k, k), dtype=np.int8),
                rng.integers(-20000, 20000, c_out, dtype=np.int32),
                **_quant(rng, c_out, relu, c_in * k * k),
                in_shape=(c_in, hw, hw), stride=(stride, stride), pad=(pad, pad))


def chain(*layers):
    """The network of ``layers``, each layer's input zero point made its predecessor's output
    zero point (one tensor, one zero point)."""
    out = [layers[0]]
    for layer in layers[1:]:
        out.append(dataclasses.replace(layer, input_zero_point=out[-1].output_zero_point))
    return Network(tuple(out))


def inputs(rng, network, batch):
    first = network.layers[0]
    shape = (batch, *first.in_shape) if isinstance(first, Conv) else (batch, first.inputs)
    return rng.integers(-128, 128, shape, dtype=np.int8)


def commands(program):
    """``(opcode, header count)`` of every command, framed from the words."""
    return [(Opcode(op), unpack(Header, program.words[start]).count)
            for op, start, _ in frame_program(program.words, program.config)]


# -- hand-computed ---------------------------------------------------------------------------

ONE = dict(multiplier=1 << 30, shift=1)         # scale 2**30 * 2**(1 - 31) = 1


def test_hand_computed_two_layers():
    """Zero points by hand. Input zero point 2: x = (3, 0, 5, -2) means (1, -2, 3, -4). Layer 0
    doubles it and adds 1: (3, -3, 7, -7); output zero point -5 with its ReLU (act_min -5):
    (-2, -5, 2, -5). Layer 1 (input zero point -5) sums (3, 0, 7, 0) minus 3 = 7, output zero
    point 10: 17."""
    w0 = (2 * np.eye(4)).astype(np.int8)
    net = Network((Dense(w0, np.ones(4, np.int32), **ONE, input_zero_point=2,
                         output_zero_point=-5, act_min=-5),
                   Dense(np.ones((1, 4), np.int8), np.array([-3], np.int32), **ONE,
                         input_zero_point=-5, output_zero_point=10)))
    x = np.array([[3, 0, 5, -2]], np.int8)
    assert forward(net, x)[1][0].tolist() == [[-2, -5, 2, -5]]
    assert forward(net, x)[0].tolist() == [[17]]
    assert net.layers[1].folded_bias().tolist() == [-3 + 5 * 4], "b - zp * sum(w)"
    for config in (MacroConfig(), MacroConfig(lanes=4, rows_per_cycle=4, depth=8)):
        assert run_network(net, x, config).y.tolist() == [[17]]


def test_hand_computed_convolution():
    """A 2x2 all-ones kernel over a 3x3 image 1..9 (no padding, stride 1) sums each window:
    12, 16, 24, 28; then halved (scale 0.5, ties up): 6, 8, 12, 14."""
    layer = Conv(np.ones((1, 1, 2, 2), np.int8), np.zeros(1, np.int32), 1 << 30, 0,
                 in_shape=(1, 3, 3))
    net = Network((layer,))
    x = np.arange(1, 10, dtype=np.int8).reshape(1, 1, 3, 3)
    assert forward(net, x)[0].tolist() == [[6, 8, 12, 14]]
    assert run_network(net, x, MacroConfig(lanes=4)).y.tolist() == [[6, 8, 12, 14]]


# A 1x1 conv (scale 1, zero points 1 in, 7 out) maps the 2x2 image [[1, 2], [3, 4]] to [[7, 8],
# [9, 10]]: x - 1 + 7. The next conv (2x2 ones, padding 1, input zero point 7) sees x - 7 =
# [[0, 1], [2, 3]] inside a border of zero point, which counts 0: window sums
# 0 1 1 / 2 6 4 / 2 5 3; scale 0.5 (ties up): 0 1 1 / 1 3 2 / 1 3 2; output zero point -3.
# A border of 0 instead would count -7 per padded tap.
PADDED = [-3, -2, -2, -2, 0, -1, -2, 0, -1]


def test_hand_computed_padding_holds_the_zero_point():
    """Padding of a first layer (im2col on the host) and of a later one (im2col on chip: the
    compiler fills the padding with the layer's input zero point) both count as zero."""
    first = Conv(np.ones((1, 1, 1, 1), np.int8), np.zeros(1, np.int32), **ONE,
                 input_zero_point=1, output_zero_point=7, in_shape=(1, 2, 2))
    second = Conv(np.ones((1, 1, 2, 2), np.int8), np.zeros(1, np.int32), 1 << 30, 0,
                  input_zero_point=7, output_zero_point=-3, in_shape=(1, 2, 2), pad=(1, 1))
    x = np.array([[[[1, 2], [3, 4]]]], np.int8)
    net = Network((first, second))
    assert forward(net, x)[1][0].tolist() == [[7, 8, 9, 10]]
    assert forward(net, x)[0].tolist() == [PADDED]
    assert run_network(net, x, MacroConfig(lanes=4)).y.tolist() == [PADDED]
    alone = Network((second,))
    assert forward(alone, x + 6)[0].tolist() == [PADDED], "the host's im2col pads with zp too"
    assert run_network(alone, (x + 6).astype(np.int8), MacroConfig(lanes=4)).y.tolist() == [PADDED]


# -- seeded random networks on the golden model ----------------------------------------------

NETWORKS = {
    "mlp": lambda rng: chain(dense(rng, 64, 32), dense(rng, 32, 10, False)),
    "deep mlp, odd sizes": lambda rng: chain(dense(rng, 37, 23), dense(rng, 23, 19),
                                             dense(rng, 19, 5, False)),
    "cnn": lambda rng: chain(conv(rng, 1, 8, 8), conv(rng, 8, 12, 8, stride=2),
                             dense(rng, 192, 10, False)),
    "cnn ending in a conv": lambda rng: chain(conv(rng, 2, 4, 6, pad=0),
                                              conv(rng, 4, 6, 4, k=2, pad=1)),
    "strided 5x5": lambda rng: chain(conv(rng, 3, 5, 9, k=5, stride=2, pad=2),
                                     dense(rng, 125, 7, False)),
}

CONFIGS = [MacroConfig(lanes=8, depth=512, act_depth=8192),
           MacroConfig(lanes=8, rows_per_cycle=2, depth=256, act_depth=8192, bias_depth=64),
           MacroConfig(lanes=12, rows_per_cycle=4, depth=128, act_depth=8192, bias_depth=32)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.tag())
@pytest.mark.parametrize("name", NETWORKS)
def test_random_networks_match_numpy(name, config):
    rng = np.random.default_rng(zlib.crc32(name.encode()))     # the same networks every run
    net = NETWORKS[name](rng)
    x = inputs(rng, net, 3)
    want, acts = forward(net, x)
    result = run_network(net, x, config)
    assert np.array_equal(result.y, want), f"{name}: outputs differ from the reference"
    for i, a in enumerate(acts):
        assert len(np.unique(a)) > 8, f"test premise: layer {i}'s outputs are not all clamped"
    assert result.counters["row_reads"] == result.program.rows_read


def test_container_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    net = NETWORKS["cnn"](rng)
    save_network(tmp_path / "m.npz", net)
    again = load_network(tmp_path / "m.npz")
    x = inputs(rng, net, 2)
    assert np.array_equal(forward(again, x)[0], forward(net, x)[0])
    assert [type(layer) for layer in again.layers] == [Conv, Conv, Dense]
    assert again.layers[1].stride == (2, 2) and again.layers[1].in_shape == (8, 8, 8)
    for a, b in zip(net.layers, again.layers):
        assert np.array_equal(a.multiplier, b.multiplier) and np.array_equal(a.shift, b.shift)
        assert a.quant() == b.quant() and a.input_zero_point == b.input_zero_point


@pytest.mark.parametrize("act_depth", [1024, 4096])
def test_one_or_many_activation_slots(act_depth):
    """A CNN needing 576 bytes per sample: one slot (every sample reuses it, loads wait for the
    previous sample) or several (the next input streams in during the current sample)."""
    rng = np.random.default_rng(21)
    net = chain(conv(rng, 1, 4, 6), dense(rng, 144, 10, False))
    x = inputs(rng, net, 4)
    config = MacroConfig(lanes=4, depth=512, act_depth=act_depth)
    result = run_network(net, x, config, sim="model")
    assert np.array_equal(result.y, forward(net, x)[0])
    loads = [op for op, _ in commands(result.program) if op == Opcode.LOAD_ACT]
    assert len(loads) == 4, "one input load per sample"


# -- the spill schedule ----------------------------------------------------------------------

def test_spilled_weights_are_loaded_once_per_chunk():
    """Weights of 3 passes, activation room for 2 samples at a time: 5 samples make 3 chunks,
    so every weight row is written exactly 3 times, and the answers stay exact."""
    rng = np.random.default_rng(8)
    net = chain(dense(rng, 40, 24), dense(rng, 24, 16), dense(rng, 16, 10, False))
    config = MacroConfig(lanes=8, depth=48, act_depth=2 * (40 + 24 + 16) + 4, bias_depth=16)
    x = inputs(rng, net, 5)
    program = compile_network(net, x, config)
    assert program.passes > 1 and program.chunk == 2 and program.weight_loads == 3
    written = sum(count for op, count in commands(program) if op == Opcode.WRITE_WEIGHTS)
    assert written == 3 * program.weight_rows
    out = GoldenMacro(config).run(program.words)
    assert np.array_equal(program.extract(out)[0], forward(net, x)[0])


@pytest.mark.parametrize("arch", ARCHES)
def test_tiles_taller_than_the_sram_are_streamed(arch):
    """K = 100 at R = 1 needs 100 rows; with 32 the tile is streamed in 4 accumulated chunks,
    for every sample; the other layer stays in its own pass. Checked on the RTL."""
    rng = np.random.default_rng(14)
    net = chain(dense(rng, 100, 12), dense(rng, 12, 6, False))
    config = MacroConfig(lanes=8, depth=32, act_depth=1024, bias_depth=16, bus_bits=16)
    x = inputs(rng, net, 3)
    program = compile_network(net, x, config)
    assert program.weight_loads == 3, "the streamed layer is written once per sample"
    written = [count for op, count in commands(program) if op == Opcode.WRITE_WEIGHTS]
    # Layer 0: 2 tiles of 100 rows in chunks of 32, 32, 32, 4, for each of 3 samples; layer 1:
    # one tile of 12 rows, written once (all 3 samples fit one chunk).
    assert written == [32, 32, 32, 4] * 6 + [12]
    out, finished = play(program.words, config, arch=arch)
    assert finished
    assert np.array_equal(program.extract(out)[0], forward(net, x)[0])
    assert compare_timing(program.words, out, config, arch=arch) == 1


def test_bias_memory_smaller_than_lanes():
    """bias_depth 6 < 16 lanes: tiles shrink to 6 outputs so each tile's biases fit."""
    rng = np.random.default_rng(15)
    net = NETWORKS["cnn"](rng)
    x = inputs(rng, net, 2)
    config = MacroConfig(lanes=16, depth=256, act_depth=8192, bias_depth=6)
    result = run_network(net, x, config, sim="model")
    assert np.array_equal(result.y, forward(net, x)[0])
    for opcode in (Opcode.LOAD_BIAS, Opcode.LOAD_QUANT):
        loads = [count for op, count in commands(result.program) if op == opcode]
        assert loads and max(loads) <= 6


def test_resident_weights_are_loaded_once():
    rng = np.random.default_rng(9)
    net = NETWORKS["mlp"](rng)
    program = compile_network(net, inputs(rng, net, 7), MacroConfig(depth=320))
    assert (program.passes, program.weight_loads) == (1, 1), "4 x 64 + 2 x 32 rows fit in 320"
    written = sum(count for op, count in commands(program) if op == Opcode.WRITE_WEIGHTS)
    assert written == program.weight_rows


# -- RTL -------------------------------------------------------------------------------------

RTL_CONFIG = MacroConfig(lanes=8, rows_per_cycle=2, depth=128, act_depth=4096, bias_depth=32,
                         bus_bits=16)


@pytest.mark.parametrize("requantizers", [4, 2, 1])
@pytest.mark.parametrize("arch", ARCHES)
def test_rtl_in_amaranth_matches_reference_and_model(arch, requantizers):
    """Networks chained on chip (write-backs at odd offsets, int8 emits of partial words) with
    every output-engine width."""
    config = dataclasses.replace(RTL_CONFIG, requantizers=requantizers)
    rng = np.random.default_rng(12)
    for name in ("cnn", "deep mlp, odd sizes"):
        net = NETWORKS[name](rng)
        x = inputs(rng, net, 2)
        program = compile_network(net, x, config)
        out, finished = play(program.words, config, arch=arch)
        assert finished
        assert np.array_equal(program.extract(out)[0], forward(net, x)[0]), name
        assert compare_timing(program.words, out, config, arch=arch, where=name) == 1


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("arch", ARCHES)
def test_rtl_networks_with_stalls(sim, arch):
    """A CNN and a spilled MLP on Icarus and Verilator, smooth and with both stalls."""
    rng = np.random.default_rng(13)
    cnn = NETWORKS["cnn"](rng)
    spill = chain(dense(rng, 40, 24), dense(rng, 24, 16), dense(rng, 16, 10, False))
    spill_config = MacroConfig(lanes=8, rows_per_cycle=2, depth=24, act_depth=4096,
                               bias_depth=32, bus_bits=16)
    cases = [(cnn, inputs(rng, cnn, 2)), (spill, inputs(rng, spill, 3))]
    programs = []
    for net, x in cases:
        program = compile_network(net, x, RTL_CONFIG)
        programs.append((program, forward(net, x)[0]))
    assert compile_network(spill, cases[1][1], spill_config).passes > 1
    jobs = [Job(program.words, idle=idle, backpressure=bp, seed=7)
            for program, _ in programs for _, idle, bp in (STALLS[0], STALLS[3])]
    results = run_rtl(jobs, RTL_CONFIG, sim=sim, arch=arch)
    for i, result in enumerate(results):
        program, want = programs[i // 2]
        assert result.finished
        assert np.array_equal(program.extract(result.out)[0], want), f"job {i}"
        if i % 2 == 0:
            assert compare_timing(program.words, result.out, RTL_CONFIG, arch=arch) == 1


# -- errors ----------------------------------------------------------------------------------

def _arrays(rng):
    net = NETWORKS["mlp"](rng)
    arrays = {}
    for i, layer in enumerate(net.layers):
        arrays.update({f"w{i}": layer.w, f"b{i}": layer.b, f"multiplier{i}": layer.multiplier,
                       f"shift{i}": layer.shift,
                       f"input_zero_point{i}": np.int64(layer.input_zero_point),
                       f"output_zero_point{i}": np.int64(layer.output_zero_point)})
    return arrays


BAD = {
    "no layers": (lambda a: {}, "no layers: key w0 is missing"),
    "missing bias": (lambda a: {k: v for k, v in a.items() if k != "b1"}, "key b1 is missing"),
    "float weights": (lambda a: {**a, "w0": a["w0"].astype(np.float32)},
                      "w0 must be int8, not float32"),
    "int64 bias": (lambda a: {**a, "b0": a["b0"].astype(np.int64)}, "b0 must be int32"),
    "shapes do not chain": (lambda a: {**a, "w1": a["w1"][:, :31], },
                            "layer 1 takes 31 inputs but layer 0 gives 32"),
    "missing multiplier": (lambda a: {k: v for k, v in a.items() if k != "multiplier1"},
                           "layer 1: key multiplier1 is missing"),
    "shift range": (lambda a: {**a, "shift0": np.int64(40)}, "shift0 must be -32..31, not 40"),
    "shift in a channel": (lambda a: {**a, "shift0": np.r_[a["shift0"][:-1], -33]},
                           "shift0 must be -32..31, not -33"),
    "multiplier shape": (lambda a: {**a, "multiplier1": np.ones(3, np.int64)},
                         r"multiplier1 must be an integer or 10 integers .*shape \(3,\)"),
    "multiplier float": (lambda a: {**a, "multiplier1": np.ones(10)},
                         "multiplier1 must be an integer or 10 integers"),
    "multiplier range": (lambda a: {**a, "multiplier0": np.uint32(1 << 31)},
                         "multiplier0 must be 0..2147483647, not 2147483648"),
    "zero point range": (lambda a: {**a, "output_zero_point1": np.int64(128)},
                         r"output_zero_point1 \(output zero point\) must be -128..127"),
    "zero point array": (lambda a: {**a, "act_min0": np.zeros(2, np.int64)},
                         r"act_min0 \(act min\) must be an integer scalar"),
    "double rounding 2": (lambda a: {**a, "double_rounding1": np.int64(2)},
                          r"double_rounding1 \(double rounding\) must be 0..1"),
    "zero points do not chain": (lambda a: {**a, "input_zero_point1": np.int64(
        int(a["output_zero_point0"]) ^ 1)}, "input_zero_point1 is .* but output_zero_point0"),
    "ISA version 3 container": (lambda a: {**a, "m0": np.int64(300), "relu0": np.int64(1)},
                                r"keys m0, relu0 are the container of ISA version 3"),
    "unknown key": (lambda a: {**a, "extra": np.zeros(1)}, "unknown keys in the model: extra"),
    "conv without geometry": (lambda a: {**a, "w0": np.zeros((32, 64, 1, 1), np.int8)},
                              "key in_shape0 is missing"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_models_are_rejected(case):
    change, message = BAD[case]
    with pytest.raises(ValueError, match=message):
        network_from_arrays(change(_arrays(np.random.default_rng(1))))


def test_compile_errors():
    rng = np.random.default_rng(2)
    net = NETWORKS["mlp"](rng)
    x = inputs(rng, net, 1)
    with pytest.raises(ValueError, match="one sample needs 96 bytes of activation buffer"):
        compile_network(net, x, MacroConfig(act_depth=64))
    with pytest.raises(ValueError, match="the input must have shape"):
        compile_network(net, x[:, :10], MacroConfig())
    mixed = chain(dense(rng, 16, 16), conv(rng, 1, 2, 4))
    with pytest.raises(ValueError, match="a convolution after a dense layer"):
        compile_network(mixed, inputs(rng, mixed, 1), MacroConfig())


@pytest.mark.parametrize("content,message", [
    (b"PK\x03\x04garbage", "damaged numpy file"),             # issue 11: not a valid zip
    (b"", "it is empty"),
    (b"\x80\x04K\x01.", "Python pickle"),
    (None, "single array"),                                  # an array, not a model
], ids=["bad-zip", "empty", "pickle", "npy"])
def test_load_network_rejects_malformed_files(tmp_path, content, message):
    """The library's loader (not only the CLI) reports a file that is no model as one
    ValueError line naming the file; never another exception."""
    path = tmp_path / "m.npz"
    if content is None:
        np.save(tmp_path / "w.npy", np.zeros((2, 2), np.int8))
        path = tmp_path / "w.npy"
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_network(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_act_buffer_refusal_names_what_fits():
    """Issue 13: the refusal names each layer's region and the smallest act_depth that fits,
    or, past the largest buffer, the .tflite path."""
    rng = np.random.default_rng(13)
    w = rng.integers(-127, 128, (4, 1, 3, 3), dtype=np.int8)
    for side, pattern in ((20, r"one sample needs 3888 bytes of activation buffer \(every "
                                r"layer's input on chip: layer 0 im2col patches 3888\); the "
                                r"macro has 1024: the smallest that fits is act_depth 3888 "
                                r"\(--act-depth 3888;"),
                          (100, r"needs 115248 bytes .* more than the largest buffer \(65536 "
                                r"bytes\): run the model as a .tflite")):
        net = Network((Conv(w, np.zeros(4, np.int32), 1 << 30, -3, in_shape=(1, side, side)),))
        x = rng.integers(-128, 128, (1, 1, side, side), dtype=np.int8)
        with pytest.raises(ValueError, match=pattern):
            compile_network(net, x, MacroConfig())
        if side == 20:
            compile_network(net, x, MacroConfig(act_depth=3888))
