"""Host-side GEMV driver: compile ``Y = X @ W.T (+ bias)`` into a macro program, run it on the
golden model or the RTL, and read the answer back.

:func:`compile_gemv` turns int8 weights ``W`` (N, K), int8 inputs ``X`` (K,) or (B, K) and an
optional int32 ``bias`` (N,) into a :class:`GemvProgram`; :meth:`GemvProgram.extract` turns the
macro's output stream back into ``Y`` and the performance counters; :func:`run_gemv` does both
around a simulator run. Raw mode (no ``multiplier``) returns int32 ``wrap32(W @ x + bias)`` from
``EMIT_RAW``; requantized mode returns int8 from ``EMIT_INT8``: TFLite's int8 rule,
:func:`pim_macro.sw.models.requant.requantize` with a per-tensor or per-channel Q31
``multiplier`` and ``shift`` (loaded into the channel memory with ``LOAD_QUANT``), the output
``zero_point`` and the clamp ``[act_min, act_max]``, in single or (``double_rounding``) double
rounding.

Tiling
======

With L = ``lanes``, R = ``rows_per_cycle``, D = ``depth``, A = ``act_depth``, BD = ``bias_depth``:

* **Output tiles.** Outputs are computed in tiles of ``S`` consecutive rows of W, one per lane:
  ``S = L``, or ``S = BD`` when a bias is given or the outputs are requantized and ``BD < L``
  (a tile's channels -- bias, multiplier, shift -- must fit the channel memory at once). The
  last tile may be partial: its ``EMIT`` count is the number of remaining
  outputs and the weights of the absent lanes are zero.
* **K layout.** K is padded with zero weights and zero activations to ``Kp``, a multiple of R,
  and each tile is laid out with :func:`pim_macro.sw.runtime.asm.weight_rows` into ``Kp / R`` rows.
* **Passes (weight residency).** When a tile's rows fit in D, whole tiles are grouped into
  *passes*: as many tiles as fit in D rows and whose channels fit in BD entries (tile ``i`` of a
  pass at rows ``i * Kp/R`` and channel ``i * S``). A pass's weights, biases and requantization
  (one ``LOAD_QUANT`` of ``2 * S`` words per tile) are loaded once,
  then every batch vector is run through it; so weights are written exactly once in total, and
  are only split into several passes when they exceed the SRAM.
* **K chunks.** When a tile's rows exceed D or ``Kp`` exceeds A, K is split into chunks of
  ``C`` elements: the largest multiple of ``4 * R`` (or, in tiny configurations where that is
  zero, of R) within A, and within ``D * R`` when the tile's rows exceed D; the last chunk is
  what remains. The first chunk's ``MATVEC`` clears the accumulators, the others
  ``ACCUMULATE``. Only when a single tile needs more rows than D is each of its weight chunks
  rewritten at row 0 for every vector (each pass then holds that one tile); otherwise the
  chunks' weights stay resident and only the activations are reloaded.
* **Activations, double-buffered.** When two copies fit in A, the activation buffer is split
  into two halves and consecutive loads alternate between them (chunks are then sized to fit a
  half), so the next vector or chunk streams in while the MAC lanes still read the previous one:
  a ``LOAD_ACT`` only waits for MATVECs reading its own half. Without chunking a vector is
  loaded once per vector and pass and shared by the pass's tiles.
* **Batches.** Vectors run one after another; ``Y`` is assembled row by row.
* **Field limits.** Loads and ``MATVEC`` s longer than a 16-bit ``count`` are split into several
  commands (the ``MATVEC`` pieces accumulate).

The program starts with ``READ_COUNTERS`` (clear) and ends with ``READ_COUNTERS``, so the final
counters measure the workload (the golden model reports 0 for the timed counters). With
``preloaded=True`` the clearing ``READ_COUNTERS`` comes after the first pass's weights, biases and
requantization are written instead: the counters then measure a network whose weights already
sit in the macro.
"""

from dataclasses import dataclass, field
from numbers import Integral

import numpy as np

from pim_macro.hw.isa import (
    INT8_PER_WORD, LANE_COUNTED, OPCODES, REQUANT_MULT_BITS, REQUANT_SHIFT_MAX, REQUANT_SHIFT_MIN,
    Header, MacroConfig, Opcode, Words,
)
from pim_macro.sw.runtime import asm
from pim_macro.sw.runtime.board_link import BoardMissing
from pim_macro.sw.runtime.driver import SIMS, check_run_options, execute
from pim_macro.sw.runtime.rtl import SimulatorMissing


__all__ = ["GemvProgram", "GemvResult", "compile_gemv", "run_gemv", "SIMS"]



