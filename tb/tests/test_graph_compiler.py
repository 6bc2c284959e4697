"""The graph compiler and runner (sw/compiler/graph_compiler.py) against Graph.run, bit for bit.

Graphs are built by hand from sw/compiler/graph.py's classes (seeded random weights, per-tensor
and per-channel multipliers from requant.quantize_multiplier, zero points at the extremes), and
run on the golden model and the cycle model at configurations chosen to force every path of the
lowering: bands and double buffering, patches sent piece by piece, streamed K, passes, channel
reloads, R = 2 and 4. Every macro op's output is compared, not only the graph's.
"""

import numpy as np
import pytest

from pim_macro.hw.isa import Counter, MacroConfig
from pim_macro.sw.compiler.graph import (Conv2D, DepthwiseConv2D, FullyConnected, Graph, MacroOp,
                                         Tensor)
from pim_macro.sw.compiler.graph_compiler import compile_graph, run_graph
from pim_macro.sw.compiler.tflite_builder import ModelBuilder
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
    x = b.tensor((5, 6, 3), zp=-128)
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
            shape = graph.tensors[graph.outputs[k]].shape[1:]
            np.testing.assert_array_equal(result.outputs[k][s], np.reshape(out, shape))
        for op in graph.ops:
            if isinstance(op, MacroOp):
                want = values[op.output]
                np.testing.assert_array_equal(result.tensors[op.output][s],
                                              np.reshape(want, graph.tensors[op.output].shape[1:]),
                                              err_msg=f"op {op.name}")


# -- configurations, each forcing paths of the lowering (asserted, so they keep forcing them) ---

#: name -> (config, what its plans of conv_net must show)
CONFIGS = {
    # the default: conv_net's weights do not fit (passes), fc_chain's do; double buffering
    "default": MacroConfig(),
    # everything resident
    "big": MacroConfig(lanes=16, depth=512),
    # streamed K through whole images; weights not resident (passes), channels resident
    "streamed": MacroConfig(lanes=8, depth=40, act_depth=1024, bias_depth=256),
    # R = 2, 12 lanes, images single-buffered, passes by rows
    "r2": MacroConfig(lanes=12, rows_per_cycle=2, depth=64, act_depth=100, bias_depth=64),
    # tiny everything: patches piece by piece, channel reloads, streamed, passes
    "tiny": MacroConfig(lanes=4, depth=8, act_depth=8, bias_depth=3),
    # R = 4 with the smallest buffer (one 4-byte piece, no double buffering) and 3 rows
    "r4": MacroConfig(lanes=8, rows_per_cycle=4, depth=3, act_depth=4, bias_depth=2),
}


def _features(program):
    """What the plans of a program do, as a set of names."""
    plans = list(program.plans.values())
    found = set()
    found.add("resident" if program.weights_resident else "passes")
    if not program.channels_resident:
        found.add("channel reloads")
    if any(p.image == 0 for p in plans):
        found.add("pieces")
    if any(p.image and len(p.act_bases) == 2 and p.band > 1 for p in plans):
        found.add("double-buffered bands")
    if any(p.image and len(p.act_bases) == 1 for p in plans):
        found.add("single-buffered bands")
    if any(t.streamed for p in plans for t in p.tiles):
        found.add("streamed")
    if any(len(t.pieces) > 1 for p in plans for t in p.tiles):
        found.add("accumulated pieces")
    if any(p.rows for p in plans):
        found.add("on-chip im2col")
    return found


EXPECTED = {
    "default": {"passes", "double-buffered bands"},
    "big": {"resident", "double-buffered bands"},
    "streamed": {"passes", "streamed", "accumulated pieces", "double-buffered bands"},
    "r2": {"passes", "single-buffered bands", "accumulated pieces"},
    "tiny": {"passes", "channel reloads", "pieces", "streamed", "accumulated pieces"},
    "r4": {"passes", "channel reloads", "pieces", "streamed", "accumulated pieces"},
}


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_force_their_paths(name):
    program = compile_graph(conv_net(), CONFIGS[name])
    assert EXPECTED[name] <= _features(program), _features(program)


