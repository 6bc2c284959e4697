"""Tests of the host GEMV driver (pim_macro.sw.compiler.gemv): tiling, chunking and weight residency
on the golden model against an independent numpy reference, argument validation, error reporting,
and a few small runs on the RTL (Icarus and Verilator) compared with the same reference."""


import numpy as np
import pytest

from pim_macro.hw.isa import OPCODES, Flag, Header, MacroConfig, Opcode, unpack
from pim_macro.sw.runtime import driver as driver_module
from pim_macro.sw.runtime.asm import frame_program, parse_responses
from pim_macro.sw.compiler.gemv import GemvResult, compile_gemv, run_gemv
from pim_macro.sw.models.golden import GoldenMacro
from pim_macro.sw.models.requant import requantize
from pim_macro.sw.runtime.rtl import SIMULATORS, JobResult, Job, run_rtl


# -- independent reference -------------------------------------------------------------------

def reference(w, x, bias=None, multiplier=None, shift=None, zero_point=0, act_min=-128,
              act_max=127, double_rounding=False):
    """Y = X @ W.T (+ bias) in int64, wrapped to int32, then the one requantization rule
    (sw/models/requant.py, checked by hand in test_golden) per output channel."""
    v = np.asarray(x, dtype=np.int64) @ np.asarray(w, dtype=np.int64).T
    if bias is not None:
        v = v + np.asarray(bias, dtype=np.int64)
    v = (v + 2**31) % 2**32 - 2**31
    if multiplier is None:
        return v.astype(np.int32)
    return requantize(v, multiplier, shift, zero_point, act_min, act_max,
                      double_rounding=double_rounding)


def rand_quant(rng, n, per_channel=True):
    """A random TFLite-like requantization: Q31 multipliers, mostly right shifts that bring
    accumulators of a few thousand to a few hundred into the int8 range, a zero point and a
    clamp."""
    size = n if per_channel else None
    zero_point = int(rng.integers(-128, 128))
    act_min = int(rng.choice([-128, zero_point, int(rng.integers(-128, 128))]))
    return dict(multiplier=rng.integers(1 << 30, 1 << 31, size),
                shift=rng.integers(-16, 2, size), zero_point=zero_point, act_min=act_min,
                act_max=int(rng.integers(act_min, 128)), double_rounding=bool(rng.random() < .5))