_MAX_COUNT = (1 << Header["count"].width) - 1
_MAX_LOAD_ACT = _MAX_COUNT // INT8_PER_WORD * INT8_PER_WORD   # every split LOAD_ACT word-aligned
# The commands whose data words are the lanes' results (EMIT_RAW, EMIT_INT8).
_EMITS = frozenset(op.value for op in LANE_COUNTED if OPCODES[op].response != Words())
_MULT_MAX = (1 << REQUANT_MULT_BITS) - 1


@dataclass(frozen=True)
class _Emit:
    batch: int      # row of Y
    start: int      # first output (column of Y)
    count: int      # outputs emitted


@dataclass
class GemvProgram:
    """A compiled GEMV: the command ``words`` plus what is needed to read the answer.

    ``batch``, ``n``, ``k``: problem shape (``batch`` is 1 for a 1-D input, and then ``squeeze``
    is true); ``mode`` is ``"raw"`` or ``"int8"`` (requantized). Tiling: ``tile_outputs`` (S),
    ``tiles``,
    ``k_padded``, ``rows_per_tile``, ``chunk`` (elements per K chunk; ``k_padded`` when K is not
    chunked), ``passes`` (tuples of tile indices) and ``resident`` (weights loaded once per pass,
    rather than per vector)."""
    words: list
    config: MacroConfig
    batch: int
    n: int
    k: int
    mode: str
    squeeze: bool
    tile_outputs: int
    tiles: int
    k_padded: int
    rows_per_tile: int
    chunk: int
    passes: tuple
    resident: bool
    act_buffers: int = 1
    preloaded: bool = False
    _commands: list = field(repr=False, default_factory=list)   # Opcode of each command
    _emits: list = field(repr=False, default_factory=list)

    @property
    def shape(self):
        return {"batch": self.batch, "n": self.n, "k": self.k}

    def extract(self, output_words):
        """Parse the macro's output stream: returns ``(y, counters)``.

        ``y`` is int32 (raw) or int8 (requantized), shape (batch, n), or (n,) for a 1-D input;
        ``counters`` is the final ``READ_COUNTERS`` as a dict. Raises ``RuntimeError`` if the
        stream is malformed or any command did not report OK."""
        try:
            responses = asm.parse_responses(output_words)
        except ValueError as exc:
            raise RuntimeError(f"malformed output stream: {exc}") from None
        for i, (response, opcode) in enumerate(zip(responses, self._commands)):
            if response.opcode != opcode.value:
                raise RuntimeError(f"response {i} echoes opcode {response.opcode:#04x}, but "
                                   f"command {i} is {opcode.name}")
            if not response.ok:
                raise RuntimeError(f"command {i} ({opcode.name}) failed with "
                                   f"{response.error.name}")
        if len(responses) != len(self._commands):
            raise RuntimeError(f"the macro answered {len(responses)} of "
                               f"{len(self._commands)} commands")
        dtype = np.int32 if self.mode == "raw" else np.int8
        y = np.zeros((self.batch, self.n), dtype=dtype)
        emits = iter(self._emits)
        for response in responses:
            if response.opcode not in _EMITS:
                continue
            e = next(emits)
            if self.mode == "raw":
                values = response.int32()[:e.count]
            else:
                values = asm.unpack_bytes(response.data, e.count)
            y[e.batch, e.start:e.start + e.count] = values
        counters = responses[-1].counters()
        return (y[0] if self.squeeze else y), counters


@dataclass
class GemvResult:
    """``y`` and the final counters (a dict by counter name) of a run on ``sim``."""
    y: np.ndarray
    counters: dict
    sim: str
    config: MacroConfig
    arch: str = "pim"
    program: GemvProgram = None

    @property
    def macs(self):
        """Useful multiply-accumulates: ``batch * n * k`` (padding excluded)."""
        p = self.program
        return p.batch * p.n * p.k

    @property
    def utilization(self):
        """Useful MACs per MAC unit per cycle: ``macs / (lanes * R * cycles)``."""
        cycles = self.counters.get("cycles", 0)
        if not cycles:
            return None
        return self.macs / (self.config.lanes * self.config.rows_per_cycle * cycles)


# -- validation ------------------------------------------------------------------------------

def _int8_array(name, value):
    a = np.asarray(value)
    if a.dtype != np.int8:
        raise ValueError(f"{name} must be int8, not {a.dtype}")
    return a


