"""Compile a quantized network (:mod:`pim_macro.sw.compiler.network`) into one command stream for
the macro.

Placement
=========

* **Weights.** Every layer's weight matrix (a convolution's in im2col order, see
  :meth:`pim_macro.sw.compiler.network.Conv.matrix`) is cut into *tiles* of ``lanes`` outputs
  (``bias_depth`` when that is smaller: a tile's channels must fit at once); a tile is
  ``ceil(K / R)`` weight rows. When all tiles fit the SRAM (``depth`` rows) they are written once,
  at the start, and stay. Otherwise the tiles are grouped, in layer order, into *passes* that
  each fit (rows and channels); then the samples are processed in *chunks* (as many as the
  activation buffer holds at once) and every pass is written once per chunk, so each weight
  crosses the input stream ``ceil(B / chunk)`` times: as few as the activation buffer allows.
* **Channels** (:mod:`pim_macro.hw.isa`'s channel memory): each output's folded bias
  (``b - input_zero_point * sum(w)``, :meth:`pim_macro.sw.compiler.network.Dense.folded_bias`:
  the macro multiplies the raw int8 activations, so the input zero point goes into the bias)
  with ``LOAD_BIAS``, and its multiplier and shift with ``LOAD_QUANT``, are loaded once when all
  fit the channel memory, else with each pass. Every ``WRITEBACK`` / ``EMIT_INT8`` then
  requantizes with its tile's channels and its layer's output zero point, clamp and rounding.
* **Activations** never leave the macro between layers. Each sample has a *slot* in the
  activation buffer with one region per layer, holding that layer's input: a dense layer's input
  vector, or a convolution's im2col patches (one per output position, ``kh * kw * C`` bytes,
  position-major, channels fastest). Slots are used round-robin, and the next sample's input
  load is issued right after the current sample's first ``MATVEC``, so it streams in while the
  lanes compute.
* **Chaining.** A layer's outputs are written straight into the next layer's region with
  ``WRITEBACK``: for a dense layer after a dense layer, one write-back per tile; after a
  convolution, the dense weights are permuted from (C, H, W) to (H, W, C) order so one output
  position's channels are contiguous; for a convolution after a convolution, each output
  position's channels are written back into every patch of the next layer that contains that
  position (several ``WRITEBACK`` s of the same captured accumulators: im2col on chip).
  Padding positions are never written: each such region is filled once, at the start, with its
  layer's input zero point (TFLite pads with it, so a padded tap contributes nothing).
  The last layer's outputs leave with ``EMIT_INT8``.

* **Tiles taller than the SRAM** (``ceil(K / R) > depth``) are *streamed*: for every sample
  (and output position) each K chunk of ``depth`` rows is written to row 0 and multiplied, the
  chunks accumulating; such a layer's weights cross the input stream once per sample.

Limits (clear ``ValueError`` s): one sample's slot must fit the activation buffer, and a
convolution may not follow a dense layer.
"""

from dataclasses import dataclass, field

import numpy as np

from pim_macro.hw.isa import FIELD_BITS, INT8_PER_WORD, MacroConfig, Opcode
from pim_macro.sw.runtime import asm
from pim_macro.sw.runtime.driver import check_run_options, execute
from pim_macro.sw.compiler.network import Conv, Dense, Network


__all__ = ["NetworkProgram", "InferenceResult", "compile_network", "run_network",
           "act_buffer_refusal"]