def rand_int8(rng, *shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def rand_bias(rng, n, big=True):
    hi = 2**31 if big else 5000
    return rng.integers(-hi, hi, n).astype(np.int32)


def commands(program):
    """``(opcode, header count, flags, first argument)`` of every command, framed from the words
    (not from the driver's own bookkeeping); the argument unpacked through its ISA layout."""
    out = []
    for op, start, _ in frame_program(program.words, program.config):
        op, hdr = Opcode(op), unpack(Header, program.words[start])
        layouts = OPCODES[op].args
        arg = unpack(layouts[0], program.words[start + 1]) if layouts else None
        out.append((op, hdr.count, hdr.flags, arg))
    return out


def weight_rows_written(program):
    return sum(count for op, count, _, _ in commands(program) if op == Opcode.WRITE_WEIGHTS)


def check(result_y, expected, what):
    assert result_y.dtype == expected.dtype, \
        f"{what}: Y should be {expected.dtype}, got {result_y.dtype}"
    assert result_y.shape == expected.shape, \
        f"{what}: Y should have shape {expected.shape}, got {result_y.shape}"
    bad = np.argwhere(result_y != expected)
    assert bad.size == 0, (f"{what}: {len(bad)} outputs differ from the numpy reference, first "
                           f"at {tuple(bad[0])}: got {result_y[tuple(bad[0])]}, expected "
                           f"{expected[tuple(bad[0])]}")


# -- golden: shapes, modes, tiling ------------------------------------------------------------

@pytest.mark.parametrize("r", [1, 2, 4])
def test_random_problems_match_numpy(r):
    """Random shapes (N, K not multiples of anything), configurations small enough to force
    partial tiles, K chunking, several passes and small bias memories, raw and requantized."""
    rng = np.random.default_rng(100 + r)
    for case in range(40):
        cfg = MacroConfig(lanes=int(rng.choice([4, 8, 12])), rows_per_cycle=r,
                          depth=int(rng.integers(1, 48)), act_depth=4 * int(rng.integers(1, 24)),
                          bias_depth=int(rng.integers(1, 40)))
        n, k = int(rng.integers(1, 30)), int(rng.integers(1, 70))
        w = rand_int8(rng, n, k)
        x = rand_int8(rng, k) if case % 3 == 0 else rand_int8(rng, int(rng.integers(1, 4)), k)
        bias = rand_bias(rng, n, big=bool(case % 2)) if case % 4 != 1 else None
        quant = rand_quant(rng, n, per_channel=case % 4 == 1) if case % 2 else {}
        result = run_gemv(w, x, cfg, bias=bias, **quant)
        check(result.y, reference(w, x, bias, **quant),
              f"case {case}: {cfg}, N={n}, K={k}, X{x.shape}, bias={bias is not None}, {quant}")


@pytest.mark.parametrize("n,k,batch", [(1, 1, None), (8, 1, 3), (13, 7, None), (5, 13, 4),
                                       (16, 16, 1), (17, 3, 2)])
@pytest.mark.parametrize("r", [1, 2, 4])
def test_shapes_default_config(n, k, batch, r):
    """Edge shapes on the default-size macro: K=1, N below / not a multiple of lanes, 1-D X,
    B=1 as a 2-D input, B>1; raw with bias and requantized with ReLU."""
    rng = np.random.default_rng(n * 1000 + k * 10 + r)
    cfg = MacroConfig(rows_per_cycle=r)
    w = rand_int8(rng, n, k)
    x = rand_int8(rng, k) if batch is None else rand_int8(rng, batch, k)
    bias = rand_bias(rng, n)
    raw = run_gemv(w, x, cfg, bias=bias)
    check(raw.y, reference(w, x, bias), "raw")
    assert isinstance(raw, GemvResult) and raw.sim == "golden" and raw.config == cfg, \
        "run_gemv should return a GemvResult naming the simulator and the configuration"
    quant = dict(multiplier=rng.integers(1 << 30, 1 << 31, n), shift=rng.integers(-8, -4, n),
                 zero_point=-5, act_min=-5)             # per channel, with its fused ReLU
    q = run_gemv(w, x, cfg, **quant)
    check(q.y, reference(w, x, None, **quant), "int8 per channel, relu")


def test_requantization_extremes():
    """Multipliers 0, 2**30 and 2**31 - 1, shifts -32 .. 31, zero points -128 and 127, clamps
    (ReLU, ReLU6-like, act_min > act_max), both roundings, saturation both ways."""
    rng = np.random.default_rng(7)
    w, x = rand_int8(rng, 11, 9), rand_int8(rng, 3, 9)
    bias = rand_bias(rng, 11)
    for multiplier, shift in [(0, 0), (1 << 30, 1), ((1 << 31) - 1, 31), ((1 << 31) - 1, -32),
                              (1 << 30, -31), (3 << 29, -20), (1 << 30, -24)]:
        for zero_point, act_min, act_max in [(0, -128, 127), (-128, -128, 127), (127, -128, 127),
                                             (-3, -3, 127), (-128, -128, -100), (0, 10, -10)]:
            for double in (False, True):
                quant = dict(multiplier=multiplier, shift=shift, zero_point=zero_point,
                             act_min=act_min, act_max=act_max, double_rounding=double)
                y = run_gemv(w, x, bias=bias, **quant).y
                check(y, reference(w, x, bias, **quant), f"{quant}")


def test_per_channel_requantization_uses_each_outputs_channel():
    """Per-channel multipliers and shifts across partial tiles and passes: output j uses
    channel j's pair (a permutation of the pairs changes the answer)."""
    rng = np.random.default_rng(8)
    cfg = MacroConfig(lanes=4, depth=8, bias_depth=6)
    n, k = 15, 6
    w, x, bias = rand_int8(rng, n, k), rand_int8(rng, 2, k), rand_bias(rng, n, big=False)
    quant = dict(multiplier=rng.integers(1 << 30, 1 << 31, n), shift=np.arange(n) % 5 - 10)
    program = compile_gemv(w, x, cfg, bias=bias, **quant)
    assert len(program.passes) > 1 and program.tile_outputs == 4
    loads = [(count, arg.addr) for op, count, _, arg in commands(program)
             if op == Opcode.LOAD_QUANT]
    assert len(loads) == len(program.passes), "one LOAD_QUANT per pass"
    assert all(addr + count <= cfg.bias_depth for count, addr in loads)
    y = program.extract(GoldenMacro(cfg).run(program.words))[0]
    check(y, reference(w, x, bias, **quant), "per channel")
    swapped = dict(quant, shift=quant["shift"][::-1].copy())
    assert not np.array_equal(y, reference(w, x, bias, **swapped)), \
        "test premise: the channels' shifts matter"


@pytest.mark.parametrize("r", [1, 2, 4])
def test_k_chunked_by_depth_reloads_only_that_tile(r):
    """A tile whose K needs more rows than depth: weights are chunked and rewritten for every
    vector, MATVECs after the first chunk accumulate, results stay exact."""
    rng = np.random.default_rng(r)
    cfg = MacroConfig(lanes=8, rows_per_cycle=r, depth=4, act_depth=64)
    n, k, batch = 10, 50, 3
    w, x, bias = rand_int8(rng, n, k), rand_int8(rng, batch, k), rand_bias(rng, n)
    program = compile_gemv(w, x, cfg, bias=bias)
    assert not program.resident, "a tile of 50 features cannot stay in 4 rows"
    rows = -(-k // r)
    assert weight_rows_written(program) == batch * 2 * rows, \
        "a tile bigger than the SRAM should be rewritten once per vector, no more"
    cmds = commands(program)
    assert any(op == Opcode.MATVEC and flags & Flag.ACCUMULATE for op, _, flags, _ in cmds), \
        "chunks after the first should use ACCUMULATE"
    assert all(count <= cfg.depth for op, count, _, _ in cmds if op == Opcode.MATVEC), \
        "no MATVEC may read more rows than depth"
    y, counters = program.extract(GoldenMacro(cfg).run(program.words))
    check(y, reference(w, x, bias), "chunked by depth")
    assert counters["row_reads"] == batch * 2 * rows, \
        "every vector should read each (padded) weight row exactly once"


@pytest.mark.parametrize("r", [1, 2, 4])
def test_k_chunked_by_act_depth_keeps_weights_resident(r):
    """K larger than the activation buffer: activations are loaded in chunks (multiples of
    4*R except the last), the weights are written once."""
    rng = np.random.default_rng(10 + r)
    cfg = MacroConfig(lanes=8, rows_per_cycle=r, depth=256, act_depth=16 * r + 4)
    n, k, batch = 19, 45 * r + 3, 2
    w, x = rand_int8(rng, n, k), rand_int8(rng, batch, k)
    quant = dict(multiplier=1 << 30, shift=-9)
    program = compile_gemv(w, x, cfg, **quant)
    rows = -(-k // r)
    assert program.resident, "3 tiles of rows should fit in 256 rows"
    assert weight_rows_written(program) == 3 * rows, \
        "weights should be written exactly once when they fit"
    loads = [count for op, count, _, _ in commands(program) if op == Opcode.LOAD_ACT]
    per_tile = -(-rows * r // program.chunk)
    assert len(loads) == batch * 3 * per_tile, "one LOAD_ACT per chunk, tile and vector"
    for i in range(0, len(loads), per_tile):
        chunks = loads[i:i + per_tile]
        assert all(c % (4 * r) == 0 and c <= cfg.act_depth for c in chunks[:-1]), \
            f"chunks other than the last should be multiples of 4*R within act_depth: {chunks}"
        assert sum(chunks) == rows * r, "the chunks should cover the padded K exactly"
    check(run_gemv(w, x, cfg, **quant).y, reference(w, x, None, **quant), "chunked by act_depth")


@pytest.mark.parametrize("r", [1, 2, 4])
@pytest.mark.parametrize("k", [5, 14])
def test_weights_beyond_capacity_use_passes_without_reload(r, k):
    """Total weight rows exceed depth: several passes, each written once and reused by every
    vector of the batch; WRITE_WEIGHTS rows equal the weight rows exactly."""
    rng = np.random.default_rng(r * 100 + k)
    cfg = MacroConfig(lanes=8, rows_per_cycle=r, depth=16, act_depth=256)
    n, batch = 100, 4
    rows = -(-k // r)
    tiles = -(-n // 8)
    assert rows <= cfg.depth < tiles * rows, \
        "test premise: each tile fits, the weights as a whole do not"
    w, x, bias = rand_int8(rng, n, k), rand_int8(rng, batch, k), rand_bias(rng, n)
    program = compile_gemv(w, x, cfg, bias=bias)
    assert len(program.passes) > 1, "weights beyond the SRAM should be split into passes"
    assert weight_rows_written(program) == tiles * rows, \
        (f"expected {tiles * rows} weight rows written (each once), got "
         f"{weight_rows_written(program)}: weights are reloaded beyond necessity")
    y, counters = program.extract(GoldenMacro(cfg).run(program.words))
    check(y, reference(w, x, bias), "several passes")
    assert counters["row_reads"] == counters["mac_active"] == batch * tiles * rows, \
        "the counters should show each vector reading every weight row once"


@pytest.mark.parametrize("bias_depth", [1, 4, 12, 20])
def test_bias_beyond_bias_depth(bias_depth):
    """Biases that do not fit at once: passes are limited by the bias memory (and tiles shrink
    to bias_depth outputs when it is smaller than lanes); every LOAD_BIAS fits."""
    rng = np.random.default_rng(bias_depth)
    cfg = MacroConfig(lanes=8, depth=256, bias_depth=bias_depth)
    n, k = 37, 11
    w, x, bias = rand_int8(rng, n, k), rand_int8(rng, 3, k), rand_bias(rng, n)
    quant = dict(multiplier=rng.integers(1 << 30, 1 << 31, n), shift=-25)
    program = compile_gemv(w, x, cfg, bias=bias, **quant)
    for opcode in (Opcode.LOAD_BIAS, Opcode.LOAD_QUANT):
        loads = [(count, arg.addr) for op, count, _, arg in commands(program) if op == opcode]
        assert len(loads) > 1, f"37 channels cannot be loaded at once ({opcode.name})"
        assert all(arg + count <= bias_depth for count, arg in loads), \
            f"every {opcode.name} should fit in {bias_depth} channels: {loads}"
    check(run_gemv(w, x, cfg, bias=bias, **quant).y, reference(w, x, bias, **quant),
          f"bias_depth={bias_depth}")
    check(run_gemv(w, x, cfg, **quant).y, reference(w, x, None, **quant),
          f"no bias, bias_depth={bias_depth}")
    check(run_gemv(w, x, cfg, bias=bias).y, reference(w, x, bias), f"raw, bias_depth={bias_depth}")


def test_counts_beyond_16_bits_are_split():
    """A K longer than a header count (65535) on a maximal macro: loads and MATVEC are split."""
    rng = np.random.default_rng(3)
    cfg = MacroConfig(lanes=4, depth=65536, act_depth=65536, bias_depth=4)
    k = 65536 + 7
    w, x = rand_int8(rng, 3, k), rand_int8(rng, k)
    program = compile_gemv(w, x, cfg)
    assert all(count <= 0xFFFF for _, count, _, _ in commands(program)), \
        "every count must fit its 16-bit field"
    check(run_gemv(w, x, cfg).y, reference(w, x), "K > 65535")


def test_program_brackets_counters():
    """The program starts with READ_COUNTERS(CLEAR) and ends with READ_COUNTERS; golden reports
    the untimed counters as 0."""
    rng = np.random.default_rng(5)
    w, x = rand_int8(rng, 9, 6), rand_int8(rng, 2, 6)
    program = compile_gemv(w, x, MacroConfig())
    cmds = commands(program)
    assert cmds[0][0] == Opcode.READ_COUNTERS and cmds[0][2] == Flag.CLEAR, \
        "the first command should be READ_COUNTERS with CLEAR"
    assert cmds[-1][0] == Opcode.READ_COUNTERS and cmds[-1][2] == Flag(0), \
        "the last command should be READ_COUNTERS without CLEAR"
    counters = run_gemv(w, x).counters
    assert counters["cycles"] == counters["stall_in"] == counters["stall_out"] == 0, \
        f"golden counters for time should be 0: {counters}"
    assert counters["row_reads"] == 2 * 2 * 6, f"2 vectors x 2 tiles x 6 rows: {counters}"
    assert counters["beats_in"] == len(program.words) - 1, \
        "BEATS_IN should count the program after the clearing READ_COUNTERS"


# -- error reporting --------------------------------------------------------------------------

def test_extract_names_the_failed_command():
    """A command the macro rejects (here: weights beyond a smaller macro's depth)."""
    rng = np.random.default_rng(0)
    w, x = rand_int8(rng, 8, 40), rand_int8(rng, 40)
    program = compile_gemv(w, x, MacroConfig(depth=64))
    out = GoldenMacro(MacroConfig(depth=32)).run(program.words)
    with pytest.raises(RuntimeError, match=r"WRITE_WEIGHTS.*BAD_ADDRESS"):
        program.extract(out)


def test_extract_rejects_truncated_output():
    rng = np.random.default_rng(0)
    program = compile_gemv(rand_int8(rng, 8, 4), rand_int8(rng, 4), MacroConfig())
    out = GoldenMacro(MacroConfig()).run(program.words)
    with pytest.raises(RuntimeError, match="answered|ends inside"):
        program.extract(out[:-3])
    responses = parse_responses(out)
    assert len(responses) == len(commands(program)), "one response per command"


@pytest.mark.parametrize("r", [1, 2, 4])
def test_activations_are_double_buffered(r):
    """Consecutive LOAD_ACTs alternate between the two halves of the activation buffer, and
    every MATVEC reads the half its vector was just loaded into."""
    rng = np.random.default_rng(30 + r)
    cfg = MacroConfig(lanes=8, rows_per_cycle=r, depth=128, act_depth=256)
    w, x = rand_int8(rng, 20, 50), rand_int8(rng, 5, 50)
    program = compile_gemv(w, x, cfg)
    assert program.act_buffers == 2
    half = -(-program.chunk // 4) * 4
    loaded, reads = [], []
    for op, count, _, arg in commands(program):
        if op == Opcode.LOAD_ACT:
            loaded.append(arg.addr)
        elif op == Opcode.MATVEC:
            reads.append((arg.act, loaded[-1]))
    assert loaded == [(i % 2) * half for i in range(len(loaded))], \
        f"loads should alternate between 0 and {half}: {loaded}"
    assert all(act == base for act, base in reads), "a MATVEC should read the latest vector"
    assert 2 * half <= cfg.act_depth
    check(run_gemv(w, x, cfg).y, reference(w, x), "double-buffered")


def test_single_buffer_when_two_copies_do_not_fit():
    rng = np.random.default_rng(40)
    cfg = MacroConfig(lanes=8, depth=256, act_depth=64)
    w, x = rand_int8(rng, 8, 60), rand_int8(rng, 3, 60)
    program = compile_gemv(w, x, cfg)
    assert (program.act_buffers, program.chunk) == (2, 32), \
        "K = 60 does not fit twice in 64 bytes: it is chunked to fit a half"
    check(run_gemv(w, x, cfg).y, reference(w, x), "chunked into halves")
    tiny = MacroConfig(lanes=8, rows_per_cycle=4, depth=256, act_depth=24)
    program = compile_gemv(w, x, tiny)
    assert program.act_buffers == 1, "a half of 24 bytes holds no whole 4*R chunk"
    check(run_gemv(w, x, tiny).y, reference(w, x), "single buffer")


def test_preloaded_clears_counters_after_the_weights():
    rng = np.random.default_rng(41)
    cfg = MacroConfig()
    w, x = rand_int8(rng, 8, 64), rand_int8(rng, 4, 64)
    program = compile_gemv(w, x, cfg, preloaded=True)
    ops = [op for op, *_ in commands(program)]
    assert ops[:2] == [Opcode.WRITE_WEIGHTS, Opcode.READ_COUNTERS], ops[:3]
    result = run_gemv(w, x, cfg, preloaded=True, arch="baseline")
    # The weight load (header, row, 64 rows of 2 words) and the clearing READ_COUNTERS header
    # come before the counters start.
    assert result.counters["beats_in"] == len(program.words) - (2 + 64 * 2) - 1, \
        "the counted input should exclude the weight load"
    check(result.y, reference(w, x), "preloaded, baseline")
    with pytest.raises(ValueError, match="preloaded needs a tile's 64 weight rows"):
        compile_gemv(w, x, MacroConfig(depth=32), preloaded=True)


@pytest.mark.parametrize("arch", ["pim", "baseline"])
def test_model_sim_gives_golden_results_and_timed_counters(arch):
    rng = np.random.default_rng(42)
    cfg = MacroConfig(lanes=8, rows_per_cycle=2, bus_bits=16)
    w, x = rand_int8(rng, 21, 70), rand_int8(rng, 3, 70)
    golden = run_gemv(w, x, cfg, sim="golden", arch=arch)
    model = run_gemv(w, x, cfg, sim="model", arch=arch)
    check(model.y, reference(w, x), "model")
    assert golden.counters["cycles"] == 0 < model.counters["cycles"]
    untimed = {"cycles", "stall_in", "stall_out"}
    assert {k: v for k, v in model.counters.items() if k not in untimed} == \
        {k: v for k, v in golden.counters.items() if k not in untimed}
    assert model.counters["bus_beats"] == (
        model.counters["row_reads"] * cfg.beats_per_row if arch == "baseline" else 0)


def test_unknown_simulator_lists_choices():
    with pytest.raises(ValueError, match="'golden', 'model', 'icarus', 'verilator'.*'modelsim'"):
        run_gemv(np.zeros((2, 2), np.int8), np.zeros(2, np.int8), sim="modelsim")


def test_hung_macro_is_reported(monkeypatch):
    class FakeSession:                  # the RTL session, its macro never answering
        def __init__(self, *args, **kwargs):
            pass

        def play(self, words, *, max_cycles, **kwargs):
            return JobResult(out=[], cycles=max_cycles, finished=False)

        def close(self):
            pass
    monkeypatch.setattr(driver_module, "RTLSession", FakeSession)
    with pytest.raises(RuntimeError, match=r"did not finish.*\(hung\?\)"):
        run_gemv(np.zeros((2, 2), np.int8), np.zeros(2, np.int8), sim="icarus")


W13 = np.zeros((5, 13), np.int8)
X13 = np.zeros(13, np.int8)

VALIDATION = {
    "weights dtype": (dict(weights=np.zeros((5, 13))), "weights must be int8, not float64"),
    "weights list": (dict(weights=[[1, 2]]), "weights must be int8, not int64"),
    "weights 1-D": (dict(weights=np.zeros(5, np.int8)),
                    r"weights must be a 2-D \(N, K\) array, not shape \(5,\)"),
    "weights empty": (dict(weights=np.zeros((0, 13), np.int8)), "weights must not be empty"),
    "inputs dtype": (dict(inputs=np.zeros(13, np.int16)), "inputs must be int8, not int16"),
    "inputs 3-D": (dict(inputs=np.zeros((1, 1, 13), np.int8)),
                   r"inputs must be a 1-D \(K,\) or 2-D \(B, K\) array"),
    "features": (dict(inputs=np.zeros(12, np.int8)),
                 "inputs have 12 features but weights expect 13"),
    "no vectors": (dict(inputs=np.zeros((0, 13), np.int8)), "inputs hold no vectors"),
    "bias dtype": (dict(bias=np.zeros(5, np.int64)), "bias must be int32, not int64"),
    "bias shape": (dict(bias=np.zeros(4, np.int32)), r"bias must have shape \(5,\), not \(4,\)"),
    "multiplier alone": (dict(multiplier=3), "multiplier and shift must be given together"),
    "shift alone": (dict(shift=3), "multiplier and shift must be given together"),
    "zero point raw": (dict(zero_point=3), "zero_point needs requantized mode"),
    "act_min raw": (dict(act_min=0), "act_min needs requantized mode"),
    "double rounding raw": (dict(double_rounding=True), "double_rounding needs requantized"),
    "multiplier range": (dict(multiplier=1 << 31, shift=1),
                         "multiplier must be 0..2147483647, not 2147483648"),
    "multiplier negative": (dict(multiplier=-1, shift=1), "multiplier must be 0..2147483647"),
    "multiplier float": (dict(multiplier=1.5, shift=1), "multiplier must be an integer"),
    "multiplier bool": (dict(multiplier=True, shift=1), "multiplier must be an integer"),
    "multiplier shape": (dict(multiplier=np.ones(4, np.int64), shift=1),
                         r"multiplier must be an integer or have shape \(5,\)"),
    "multiplier array range": (dict(multiplier=np.array([1, 2, -3, 4, 5]), shift=1),
                               "multiplier must be 0..2147483647, not -3"),
    "shift range": (dict(multiplier=1, shift=32), "shift must be -32..31, not 32"),
    "shift low": (dict(multiplier=1, shift=np.full(5, -33)), "shift must be -32..31, not -33"),
    "shift float array": (dict(multiplier=1, shift=np.zeros(5)),
                          "shift must be an integer array, not float64"),
    "zero point range": (dict(multiplier=1, shift=0, zero_point=128),
                         "zero_point must be -128..127, not 128"),
    "act_max range": (dict(multiplier=1, shift=0, act_max=-129),
                      "act_max must be -128..127, not -129"),
    "config": (dict(config={"lanes": 8}), "config must be a MacroConfig"),
}


@pytest.mark.parametrize("name", list(VALIDATION))
def test_validation_error(name):
    changes, message = VALIDATION[name]
    args = dict(weights=W13, inputs=X13, config=MacroConfig())
    args.update(changes)
    with pytest.raises(ValueError, match=message):
        compile_gemv(args.pop("weights"), args.pop("inputs"), args.pop("config"), **args)


@pytest.mark.parametrize("option", ["idle", "backpressure"])
def test_stall_probabilities_checked(option):
    with pytest.raises(ValueError, match=rf"{option} must be a probability in \[0, 1\)"):
        run_gemv(W13, X13, **{option: 1.0})


# -- RTL -------------------------------------------------------------------------------------

# The same configurations as tb/test_rtl.py, so that the builds under build/rtl are shared.
RTL_SMALL = MacroConfig()
RTL_TILED = MacroConfig(lanes=8, rows_per_cycle=2, depth=64, act_depth=256, bias_depth=32)

UNTIMED_EQUAL = ("mac_active", "row_reads", "beats_in", "beats_out")



@pytest.mark.parametrize("stalls", [(0.0, 0.0), (0.3, 0.5)], ids=["free", "stalled"])
@pytest.mark.parametrize("mode", ["raw", "int8"])
@pytest.mark.parametrize("sim", SIMULATORS)
def test_rtl_gemv(sim, mode, stalls):
    """run_gemv on the RTL: exact Y, counters equal to golden's where they do not depend on
    time, and plausible timed counters."""
    idle, backpressure = stalls
    rng = np.random.default_rng(len(sim) * 10 + len(mode))
    w, x, bias = rand_int8(rng, 13, 21), rand_int8(rng, 2, 21), rand_bias(rng, 13)
    quant = rand_quant(rng, 13) if mode == "int8" else {}
    # A missing simulator is a failure (SimulatorMissing), not a skip: make test installs both.
    result = run_gemv(w, x, RTL_SMALL, bias=bias, sim=sim, idle=idle,
                      backpressure=backpressure, seed=11, **quant)
    check(result.y, reference(w, x, bias, **quant), f"{sim} {mode}")
    golden = run_gemv(w, x, RTL_SMALL, bias=bias, **quant).counters
    for name in UNTIMED_EQUAL:
        assert result.counters[name] == golden[name], \
            f"{sim} counter {name} should equal golden's {golden[name]}: {result.counters}"
    assert result.counters["cycles"] > result.counters["row_reads"], \
        f"{sim} should count at least one cycle per row read: {result.counters}"
    if idle:
        assert result.counters["stall_in"] > 0 and result.counters["stall_out"] > 0, \
            f"{sim}: idle source and back-pressure should show in the stall counters"


@pytest.mark.parametrize("sim", SIMULATORS)
def test_rtl_gemv_tiled(sim):
    """Several passes with biases, and K chunked by both depth and act_depth, on R=2 RTL; all
    programs played in one simulator run."""
    rng = np.random.default_rng(2)
    problems = []
    for n, k, batch in [(40, 40, 2), (10, 300, 2)]:
        w, x, bias = rand_int8(rng, n, k), rand_int8(rng, batch, k), rand_bias(rng, n)
        for quant in ({}, rand_quant(rng, n)):
            problems.append((w, x, bias, quant, compile_gemv(w, x, RTL_TILED, bias=bias, **quant)))
    assert len(problems[0][4].passes) > 1, "test premise: several passes"
    assert not problems[2][4].resident, "test premise: weights chunked by depth"
    jobs = [Job(p[4].words, idle=0.2 * (i % 2), backpressure=0.4 * (i % 2), seed=i)
            for i, p in enumerate(problems)]
    results = run_rtl(jobs, RTL_TILED, sim=sim)
    for i, ((w, x, bias, quant, program), result) in enumerate(zip(problems, results)):
        assert result.finished, f"{sim}: program {i} did not finish"
        y, counters = program.extract(result.out)
        check(y, reference(w, x, bias, **quant), f"{sim} program {i} ({program.shape}, {quant})")
        golden = program.extract(GoldenMacro(RTL_TILED).run(program.words))[1]
        for name in UNTIMED_EQUAL:
            assert counters[name] == golden[name], \
                f"{sim} program {i}: counter {name} should equal golden's {golden[name]}"