def _integer(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be {lo}..{hi}, not {value}")
    return value


def _per_channel(name, value, n, lo, hi):
    """``value`` (an integer, or an integer array of shape (n,)) as an int64 array (n,)."""
    a = np.asarray(value)
    if a.ndim == 0:
        if isinstance(value, (bool, np.bool_)) or a.dtype.kind not in "iu":
            raise ValueError(f"{name} must be an integer or an integer array ({n},), not "
                             f"{value!r}")
        return np.full(n, _integer(name, int(a), lo, hi), dtype=np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, not {a.dtype}")
    if a.shape != (n,):
        raise ValueError(f"{name} must be an integer or have shape ({n},) (one per output), "
                         f"not {a.shape}")
    bad = a[(a < lo) | (a > hi)]
    if bad.size:
        raise ValueError(f"{name} must be {lo}..{hi}, not {int(bad[0])}")
    return a.astype(np.int64)


@dataclass(frozen=True)
class _Quant:
    """The validated requantization of requantized mode: per-output ``multiplier``, ``shift``
    (int64 (N,)), and the command's ``zero_point``, ``act_min``, ``act_max``,
    ``double_rounding``."""
    multiplier: np.ndarray
    shift: np.ndarray
    zero_point: int
    act_min: int
    act_max: int
    double_rounding: bool

    def command(self):
        return dict(zero_point=self.zero_point, act_min=self.act_min, act_max=self.act_max,
                    double_rounding=self.double_rounding)


def _validate(weights, inputs, config, bias, multiplier, shift, zero_point, act_min, act_max,
              double_rounding):
    if not isinstance(config, MacroConfig):
        raise ValueError(f"config must be a MacroConfig, not {config!r}")
    w = _int8_array("weights", weights)
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-D (N, K) array, not shape {w.shape}")
    if 0 in w.shape:
        raise ValueError(f"weights must not be empty, not shape {w.shape}")
    n, k = w.shape
    x = _int8_array("inputs", inputs)
    if x.ndim not in (1, 2):
        raise ValueError(f"inputs must be a 1-D (K,) or 2-D (B, K) array, not shape {x.shape}")
    if x.shape[-1] != k:
        raise ValueError(f"inputs have {x.shape[-1]} features but weights expect {k}")
    if x.ndim == 2 and x.shape[0] == 0:
        raise ValueError(f"inputs hold no vectors (shape {x.shape})")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != np.int32:
            raise ValueError(f"bias must be int32, not {bias.dtype}")
        if bias.shape != (n,):
            raise ValueError(f"bias must have shape ({n},), not {bias.shape}")
    if (multiplier is None) != (shift is None):
        raise ValueError("multiplier and shift must be given together (requantized mode)")
    if multiplier is None:
        given = [name for name, value, default in (
            ("zero_point", zero_point, 0), ("act_min", act_min, -128), ("act_max", act_max, 127),
            ("double_rounding", double_rounding, False)) if value != default]
        if given:
            raise ValueError(f"{given[0]} needs requantized mode: give multiplier and shift")
        return w, x, bias, None
    quant = _Quant(_per_channel("multiplier", multiplier, n, 0, _MULT_MAX),
                   _per_channel("shift", shift, n, REQUANT_SHIFT_MIN, REQUANT_SHIFT_MAX),
                   _integer("zero_point", zero_point, -128, 127),
                   _integer("act_min", act_min, -128, 127),
                   _integer("act_max", act_max, -128, 127), bool(double_rounding))
    return w, x, bias, quant


# -- compilation -----------------------------------------------------------------------------

class _Builder:
    """Accumulates commands, splitting those whose count exceeds the 16-bit field."""

    def __init__(self, config):
        self.config = config
        self.words = []
        self.commands = []

    def add(self, opcode, words):
        self.words.extend(words)
        self.commands.append(opcode)

    def write_weights(self, row, rows):
        for i in range(0, rows.shape[0], _MAX_COUNT):
            self.add(Opcode.WRITE_WEIGHTS,
                     asm.encode_write_weights(row + i, rows[i:i + _MAX_COUNT], self.config))

    def load_act(self, values, base=0):
        for i in range(0, values.size, _MAX_LOAD_ACT):
            self.add(Opcode.LOAD_ACT, asm.encode_load_act(base + i, values[i:i + _MAX_LOAD_ACT]))

    def load_bias(self, values):
        for i in range(0, values.size, _MAX_COUNT):
            self.add(Opcode.LOAD_BIAS, asm.encode_load_bias(i, values[i:i + _MAX_COUNT]))

    def load_quant(self, multipliers, shifts):
        for i in range(0, multipliers.size, _MAX_COUNT):
            self.add(Opcode.LOAD_QUANT, asm.encode_load_quant(
                i, multipliers[i:i + _MAX_COUNT], shifts[i:i + _MAX_COUNT]))

    def matvec(self, row, count, *, accumulate, act=0):
        r = self.config.rows_per_cycle
        for j in range(0, count, _MAX_COUNT):
            self.add(Opcode.MATVEC, asm.encode_matvec(row + j, act + r * j,
                                                      min(_MAX_COUNT, count - j),
                                                      accumulate=accumulate or j > 0))


def compile_gemv(weights, inputs, config, *, bias=None, multiplier=None, shift=None,
                 zero_point=0, act_min=-128, act_max=127, double_rounding=False,
                 preloaded=False):
    """Compile ``Y = X @ W.T (+ bias)`` for a macro of ``config``; see the module docstring.

    ``weights`` int8 (N, K); ``inputs`` int8 (K,) or (B, K); ``bias`` int32 (N,) or None.
    Without ``multiplier`` the outputs are raw int32 (``wrap32(W @ x + bias)``). With a Q31
    ``multiplier`` (``0 .. 2**31 - 1``) and a ``shift`` (``-32 .. 31``, positive: left), each
    an integer (per tensor) or an integer array (N,) (per output channel; TFLite's
    ``QuantizeMultiplier`` makes them, :func:`pim_macro.sw.models.requant.quantize_multiplier`),
    they are requantized to int8 by TFLite's rule
    (:func:`pim_macro.sw.models.requant.requantize`): output ``zero_point``, clamp ``[act_min,
    act_max]`` (signed bytes; a fused ReLU is ``act_min = zero_point``), single rounding or
    gemmlowp's ``double_rounding``. ``preloaded`` starts the counters once the first pass's
    weights are in the macro (an error when the weights of one tile do not fit it). Raises
    ``ValueError`` naming the problem for any invalid argument."""
    w, x, bias, quant = _validate(weights, inputs, config, bias, multiplier, shift, zero_point,
                                  act_min, act_max, double_rounding)
    c = config
    n, k = w.shape
    squeeze = x.ndim == 1
    x = x.reshape(-1, k)
    batch = x.shape[0]
    r, lanes = c.rows_per_cycle, c.lanes

    channels = bias is not None or quant is not None     # the channel memory is used
    s = min(lanes, c.bias_depth) if channels else lanes
    tiles = -(-n // s)
    rows_per_tile = -(-k // r)
    kp = rows_per_tile * r
    resident = rows_per_tile <= c.depth
    if preloaded and not resident:
        raise ValueError(f"preloaded needs a tile's {rows_per_tile} weight rows to fit the "
                         f"macro's {c.depth}; these weights are streamed in for every vector")
    limit = c.act_depth if resident else min(c.depth * r, c.act_depth)
    # Two activation buffers when two copies (rounded to whole words) fit, else one. Chunks are
    # whole words (a LOAD_ACT address is word-aligned) of whole rows (R activations each).
    word = INT8_PER_WORD
    step = word * r
    half = c.act_depth // 2 // step * step
    if kp <= limit and -(-kp // word) * word <= half:
        chunk, act_buffers = kp, 2
    elif half and min(limit, half) >= step:
        chunk, act_buffers = min(limit, half) // step * step, 2
    elif kp <= limit:
        chunk, act_buffers = kp, 1
    else:
        chunk, act_buffers = limit // step * step or limit // r * r, 1
    buffer_bytes = -(-chunk // word) * word
    loads = [0]                                 # activation loads so far: picks the buffer

    def next_buffer():
        base = (loads[0] % act_buffers) * buffer_bytes
        loads[0] += 1
        return base
    if resident:
        per_pass = c.depth // rows_per_tile
        if channels:
            per_pass = min(per_pass, c.bias_depth // s)
    else:
        per_pass = 1
    passes = tuple(tuple(range(t, min(t + per_pass, tiles))) for t in range(0, tiles, per_pass))

    xp = np.zeros((batch, kp), dtype=np.int8)
    xp[:, :k] = x

    def tile_count(t):
        return min(s, n - t * s)

    def tile_rows(t):
        tile = np.zeros((lanes, k), dtype=np.int8)
        tile[:tile_count(t)] = w[t * s:t * s + tile_count(t)]
        return asm.weight_rows(tile, c)

    b = _Builder(c)
    emits = []

    def emit(t, slot, vector):
        count = tile_count(t)
        if quant is None:
            b.add(Opcode.EMIT_RAW, asm.encode_emit_raw(
                count, bias=slot * s if bias is not None else None))
        else:
            b.add(Opcode.EMIT_INT8, asm.encode_emit_int8(
                count, channel=slot * s, bias=bias is not None, **quant.command()))
        emits.append(_Emit(vector, t * s, count))

    if not preloaded:
        b.add(Opcode.READ_COUNTERS, asm.encode_read_counters(clear=True))
    for number, group in enumerate(passes):
        rows = {t: tile_rows(t) for t in group}
        first = group[0] * s
        last = min(n, (group[-1] + 1) * s)
        if bias is not None:
            words = np.zeros(len(group) * s, dtype=np.int32)
            words[:last - first] = bias[first:last]
            b.load_bias(words)
        if quant is not None:       # absent lanes of a partial tile: multiplier 0, shift 0
            multipliers = np.zeros(len(group) * s, dtype=np.int64)
            shifts = np.zeros(len(group) * s, dtype=np.int64)
            multipliers[:last - first] = quant.multiplier[first:last]
            shifts[:last - first] = quant.shift[first:last]
            b.load_quant(multipliers, shifts)
        if resident:
            b.write_weights(0, np.concatenate([rows[t] for t in group]))
        if preloaded and number == 0:
            b.add(Opcode.READ_COUNTERS, asm.encode_read_counters(clear=True))
        for vector in range(batch):
            if chunk == kp:
                base = next_buffer()
                b.load_act(xp[vector], base)
                for slot, t in enumerate(group):
                    b.matvec(slot * rows_per_tile, rows_per_tile, accumulate=False, act=base)
                    emit(t, slot, vector)
                continue
            for slot, t in enumerate(group):
                for start in range(0, kp, chunk):
                    size = min(chunk, kp - start)
                    first_row = start // r
                    if resident:
                        row = slot * rows_per_tile + first_row
                    else:
                        row = 0
                        b.write_weights(0, rows[t][first_row:first_row + size // r])
                    base = next_buffer()
                    b.load_act(xp[vector, start:start + size], base)
                    b.matvec(row, size // r, accumulate=start > 0, act=base)
                emit(t, slot, vector)
    b.add(Opcode.READ_COUNTERS, asm.encode_read_counters())

    return GemvProgram(
        words=b.words, config=c, batch=batch, n=n, k=k, mode="raw" if quant is None else "int8",
        squeeze=squeeze, tile_outputs=s, tiles=tiles, k_padded=kp, rows_per_tile=rows_per_tile,
        chunk=chunk, passes=passes, resident=resident, act_buffers=act_buffers,
        preloaded=preloaded, _commands=b.commands, _emits=emits)


# -- running ---------------------------------------------------------------------------------

def run_gemv(weights, inputs, config=MacroConfig(), *, bias=None, multiplier=None, shift=None,
             zero_point=0, act_min=-128, act_max=127, double_rounding=False, sim="golden",
             arch="pim", preloaded=False, idle=0.0, backpressure=0.0, seed=0, port=None):
    """Compile (the arguments of :func:`compile_gemv`), run on ``sim`` and extract; returns a
    :class:`GemvResult`.

    ``sim`` is ``"golden"`` (results, untimed counters), ``"model"`` (results from the golden
    model, every counter from :mod:`pim_macro.sw.models.cycle_model`: what the RTL reports when
    nothing stalls), ``"icarus"`` or ``"verilator"`` (the RTL of ``arch``), or ``"board"`` (a board
    top on serial ``port``, see :mod:`pim_macro.sw.runtime.board_link`). ``idle``, ``backpressure``
    (probabilities in [0, 1)) and ``seed`` shape the RTL stream handshakes; the models ignore
    them. Raises ``ValueError`` for invalid arguments,
    :class:`pim_macro.sw.runtime.rtl.SimulatorMissing` when the simulator is not installed and
    ``RuntimeError`` when the run fails or the macro hangs."""
    check_run_options(sim, arch, idle, backpressure, port)
    program = compile_gemv(weights, inputs, config, bias=bias, multiplier=multiplier,
                           shift=shift, zero_point=zero_point, act_min=act_min, act_max=act_max,
                           double_rounding=double_rounding, preloaded=preloaded)
    work = program.batch * program.tiles * program.rows_per_tile
    try:
        out = execute(program.words, config, sim=sim, arch=arch, work=work, idle=idle,
                      backpressure=backpressure, seed=seed, port=port)
    except (SimulatorMissing, BoardMissing):
        raise                       # a missing back end keeps its type (the CLI exits 2)
    except RuntimeError as exc:
        raise RuntimeError(f"GEMV program: {exc}") from None
    y, counters = program.extract(out)
    return GemvResult(y=y, counters=counters, sim=sim, config=config, arch=arch,
                      program=program)