@pytest.mark.parametrize("graph", ["fc_chain", "conv_net"])
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("sim", ["golden", "model"])
def test_bit_exact(graph, name, sim):
    """Every macro op's output equals Graph.run's, for two samples (weights kept across; one
    for the convolutions on the smallest macros, tens of thousands of commands a sample)."""
    g = globals()[graph]()
    batch = 1 if graph == "conv_net" and name in ("tiny", "r4") else 2
    x = _inputs(g, batch, seed=3)
    result = run_graph(g, x, CONFIGS[name], sim=sim)
    _check(g, x, result)
    assert result.outputs[0].shape == (batch, *g.tensors[g.outputs[0]].shape[1:])
    assert result.outputs[0].dtype == np.int8


@pytest.mark.parametrize("name", ["default", "tiny"])
def test_counters_consistent(name):
    """The cycle model's untimed counters equal the golden model's, op by op; the baseline reads
    the same rows with their bus beats and takes longer; cycles add up; every MAC the model asks
    for is done by an active lane."""
    g, config = conv_net(), CONFIGS[name]
    x = _inputs(g, 1, seed=4)
    runs = {(sim, arch): run_graph(g, x, config, sim=sim, arch=arch)
            for sim in ("golden", "model") for arch in ("pim", "baseline")}
    gold, pim, base = runs["golden", "pim"], runs["model", "pim"], runs["model", "baseline"]
    assert gold.cycles == [0]
    for arch in ("pim", "baseline"):
        for a, b in zip(runs["golden", arch].ops, runs["model", arch].ops):
            assert (a.mac_active, a.row_reads, a.bus_beats, a.words_in, a.words_out) == \
                (b.mac_active, b.row_reads, b.bus_beats, b.words_in, b.words_out)
    for p, q in zip(pim.ops, base.ops):
        if p.kind == "macro":
            assert p.bus_beats == 0 and q.bus_beats == q.row_reads * config.beats_per_row
            assert p.mac_active == p.row_reads == q.row_reads
            assert p.mac_active * config.macs_per_cycle >= p.macs
            assert 0 < p.cycles <= q.cycles
            assert p.cycles >= p.row_reads       # one row a cycle at most
    assert pim.cycles == [sum(s.cycles for s in pim.ops)]
    assert sum(pim.cycles) < sum(base.cycles)