def _pad_words(n):
    """``n`` bytes rounded up to whole stream words: every region starts word-aligned, as a
    ``LOAD_ACT`` address must."""
    return -(-n // INT8_PER_WORD) * INT8_PER_WORD


@dataclass(frozen=True, eq=False)
class _Tile:
    layer: int
    index: int          # tile number within the layer
    start: int          # first output (row of the layer's matrix)
    count: int          # outputs
    rows: np.ndarray    # weight rows, (ceil(K/R), R, lanes)


@dataclass
class NetworkProgram:
    """A compiled network: ``words`` plus what :meth:`extract` needs to read the answer.
    ``passes`` is the number of weight groups (1 when every weight stays resident),
    ``chunk`` the samples processed per pass, ``weight_loads`` how many times the most-loaded
    weight is written (1 when resident, ``ceil(batch / chunk)`` when spilled, once per sample
    and output position for a streamed layer)."""
    words: list
    config: MacroConfig
    batch: int
    outputs: int
    passes: int
    chunk: int
    weight_loads: int
    weight_rows: int
    macs: int
    rows_read: int = 0
    _commands: list = field(repr=False, default_factory=list)
    _emits: list = field(repr=False, default_factory=list)   # (sample, output indices)

    def extract(self, output_words):
        """``(y, counters)``: int8 ``y`` (batch, outputs) and the final counters. Raises
        ``RuntimeError`` if the stream is malformed or a command failed."""
        try:
            responses = asm.parse_responses(output_words)
        except ValueError as exc:
            raise RuntimeError(f"malformed output stream: {exc}") from None
        if len(responses) != len(self._commands):
            raise RuntimeError(f"the macro answered {len(responses)} of "
                               f"{len(self._commands)} commands")
        y = np.zeros((self.batch, self.outputs), dtype=np.int8)
        emits = iter(self._emits)
        for i, (response, opcode) in enumerate(zip(responses, self._commands)):
            if response.opcode != opcode.value or not response.ok:
                raise RuntimeError(f"command {i} ({opcode.name}) answered opcode "
                                   f"{response.opcode:#04x} {response.error.name}")
            if opcode == Opcode.EMIT_INT8:
                sample, indices = next(emits)
                y[sample, indices] = asm.unpack_bytes(response.data, len(indices))
        return y, responses[-1].counters()


class _Program:
    def __init__(self, config):
        self.config = config
        self.words, self.commands, self.emits = [], [], []
        self.rows_read = 0

    def add(self, opcode, words):
        self.words.extend(words)
        self.commands.append(opcode)


def _matrices(network):
    """Each layer's (out, K) matrix as the macro multiplies it: a dense layer after a
    convolution has its columns permuted from (C, H, W) to (H, W, C) order."""
    mats = []
    for i, layer in enumerate(network.layers):
        m = layer.matrix()
        if isinstance(layer, Dense) and i and isinstance(network.layers[i - 1], Conv):
            c, h, w = network.layers[i - 1].out_shape
            m = m.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(m.shape[0], -1)
        mats.append(m)
    return mats


def compile_network(network: Network, x, config: MacroConfig, *, preloaded=False):
    """Compile ``network`` applied to the int8 batch ``x`` (see :meth:`Network.input_array`)
    into a :class:`NetworkProgram`. With ``preloaded`` the counters start after the one-time
    set-up (the zero-point fill of the buffer, the channels that fit, and the weights when all
    fit): they then measure a
    macro that is already serving this network, where spilled weights must still be reloaded
    for every chunk. Raises ``ValueError``."""
    if not isinstance(config, MacroConfig):
        raise ValueError(f"config must be a MacroConfig, not {config!r}")
    x = network.input_array(x)
    cfg = config
    lanes, r = cfg.lanes, cfg.rows_per_cycle
    layers = network.layers
    for i, layer in enumerate(layers):
        if isinstance(layer, Conv) and i and isinstance(layers[i - 1], Dense):
            raise ValueError(f"layer {i}: a convolution after a dense layer is not supported")
    mats = _matrices(network)

    # -- tiles and passes -----------------------------------------------------------------
    # A tile's channels must fit the channel memory at once.
    tile_outputs = min(lanes, cfg.bias_depth)
    tiles = []
    streamed = set()
    for i, m in enumerate(mats):
        if -(-m.shape[1] // r) > cfg.depth:
            streamed.add(i)       # a tile is taller than the SRAM: stream its K chunks
        for t, start in enumerate(range(0, m.shape[0], tile_outputs)):
            block = np.zeros((lanes, m.shape[1]), dtype=np.int8)
            count = min(tile_outputs, m.shape[0] - start)
            block[:count] = m[start:start + count]
            tiles.append(_Tile(i, t, start, count, asm.weight_rows(block, cfg)))
    total_rows = sum(len(t.rows) for t in tiles)
    total_bias = sum(t.count for t in tiles)
    passes, current, rows_used, bias_used = [], [], 0, 0
    for tile in tiles:
        is_streamed = tile.layer in streamed
        rows = 0 if is_streamed else len(tile.rows)
        if current and (rows_used + rows > cfg.depth or bias_used + tile.count > cfg.bias_depth
                        or (current[0].layer in streamed) != is_streamed
                        or (is_streamed and current[0].layer != tile.layer)):
            passes.append(current)
            current, rows_used, bias_used = [], 0, 0
        current.append(tile)
        rows_used += rows
        bias_used += tile.count
    passes.append(current)
    resident = len(passes) == 1 and not streamed
    biases_once = total_bias <= cfg.bias_depth
    row_of, bias_of = {}, {}
    bias_next = 0
    for group in passes:
        row = 0
        for tile in group:
            row_of[tile] = row
            row += 0 if tile.layer in streamed else len(tile.rows)
            if biases_once:
                bias_of[tile] = bias_next
                bias_next += tile.count
        if not biases_once:
            b = 0
            for tile in group:
                bias_of[tile] = b
                b += tile.count

    # -- activation slots ------------------------------------------------------------------
    region_off, offset = [], 0
    for layer, m in zip(layers, mats):
        k = m.shape[1]
        size = (layer.out_shape[1] * layer.out_shape[2] * _pad_words(k) if isinstance(layer, Conv)
                else _pad_words(k))
        region_off.append(offset)
        offset += size
    slot_bytes = offset
    if slot_bytes > cfg.act_depth:
        raise ValueError(act_buffer_refusal(network, slot_bytes, region_off, cfg))
    slots = cfg.act_depth // slot_bytes
    batch = x.shape[0]
    chunk = batch if resident else min(batch, slots)

    # -- the program -----------------------------------------------------------------------
    p = _Program(cfg)

    def write_pass(group):
        p.add(Opcode.WRITE_WEIGHTS, asm.encode_write_weights(
            row_of[group[0]], np.concatenate([t.rows for t in group]), cfg))

    folded = [layer.folded_bias() for layer in layers]

    def load_channels(group):
        """The channels of ``group``'s tiles: folded biases, multipliers and shifts."""
        first = bias_of[group[0]]
        parts = [slice(t.start, t.start + t.count) for t in group]
        p.add(Opcode.LOAD_BIAS, asm.encode_load_bias(
            first, np.concatenate([folded[t.layer][c] for t, c in zip(group, parts)])))
        p.add(Opcode.LOAD_QUANT, asm.encode_load_quant(
            first, np.concatenate([layers[t.layer].multiplier[c] for t, c in zip(group, parts)]),
            np.concatenate([layers[t.layer].shift[c] for t, c in zip(group, parts)])))

    def load_input(sample, base):
        first = layers[0]
        if isinstance(first, Conv):
            patches = first.patches(x[sample:sample + 1])[0]          # (P, K)
            padded = np.zeros((patches.shape[0], _pad_words(patches.shape[1])), dtype=np.int8)
            padded[:, :patches.shape[1]] = patches
            values = padded.ravel()
        else:
            values = x[sample]
        p.add(Opcode.LOAD_ACT, asm.encode_load_act(base + region_off[0], values))

    def run_tile(tile, sample, base, after_first=None):
        i = tile.layer
        layer, m = layers[i], mats[i]
        rows = len(tile.rows)
        q = dict(channel=bias_of[tile], **layer.quant())
        last = i == len(layers) - 1
        nxt = None if last else layers[i + 1]
        positions = (range(layer.out_shape[1] * layer.out_shape[2])
                     if isinstance(layer, Conv) else [0])
        kp = _pad_words(m.shape[1])
        for pos in positions:
            act = base + region_off[i] + pos * kp
            if i in streamed:
                # K chunks of at most `depth` rows, each written to row 0 and accumulated.
                for first in range(0, rows, cfg.depth):
                    size = min(cfg.depth, rows - first)
                    p.add(Opcode.WRITE_WEIGHTS, asm.encode_write_weights(
                        0, tile.rows[first:first + size], cfg))
                    p.add(Opcode.MATVEC, asm.encode_matvec(0, act + first * r, size,
                                                           accumulate=first > 0))
            else:
                p.add(Opcode.MATVEC, asm.encode_matvec(row_of[tile], act, rows))
            p.rows_read += rows
            if after_first is not None:
                after_first()
                after_first = None
            if last:
                p.add(Opcode.EMIT_INT8, asm.encode_emit_int8(tile.count, **q))
                if isinstance(layer, Conv):       # CHW index of (channel, position)
                    hw = layer.out_shape[1] * layer.out_shape[2]
                    indices = [(tile.start + c) * hw + pos for c in range(tile.count)]
                else:
                    indices = list(range(tile.start, tile.start + tile.count))
                p.emits.append((sample, indices))
            elif isinstance(nxt, Dense):
                channels = layer.out_shape[0] if isinstance(layer, Conv) else 0
                dest = base + region_off[i + 1] + pos * channels + tile.start
                p.add(Opcode.WRITEBACK, asm.encode_writeback(tile.count, dest, **q))
            else:
                for dest in _patch_slots(layer, nxt, pos):
                    p.add(Opcode.WRITEBACK, asm.encode_writeback(
                        tile.count, base + region_off[i + 1] + dest + tile.start, **q))

    if not preloaded:
        p.add(Opcode.READ_COUNTERS, asm.encode_read_counters(clear=True))
    # The padding of on-chip im2col regions must read as the layer's input zero point: fill
    # every slot's regions once (regions filled by loads and write-backs are rewritten anyway).
    if any(isinstance(layer, Conv) for layer in layers[1:]):
        fill = np.zeros(slot_bytes, np.int8)
        for i, layer in enumerate(layers):
            end = region_off[i + 1] if i + 1 < len(layers) else slot_bytes
            fill[region_off[i]:end] = layer.input_zero_point
        p.add(Opcode.LOAD_ACT, asm.encode_load_act(0, np.tile(fill, slots)))
    if biases_once:
        load_channels(tiles)
    if resident:
        write_pass(passes[0])
    if preloaded:
        p.add(Opcode.READ_COUNTERS, asm.encode_read_counters(clear=True))

    loads = 0
    for first in range(0, batch, chunk):
        samples = list(range(first, min(batch, first + chunk)))
        for number, group in enumerate(passes):
            if not resident:
                if group[0].layer not in streamed:
                    write_pass(group)
                if not biases_once:
                    load_channels(group)
            # Software pipelining: the next sample's input is loaded right after this
            # sample's first MATVEC, so it streams in while the lanes work (after a write-back
            # the load would have to wait for it: they share the buffer's write port).
            # Only into another slot: this sample's later MATVECs still read its own.
            pipelined = number == 0 and slots > 1
            for k, sample in enumerate(samples):
                base = (sample % slots) * slot_bytes
                if number == 0 and (k == 0 or not pipelined):
                    load_input(sample, base)
                after_first = None
                if pipelined and k + 1 < len(samples):
                    nxt = samples[k + 1]
                    after_first = lambda nxt=nxt: load_input(nxt, (nxt % slots) * slot_bytes)
                for tile in group:
                    run_tile(tile, sample, base, after_first)
                    after_first = None
        loads += 1
    p.add(Opcode.READ_COUNTERS, asm.encode_read_counters())
    return NetworkProgram(
        words=p.words, config=cfg, batch=batch, outputs=layers[-1].outputs,
        passes=len(passes), chunk=chunk,
        weight_loads=max([batch * (layers[i].out_shape[1] * layers[i].out_shape[2]
                                   if isinstance(layers[i], Conv) else 1) for i in streamed]
                         + [1 if resident else loads]),
        weight_rows=total_rows, macs=batch * network.macs, rows_read=p.rows_read,
        _commands=p.commands,
        _emits=p.emits)


def act_buffer_refusal(network, slot_bytes, region_off, config):
    """The one-line refusal of a network whose sample slot (``slot_bytes``: every layer's
    input region, from offsets ``region_off``) exceeds ``config.act_depth``: what each region
    takes, and the smallest ``act_depth`` that fits (the slot itself, already a multiple of
    the 4-byte stream word that ``MacroConfig`` asks of ``act_depth``), or that none does."""
    ends = list(region_off[1:]) + [slot_bytes]
    parts = ", ".join(
        f"layer {i} {'im2col patches' if isinstance(layer, Conv) else 'input'} "
        f"{end - start}" for i, (layer, start, end) in enumerate(zip(network.layers, region_off,
                                                                       ends)))
    most = 1 << FIELD_BITS          # MacroConfig's largest act_depth
    if slot_bytes > most:
        advice = (f"more than the largest buffer ({most} bytes): run the model as a .tflite "
                  f"(the graph compiler streams a layer's input through the buffer)")
    else:
        advice = (f"the smallest that fits is act_depth {slot_bytes} (--act-depth "
                  f"{slot_bytes}; twice that lets the next sample load while one computes)")
    return (f"one sample needs {slot_bytes} bytes of activation buffer (every layer's input "
            f"on chip: {parts}); the macro has {config.act_depth}: {advice}")


def _patch_slots(layer, nxt, pos):
    """Byte offsets, within ``nxt``'s im2col region, where output position ``pos`` of conv
    ``layer`` goes (channel 0 of it; the channels follow contiguously)."""
    _, h, w = layer.out_shape
    y, x = divmod(pos, w)
    c = layer.out_shape[0]
    (kh, kw), (sh, sw), (ph, pw) = nxt.kernel, nxt.stride, nxt.pad
    _, ho, wo = nxt.out_shape
    kp = _pad_words(kh * kw * c)
    slots = []
    for dy in range(kh):
        oy, rem = divmod(y + ph - dy, sh)
        if rem or not 0 <= oy < ho:
            continue
        for dx in range(kw):
            ox, rem = divmod(x + pw - dx, sw)
            if rem or not 0 <= ox < wo:
                continue
            slots.append((oy * wo + ox) * kp + (dy * kw + dx) * c)
    return slots


@dataclass
class InferenceResult:
    """The int8 outputs ``y`` (batch, outputs) of a run on ``sim`` and its final counters."""
    y: np.ndarray
    counters: dict
    sim: str
    arch: str
    config: MacroConfig
    program: NetworkProgram
    #: The network's classes (or ``None``) and its output zero point, to decode ``y``.
    classes: object = None
    zero_point: int = 0

    @property
    def predictions(self):
        """The predictions (B,): :func:`pim_macro.sw.compiler.classes.predict` of ``y`` (the
        argmax, or for a single output its sign against the output zero point), in the
        network's classes when it has them, else class indices."""
        from pim_macro.sw.compiler.classes import predict
        return predict(self.y, self.classes, zero_point=self.zero_point)

    @property
    def utilization(self):
        cycles = self.counters.get("cycles", 0)
        return self.program.macs / (self.config.macs_per_cycle * cycles) if cycles else None


def run_network(network, x, config=MacroConfig(), *, sim="golden", arch="pim", preloaded=False,
                idle=0.0, backpressure=0.0, seed=0, port=None):
    """Compile ``network`` for the batch ``x``, run it on ``sim`` (``golden``, ``model``,
    ``icarus``, ``verilator``, or ``board`` with its serial ``port``) of ``arch`` and return an
    :class:`InferenceResult`. Raises ``ValueError`` for bad arguments,
    :class:`pim_macro.sw.runtime.rtl.SimulatorMissing`, or ``RuntimeError`` when the run fails."""
    check_run_options(sim, arch, idle, backpressure, port)
    program = compile_network(network, x, config, preloaded=preloaded)
    out = execute(program.words, config, sim=sim, arch=arch, work=program.rows_read, idle=idle,
                  backpressure=backpressure, seed=seed, port=port)
    y, counters = program.extract(out)
    return InferenceResult(y, counters, sim, arch, config, program, classes=network.classes,
                           zero_point=network.layers[-1].output_zero_point)