def test_traffic_resident_vs_spilled():
    """Resident weights cross the stream once, in the set-up; spilled ones every inference. The
    set-up's weight words are the rows plus two command words per piece."""
    g = fc_chain()
    x = _inputs(g, 3, seed=5)
    big = CONFIGS["big"]
    resident = run_graph(g, x, big, sim="model")
    program = compile_graph(g, big)
    pieces = sum(len(t.pieces) for p in program.plans.values() for t in p.tiles)
    assert resident.weights_resident and resident.words_in["weights"] == 0
    assert resident.setup_words_in["weights"] == program.weight_rows * big.row_words + 2 * pieces
    assert resident.setup_cycles > 0
    spilled = run_graph(g, x, CONFIGS["tiny"], sim="model")
    assert not spilled.weights_resident and spilled.words_in["weights"] > 0
    assert spilled.setup_words_in == {}
    # results back: one status and ceil(n / 4) words per EMIT_INT8, one per tile and patch
    n_out = g.tensors[g.outputs[0]].shape[-1]
    last = resident.ops[-1]
    assert last.words_out["results"] == 3 * (1 + -(-n_out // 4))


def test_host_share():
    """A host op's work is the elements it reads; its traffic the stream words at its
    boundaries with macro ops (the conv's results going to the reshape, the FC's input
    coming from it)."""
    g = conv_net()
    x = _inputs(g, 1, seed=6)
    result = run_graph(g, x, CONFIGS["default"], sim="golden")
    reshape = next(s for s in result.ops if s.kind == "host")
    conv, fc = result.ops[reshape.index - 1], result.ops[reshape.index + 1]
    assert reshape.host_work == int(np.prod(g.tensors[g.ops[reshape.index].input].shape))
    assert conv.host_traffic == conv.words_out["results"]
    assert fc.host_traffic == fc.words_in["activations"]
    share = result.host_share()
    total = sum(result.words_in.values()) + sum(result.words_out.values())
    assert share["traffic"] == pytest.approx((conv.host_traffic + fc.host_traffic) / total)
    assert share["work"] == pytest.approx(reshape.host_work / (reshape.host_work + g.macs))
    util = result.utilization()
    assert set(util) == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    assert util["DEPTHWISE_CONV_2D"]["active"] < util["CONV_2D"]["active"] <= 1.0


@pytest.mark.parametrize("bad, message", [
    (lambda x: x[0], "must have shape"),
    (lambda x: x.astype(np.int16), "must be int8"),
    (lambda x: x[:0], "no samples"),
    (lambda x: [x, x], "has 1 inputs"),
])
def test_bad_input(bad, message):
    g = fc_chain()
    with pytest.raises(ValueError, match=message):
        run_graph(g, bad(_inputs(g, 2, seed=0)), MacroConfig())


# -- pim infer --model M.tflite ----------------------------------------------------------------
# Until the importer (sw/compiler/tflite_import.py) is in this tree, a stand-in module reads
# "models" that name a hand-built graph; with the importer, the same CLI path reads real ones
# (tb/tests/test_tflite.py and make tiny exercise that).

@pytest.fixture
def tflite_cli(tmp_path, monkeypatch):
    """``run(*args) -> (code, stdout, stderr)`` of ``pim infer`` with ``model.tflite`` standing
    for conv_net(), and the graph and an input file."""
    import io
    import sys
    import types
    from contextlib import redirect_stderr, redirect_stdout
    from pim_macro.sw import cli

    graph = conv_net()
    model = tmp_path / "model.tflite"
    stand_in = b"\0\0\0\0TFL3 stand-in"
    model.write_bytes(stand_in)

    def load_tflite(path):
        from pathlib import Path
        if Path(path).read_bytes() != stand_in:
            raise ValueError(f"{path}: unsupported operator CUSTOM_OP (not on the macro or the "
                             f"host)")
        return graph

    # The stand-in keeps every other name of the real module (UnsupportedModel, ...): a module
    # that imports one of them after the swap (the CLI imports graph_quantizer lazily) must find
    # it, whichever tests ran before in this worker.
    from pim_macro.sw.compiler import tflite_import
    fake = types.ModuleType("pim_macro.sw.compiler.tflite_import")
    fake.__dict__.update({k: v for k, v in vars(tflite_import).items()
                          if not k.startswith("__")})
    fake.load_tflite = load_tflite
    monkeypatch.setitem(sys.modules, "pim_macro.sw.compiler.tflite_import", fake)
    x = _inputs(graph, 2, seed=7)
    np.save(tmp_path / "X.npy", x)

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["infer", "--model", str(model), "--input",
                             str(tmp_path / "X.npy"), *args])
        return code, out.getvalue(), err.getvalue()
    return run, graph, x, tmp_path


@pytest.mark.parametrize("sim", ["golden", "model"])
def test_cli_infer_tflite(tflite_cli, sim):
    import json
    run, graph, x, tmp = tflite_cli
    code, out, err = run("--sim", sim, "--arch", "baseline", "--depth", "40", "--out",
                         str(tmp / "Y.npy"), "--json")
    assert code == 0, err
    report = json.loads(out)
    y = np.load(tmp / "Y.npy")
    assert y.dtype == np.int8 and y.shape == (2, 5)
    for s in range(2):
        np.testing.assert_array_equal(y[s], graph.run([x[s]])[0].reshape(y.shape[1:]))
    assert report["out"] == str(tmp / "Y.npy") and "output" not in report
    assert report["config"]["depth"] == 40 and report["arch"] == "baseline"
    assert report["im2col"] is False
    assert report["weights_resident"] is False and report["passes"] >= len(graph.macro_ops)
    assert len(report["cycles"]) == 2 and (min(report["cycles"]) > 0) == (sim == "model")
    assert set(report["utilization"]) == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def test_cli_infer_tflite_text(tflite_cli):
    run, graph, x, tmp = tflite_cli
    code, out, err = run("--sim", "model", "--lanes", "16", "--depth", "512")
    assert code == 0, err
    assert "2 samples" in out and "cycles per inference (pim)" in out
    assert "the weights fit the SRAM" in out
    cycles = int(out.split(" cycles per inference")[0].split()[-1])
    code, out, err = run("--sim", "model", "--lanes", "16", "--depth", "512", "--im2col")
    assert code == 0, err
    assert int(out.split(" cycles per inference")[0].split()[-1]) < cycles


@pytest.mark.parametrize("case", ["shape", "dtype", "unsupported", "missing", "labels"])
def test_cli_infer_tflite_errors(tflite_cli, case):
    run, graph, x, tmp = tflite_cli
    args = []
    if case == "shape":
        np.save(tmp / "X.npy", x.reshape(2, -1))
    elif case == "dtype":
        np.save(tmp / "X.npy", x.astype(np.float32))
    elif case == "unsupported":
        (tmp / "model.tflite").write_bytes(b"\0\0\0\0TFL3 other")
    elif case == "missing":
        (tmp / "model.tflite").unlink()
    else:
        np.save(tmp / "L.npy", np.zeros(3, np.int64))     # 3 labels for 2 samples
        args = ["--labels", str(tmp / "L.npy")]
    code, out, err = run(*args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("pim: error: "), err
    assert {"shape": "must have shape", "dtype": "must be int8", "unsupported": "CUSTOM_OP",
            "missing": "no such file", "labels": "--labels"}[case] in err


# -- the RTL -------------------------------------------------------------------------------------
# Runs through driver.Session on the simulators (a missing simulator is a failure, not a skip).

#: test_session.py's configuration (its simulator builds are shared: a cold Verilator build is
#: tens of seconds); fc_chain spills there (passes, channel reloads).
RTL_CONFIG = MacroConfig(lanes=8, depth=128, act_depth=256, bias_depth=16, bus_bits=16)


@pytest.mark.parametrize("arch", ["pim", "baseline"])
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_rtl_bit_exact_and_cycles(sim, arch):
    """fc_chain on a macro that spills (passes, channel reloads): outputs equal Graph.run's and
    every segment's cycles equal the cycle model's."""
    g, config = fc_chain(), RTL_CONFIG
    assert {"passes", "channel reloads"} <= _features(compile_graph(g, config))
    x = _inputs(g, 2, seed=8)
    result = run_graph(g, x, config, sim=sim, arch=arch)
    _check(g, x, result)
    model = run_graph(g, x, config, sim="model", arch=arch)
    assert result.cycles == model.cycles and result.setup_cycles == model.setup_cycles
    assert [s.cycles for s in result.ops] == [s.cycles for s in model.ops]


@pytest.mark.parametrize("im2col", [False, True])
def test_rtl_conv_with_stalls(im2col):
    """conv_net on Verilator with random stalls on both streams (and on-chip im2col): still
    bit-exact."""
    g = conv_net()
    x = _inputs(g, 1, seed=9)
    if im2col:
        assert "on-chip im2col" in _features(compile_graph(g, RTL_CONFIG, im2col=True))
    result = run_graph(g, x, RTL_CONFIG, sim="verilator", idle=0.3, backpressure=0.3,
                          seed=1, im2col=im2col)
    _check(g, x, result)


def test_decode_rejects_failed_or_short_answers():
    """A command that failed, or an answer cut short or too long, is a RuntimeError naming it."""
    from pim_macro.hw.isa import Error, Status, pack
    from pim_macro.sw.models.golden import GoldenMacro
    g, config = fc_chain(), MacroConfig()
    program = compile_graph(g, config)
    macro = GoldenMacro(config)
    macro.run(program.setup_words().words)
    plan = program.plans[0]
    segment = program.segment(plan, _inputs(g, 1, seed=0)[0])
    out = macro.run(segment.words)
    y, counters, _ = program.decode(segment, out)
    np.testing.assert_array_equal(y.reshape(plan.op.out_shape()),
                                  plan.op.run(_inputs(g, 1, seed=0)[0]))
    assert counters["row_reads"] > 0
    k = segment.opcodes.index(next(op for op in segment.opcodes if op.name == "MATVEC"))
    bad = list(out)
    at = 0
    for _ in range(k):                  # skip the answers before it (status, data words)
        at += 1 + (out[at] >> 16)
    bad[at] = pack(Status, opcode=bad[at] & 0xFF, error=Error.BAD_ADDRESS, count=0)
    with pytest.raises(RuntimeError, match=f"command {k} .MATVEC.*BAD_ADDRESS"):
        program.decode(segment, bad)
    with pytest.raises(RuntimeError, match=f"announces {len(Counter)} words, {len(Counter) - 3} follow"):
        program.decode(segment, out[:-3])
    with pytest.raises(RuntimeError, match="answered .* of"):
        program.decode(segment, out[:-(len(Counter) + 1)])
    with pytest.raises(RuntimeError, match="more than"):
        program.decode(segment, out + [0])


def test_negative_ties_away_from_zero():
    """LiteRT's FULLY_CONNECTED sends exact ties away from zero, and so does the macro's single
    rounding: at scale 0.5 every odd accumulator is a tie, and the run matches Graph.run, whose
    rule (requant.py) the hand table of test_golden.py pins down."""
    g = fc_chain()
    op = g.ops[0]
    n = op.channels
    object.__setattr__(op, "multiplier", np.full(n, 1 << 30, np.int64))
    object.__setattr__(op, "shift", np.zeros(n, np.int64))
    x = _inputs(g, 2, seed=10)
    result = run_graph(g, x, MacroConfig(), sim="golden")
    _check(g, x, result)
    acc = np.concatenate([op.accumulate(sample) for sample in x])
    assert ((acc % 2 == 1) & (acc < 0)).sum() >= 4, "the inputs must make negative ties"


# -- a real .tflite end to end, against LiteRT ----------------------------------------------------

def _small_tflite(rng):
    """Conv 3x3 SAME + ReLU (per channel), depthwise 3x3 stride 2 (multiplier 2), 1x1 conv
    (per tensor), a residual ADD, average pool, reshape, FULLY_CONNECTED, SOFTMAX."""
    b = ModelBuilder()
    x = b.input((1, 8, 8, 3), scale=0.02, zero_point=-128)

    def filt(*shape):
        return rng.integers(-127, 128, shape).astype(np.int8)

    def bias(n):
        return rng.integers(-2000, 2000, n).astype(np.int32)
    h = b.conv2d(x, filt(8, 3, 3, 3), bias(8), w_scale=rng.uniform(0.002, 0.01, 8),
                 out_scale=0.03, out_zero_point=-128, activation="RELU")
    h = b.depthwise_conv2d(h, filt(1, 3, 3, 16), bias(16), w_scale=rng.uniform(0.002, 0.01, 16),
                           out_scale=0.04, out_zero_point=5, stride=(2, 2))
    a = b.conv2d(h, filt(16, 1, 1, 16), bias(16), w_scale=0.005, out_scale=0.05,
                 out_zero_point=-3)
    c = b.conv2d(h, filt(16, 3, 3, 16), bias(16), w_scale=rng.uniform(0.001, 0.004, 16),
                 out_scale=0.05, out_zero_point=2, padding="SAME")
    h = b.add(a, c, out_scale=0.07, out_zero_point=-10, activation="RELU")
    h = b.pool("AVERAGE_POOL_2D", h, filter=(2, 2), stride=(2, 2))
    h = b.reshape(h, (1, 64))
    h = b.fully_connected(h, filt(10, 64), bias(10), w_scale=0.004, out_scale=0.1,
                          out_zero_point=0)
    y = b.softmax(h)
    return b.to_bytes(inputs=[x], outputs=[y])


def test_tflite_end_to_end_against_litert(tmp_path):
    """pim infer --model m.tflite on the cycle model, at a macro where the weights spill: Y is
    LiteRT's (BUILTIN_REF) bit for bit, and so is every macro op's output of run_graph."""
    from pim_macro.sw import cli
    rng = np.random.default_rng(11)
    data = _small_tflite(rng)
    from pim_macro.sw.compiler.tflite_import import load_tflite
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    (tmp_path / "m.tflite").write_bytes(data)
    x = rng.integers(-128, 128, (3, 8, 8, 3)).astype(np.int8)
    np.save(tmp_path / "X.npy", x)
    code = cli.main(["infer", "--model", str(tmp_path / "m.tflite"), "--input",
                     str(tmp_path / "X.npy"), "--sim", "model", "--depth", "32",
                     "--bias-depth", "16", "--out", str(tmp_path / "Y.npy"), "--json"])
    assert code == 0
    y = np.load(tmp_path / "Y.npy")
    graph = load_tflite(str(tmp_path / "m.tflite"))
    result = run_graph(graph, x, MacroConfig(depth=32, bias_depth=16), sim="golden")
    assert not result.weights_resident and not result.channels_resident
    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                     experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    for s in range(len(x)):
        it.set_tensor(graph.inputs[0], x[s][None])
        it.invoke()
        np.testing.assert_array_equal(y[s], it.get_tensor(graph.outputs[0])[0])
        for op in graph.macro_ops:
            np.testing.assert_array_equal(result.tensors[op.output][s],
                                          it.get_tensor(op.output)[0], err_msg=op.name)
    # not a saturated model: the outputs and every macro op's take many values
    assert len(np.unique(y)) > 5
    for op in graph.macro_ops:
        assert len(np.unique(result.tensors[op.output])) > 20, op.name


#: A buffer where whole input rows do not fit but strips of output columns do.
STRIPS = MacroConfig(lanes=8, depth=256, act_depth=64, bias_depth=256)


@pytest.mark.parametrize("name", ["default", "big", "streamed", "strips"])
@pytest.mark.parametrize("sim", ["golden", "model"])
def test_on_chip_im2col(name, sim):
    """With ``im2col`` the CONV_2D ops whose input rows fit the buffer take rows (with their
    halo; in strips of output columns when whole rows do not fit) instead of patches:
    bit-exact, fewer activation words, and (ops that do not qualify: depthwise, a strided 1x1)
    the rest as before."""
    g, config = conv_net(), CONFIGS.get(name, STRIPS)
    program = compile_graph(g, config, im2col=True)
    assert "on-chip im2col" in _features(program)
    if name == "strips":
        assert any(p.rows and p.strip < p.op.out_hw()[1] for p in program.plans.values())
    assert not any(p.rows for p in program.plans.values() if p.op.name != "CONV_2D")
    x = _inputs(g, 2, seed=12)
    rows = run_graph(g, x, config, sim=sim, program=program)
    _check(g, x, rows)
    patches = run_graph(g, x, config, sim=sim)
    assert rows.words_in["activations"] < patches.words_in["activations"]
    if sim == "model" and name != "strips":
        assert sum(rows.cycles) < sum(patches.cycles)
    # (in narrow strips the kh MATVECs' command words per position outweigh the patch bytes
    # saved: fewer activation words, more cycles; the option is the user's)


def test_tiny_fit_config_and_missing_models(tmp_path):
    """make tiny's helpers: the `fit` macro holds every weight and channel with the default's
    lanes and R (powers of two); a folder without the models is one line saying where to get
    them."""
    from pim_macro.tb.experiments import tiny
    g = conv_net()
    assert not compile_graph(g, MacroConfig()).weights_resident
    fit = tiny.fit_config(g)
    program = compile_graph(g, fit)
    assert program.weights_resident and program.channels_resident
    assert (fit.lanes, fit.rows_per_cycle) == (MacroConfig().lanes, MacroConfig().rows_per_cycle)
    assert fit.depth & (fit.depth - 1) == 0 and fit.depth // 2 < program.weight_rows
    with pytest.raises(SystemExit, match="not found in .*github.com/mlcommons/tiny"):
        tiny.find_models(tmp_path)


def test_cli_infer_tflite_by_identifier(tflite_cli):
    """A TFLite file of another name is recognized by its identifier (bytes 4..7, TFL3)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout
    from pim_macro.sw import cli
    run, graph, x, tmp = tflite_cli
    (tmp / "model.bin").write_bytes((tmp / "model.tflite").read_bytes())
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["infer", "--model", str(tmp / "model.bin"), "--input",
                         str(tmp / "X.npy"), "--out", str(tmp / "Y.npy")])
    assert code == 0, err.getvalue()
    assert np.load(tmp / "Y.npy").shape == (2, 5)


# -- pim infer on a real .tflite: its input checks (golden only, well under a second) ----------

def _float_fc(tmp_path):
    """QUANTIZE -> FULLY_CONNECTED -> DEQUANTIZE written to ``m.tflite``, a float32 input
    (3 samples of 12) in ``X.npy``; returns ``run(*args) -> (code, stdout, stderr)``."""
    import io
    from contextlib import redirect_stderr, redirect_stdout
    from pim_macro.sw import cli
    rng = np.random.default_rng(5)
    b = ModelBuilder()
    x = b.input((1, 12), np.float32)
    q = b.quantize(x, scale=0.02, zero_point=3)
    y = b.fully_connected(q, rng.integers(-127, 128, (4, 12)), rng.integers(-500, 500, 4),
                          w_scale=0.01, out_scale=0.05, out_zero_point=-2)
    (tmp_path / "m.tflite").write_bytes(b.to_bytes([x], [b.dequantize(y)]))
    np.save(tmp_path / "X.npy", rng.uniform(-1, 1, (3, 12)).astype(np.float32))

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["infer", "--model", str(tmp_path / "m.tflite"), "--input",
                             str(tmp_path / "X.npy"), *args])
        return code, out.getvalue(), err.getvalue()
    return run


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_cli_infer_tflite_refuses_a_float_input_not_finite(tmp_path, value):
    import warnings
    run = _float_fc(tmp_path)
    x = np.load(tmp_path / "X.npy")
    x[1, 4] = value
    np.save(tmp_path / "X.npy", x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # QUANTIZE's cast of NaN warned, and ran on
        code, out, err = run("--out", str(tmp_path / "Y.npy"))
    assert code == 2 and out == "" and not (tmp_path / "Y.npy").exists()
    assert err.count("\n") == 1 and err.startswith("pim: error: "), err
    assert "not finite" in err
    from pim_macro.sw.compiler.tflite_import import load_tflite
    with pytest.raises(ValueError, match="not finite"):
        run_graph(load_tflite(tmp_path / "m.tflite"), x, MacroConfig())


@pytest.mark.parametrize("option, value", [("-n", "0"), ("-n", "-3"), ("--spill-n", "0"),
                                           ("--rtl", "-1"), ("--icarus", "-2"), ("--jobs", "0"),
                                           ("-n", "x")])
def test_tiny_refuses_counts_that_check_nothing(tmp_path, capsys, option, value):
    """`-n 0` compared no value and reported bit-exact; `-n -3` reported -3 inputs."""
    from pim_macro.tb.experiments import tiny
    with pytest.raises(SystemExit) as e:
        tiny.main(["--models", str(tmp_path), option, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "not found" not in err, err


@pytest.mark.parametrize("name", ["m.tflite", "X.npy"])
def test_cli_infer_tflite_out_refuses_its_model_and_input(tmp_path, name):
    """`--out m.tflite` silently replaced the model with Y."""
    run = _float_fc(tmp_path)
    before = (tmp_path / name).read_bytes()
    code, out, err = run("--out", str(tmp_path / name))
    assert code == 2 and out == ""
    assert err.startswith("pim: error: ") and err.count("\n") == 1
    assert "is the same file as" in err and (tmp_path / name).read_bytes() == before


def test_cli_infer_tflite_takes_stalls(tmp_path):
    """--idle, --backpressure and --seed reach run_graph: accepted on golden (Y unchanged),
    out-of-range probabilities refused in one line before the run."""
    run = _float_fc(tmp_path)
    code, _, err = run("--out", str(tmp_path / "Y0.npy"))
    assert code == 0, err
    code, _, err = run("--idle", "0.3", "--backpressure", "0.5", "--seed", "7", "--out",
                       str(tmp_path / "Y1.npy"))
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "Y0.npy"), np.load(tmp_path / "Y1.npy"))
    for option, value in (("--idle", "1"), ("--backpressure", "-0.1"), ("--idle", "nan")):
        code, out, err = run(option, value)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith(f"pim: error: {option[2:]} must be a probability in [0, 1)"), err


def test_cli_infer_tflite_stalls_reach_verilator(tmp_path):
    """--idle/--backpressure on Verilator (RTL_CONFIG: test_session.py's build, shared; about
    2 s once built): Y is golden's and the stalls change the measured cycles."""
    import json
    run = _float_fc(tmp_path)
    config = ["--lanes", "8", "--depth", "128", "--act-depth", "256", "--bias-depth", "16",
              "--bus-bits", "16", "--json"]
    reports = {}
    for sim, stalls in (("golden", ()), ("verilator", ()),
                        ("verilator", ("--idle", "0.3", "--backpressure", "0.3", "--seed", "3"))):
        code, out, err = run("--sim", sim, *config, *stalls)
        assert code == 0, err
        reports[sim, bool(stalls)] = json.loads(out)
    golden = reports["golden", False]["output"]
    smooth, stalled = reports["verilator", False], reports["verilator", True]
    assert smooth["output"] == golden and stalled["output"] == golden
    assert stalled["cycles"] != smooth["cycles"]
