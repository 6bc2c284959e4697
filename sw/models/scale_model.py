"""Steady-state cycle estimates for networks far larger than the RTL can simulate.

The exact cycle model (:mod:`pim_macro.sw.models.cycle_model`) replays a command stream, which for
ResNet-50 or VGG-16 would be millions of commands and gigabytes of payload. This model keeps only
the terms that dominate at that scale, from the same timing rules:

* **compute**: every output tile (``lanes`` outputs, or ``bias_depth`` if fewer) of every
  output position reads
  ``ceil(K / R)`` weight rows, one per cycle on the PIM macro and one per
  ``lanes x R x 8 / bus_bits`` cycles on the baseline (:class:`pim_macro.hw.bus_weight_store.
  BusWeightStore`); back-to-back rows stream without a gap, so per-command overheads vanish
  when rows per command are many. The output engine works in parallel but needs
  ``ceil(outputs / requantizers)`` cycles per tile plus :data:`_OUTPUT_OVERHEAD` (two status
  words, the lane pipeline's drain, the return to idle), so a tile costs the larger of the two;
* **reload**: when the weight rows exceed the SRAM (``depth``), the weights are rewritten for
  every inference (the compiler's pass schedule with one sample per chunk), at ``bandwidth``
  bytes per cycle (the macro's input stream is 4), and a rewrite waits for the MATVECs reading
  the rows it overwrites, so reload and compute add up. When the output channels also exceed
  the channel memory (``bias_depth``), each reload carries every channel's bias
  (``LOAD_BIAS``) and requantization (``LOAD_QUANT``) too. A tile taller than the SRAM is
  streamed, as the compiler does: rewritten for every sample and position.

Activations are assumed to stay on chip or to stream in without stalling the lanes. The tests
check the estimate against the exact model on networks the compiler can compile.

**Counts** (:attr:`Estimate.counters`, for :func:`pim_macro.sw.models.energy.energy`), from the
same terms, for the whole batch, as the compiler's program in steady state (``preloaded``)
makes the macro count them:

* ``MAC_ACTIVE`` = ``ROW_READS``: every output tile of every position of every sample reads its
  ``ceil(K / R)`` rows, one MAC cycle each; ``BUS_BEATS``: the baseline's ``beats_per_row`` per
  row (0 on the PIM macro, which has no bus);
* ``WEIGHT_WORDS``: the stored weight rows' stream words, once per reload (0 when they fit),
  and those of the tiles taller than the SRAM, which the compiler streams (each K chunk of
  ``depth`` rows written to row 0, then multiplied) for every sample and position;
* ``BEATS_IN``: those weight words, the channels' words when they are reloaded too, every
  sample's input as the compiler loads it (a dense layer's vector; a convolution's im2col
  patches, each padded to whole words), and the command words: a ``MATVEC`` per tile and
  position (per K chunk when streamed), its ``WRITEBACK`` s (below) or ``EMIT_INT8``, a
  ``LOAD_ACT`` per sample, a ``WRITE_WEIGHTS`` (and ``LOAD_BIAS``, ``LOAD_QUANT``) per pass and
  reload (and per streamed K chunk), the closing ``READ_COUNTERS``;
* ``BEATS_OUT``: a status word per command counted above, the last layer's int8 outputs (four
  per word, per tile and position) and the ``READ_COUNTERS`` answer.

What the counts leave out (so ``BEATS_IN`` and ``BEATS_OUT`` are lower bounds, the other four are
exact): a convolution feeding a convolution writes each output position back into every im2col
patch that holds it (up to ``kh x kw`` ``WRITEBACK`` s); that is counted exactly when the next
layer in ``layers`` takes exactly this one's output (channels and size), else as one ``WRITEBACK``
per position (a pooling or a branch between them, which the compiler does not do on chip); passes
are taken as ``ceil(stored rows / depth)`` (or ``ceil(channels / bias_depth)`` when the channels
are reloaded) plus the streamed layers' own, while the compiler's tile-by-tile packing may need
more; activations between layers stay on chip and cost no stream word.
:attr:`Estimate.reload_counters` is the part of ``counters`` that reloading the spilled weights
adds: their ``WEIGHT_WORDS``, and the stream words in (weights, channels, their commands) and out
(those commands' status words).
"""

from dataclasses import dataclass, field

from pim_macro.hw.isa import (
    INT8_PER_WORD, WORD_BYTES, Counter, MacroConfig, Opcode, arg_words, payload_words,
    response_words,
)
from pim_macro.hw.weight_store import weight_store_for
from pim_macro.hw.output_engine import ResponseKind, groups
from pim_macro.sw.models.cycle_model import EMIT_OVERHEAD_CYCLES, STATUS_ONLY_CYCLES
from pim_macro.sw.models.zoo import LayerShape


__all__ = ["Estimate", "estimate", "shapes_of"]


#: Output-engine cycles per tile beyond its lane groups: a tile is a MATVEC (a status-only
#: response) and a WRITEBACK (an emitting one), which the output engine serves one after the other
#: (the exact model's costs, from :class:`pim_macro.hw.output_engine.OutputEngine`).
_OUTPUT_OVERHEAD = STATUS_ONLY_CYCLES + EMIT_OVERHEAD_CYCLES


@dataclass(frozen=True)
class Estimate:
    arch: str
    weight_bytes: int        # the network's int8 weights
    stored_bytes: int        # as laid out in the SRAM (tiles padded to lanes x R)
    capacity_bytes: int      # the macro's weight SRAM
    fits: bool
    passes: int              # SRAM-sized groups of weights
    reloaded_bytes: int      # weight (and channel) bytes streamed in for the batch (0: it fits)
    compute_cycles: int
    reload_cycles: int
    #: Counts of the batch by :class:`pim_macro.hw.isa.Counter` name (``MAC_ACTIVE``,
    #: ``ROW_READS``, ``BUS_BEATS``, ``WEIGHT_WORDS``, ``BEATS_IN``, ``BEATS_OUT``; see the
    #: module docstring for what they leave out), for :func:`pim_macro.sw.models.energy.energy`.
    counters: dict = field(default_factory=dict)
    #: The part of ``counters`` due to reloading weights that do not fit (all 0 when they fit).
    reload_counters: dict = field(default_factory=dict)

    @property
    def cycles(self):
        return self.compute_cycles + self.reload_cycles


def _tile_outputs(config):
    """Outputs per tile: ``lanes``, or fewer when the channel memory holds fewer (a tile's
    channels must fit it at once, as the compiler cuts them)."""
    return min(config.lanes, config.bias_depth)


def _rows(layer, config):
    tiles = -(-layer.out_ch // _tile_outputs(config))
    return tiles, -(-layer.rows_k // config.rows_per_cycle)


def _taps(size, out, k, stride, pad):
    """Kernel taps, over all ``out`` output positions of one dimension, that fall inside an input
    of ``size`` (not on padding)."""
    return sum(1 for o in range(out) for d in range(k) if 0 <= o * stride - pad + d < size)


def _results_per_tile(layer, consumer):
    """Result commands (``WRITEBACK`` or ``EMIT_INT8``) one output tile of ``layer`` costs per
    sample: one per output position, except that a convolution feeding a convolution that takes
    exactly its output writes each position into every im2col patch of the consumer that holds
    it (on-chip im2col, as the compiler does): the consumer's in-bounds taps."""
    if (consumer is not None and layer.kind == consumer.kind == "conv"
            and (consumer.in_ch, consumer.in_h, consumer.in_w)
            == (layer.out_ch, layer.out_h, layer.out_w)):
        return (_taps(consumer.in_h, consumer.out_h, consumer.kh, consumer.stride, consumer.pad)
                * _taps(consumer.in_w, consumer.out_w, consumer.kw, consumer.stride,
                        consumer.pad))
    return layer.positions


def _command_words(opcode):
    """Stream words of a command without payload: its header and its argument words."""
    return 1 + arg_words(opcode)


def estimate(layers, config: MacroConfig, arch, *, bandwidth=4.0, batch=1, chunk=1):
    """Cycles and event counts of ``batch`` inferences of ``layers`` (a list of
    :class:`pim_macro.sw.models.zoo.LayerShape`, in execution order: the last one emits the
    outputs) on ``arch`` of ``config``; spilled weights are reloaded once per ``chunk`` samples
    (as many as the activation buffer holds), at ``bandwidth`` bytes per cycle. Raises
    ``ValueError`` for a non-positive ``bandwidth``, ``batch`` or ``chunk`` or an empty
    ``layers``."""
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, not {bandwidth}")
    if batch < 1 or chunk < 1:
        raise ValueError("batch and chunk must be at least 1")
    if not layers:
        raise ValueError("layers must hold at least one layer")
    interval = weight_store_for(arch).timing(config).interval
    width = _tile_outputs(config)
    stored_rows = compute = 0
    all_rows = rows_read = matvecs = writebacks = 0       # per sample, but all_rows
    streamed_rows = streamed_writes = 0     # per sample: tiles taller than the SRAM
    streamed_passes = 0
    for i, layer in enumerate(layers):
        tiles, rows = _rows(layer, config)
        all_rows += tiles * rows
        rows_read += layer.positions * tiles * rows
        if rows > config.depth:
            # Streamed (the compiler's rule): for every sample and position, each K chunk of
            # `depth` rows is written to row 0 and multiplied; the layer is a pass of its own.
            k_chunks = -(-rows // config.depth)
            streamed_rows += layer.positions * tiles * rows
            streamed_writes += layer.positions * tiles * k_chunks
            matvecs += layer.positions * tiles * k_chunks
            streamed_passes += -(-layer.out_ch // config.bias_depth)
        else:
            stored_rows += tiles * rows
            matvecs += layer.positions * tiles
        if i + 1 < len(layers):
            writebacks += tiles * _results_per_tile(layer, layers[i + 1])
        for tile in range(tiles):
            outputs = min(width, layer.out_ch - tile * width)
            emit = (groups(ResponseKind.WRITEBACK, outputs, 0, config.requantizers)
                    + _OUTPUT_OVERHEAD)
            compute += layer.positions * max(rows * interval, emit)
    compute *= batch
    stored = all_rows * config.row_bytes
    channels = sum(layer.out_ch for layer in layers)
    channels_reload = channels > config.bias_depth      # reloaded with the weights
    # A pass holds at most `depth` rows and, when the channels are reloaded, `bias_depth`
    # channels (the compiler's tile-by-tile packing may need more: a lower bound); a streamed
    # layer makes passes of its own.
    stored_channels = sum(layer.out_ch for layer in layers
                          if _rows(layer, config)[1] <= config.depth)
    write_passes = -(-stored_rows // config.depth)
    if channels_reload:
        write_passes = max(write_passes, -(-stored_channels // config.bias_depth))
    passes = write_passes + streamed_passes
    # resident: one pass, nothing streamed (as the compiler decides it)
    fits = passes == 1 and not streamed_rows
    channel_words = sum(payload_words(op, channels, config)
                        for op in (Opcode.LOAD_BIAS, Opcode.LOAD_QUANT)) if channels_reload else 0
    reloads = 0 if fits else -(-batch // chunk)
    streamed_words = batch * payload_words(Opcode.WRITE_WEIGHTS, streamed_rows, config)
    reloaded = ((stored_rows * config.row_bytes + channel_words * WORD_BYTES) * reloads
                + streamed_words * WORD_BYTES)

    # -- counts (see the module docstring) --------------------------------------------------
    weight_words = reloads * payload_words(Opcode.WRITE_WEIGHTS, stored_rows,
                                           config) + streamed_words
    # per reload: a WRITE_WEIGHTS per pass of stored rows, the channels' loads per pass
    reload_commands = write_passes + 2 * channels_reload * passes
    reload_in = reloads * (channel_words + write_passes * _command_words(Opcode.WRITE_WEIGHTS)
                           + channels_reload * passes * (_command_words(Opcode.LOAD_BIAS)
                                                         + _command_words(Opcode.LOAD_QUANT)))
    reload_in += weight_words + batch * streamed_writes * _command_words(Opcode.WRITE_WEIGHTS)
    reload_out = reloads * reload_commands + batch * streamed_writes  # their status words
    first, last = layers[0], layers[-1]
    if first.kind == "conv":          # im2col patches, each padded to whole words
        input_bytes = first.positions * -(-first.rows_k // INT8_PER_WORD) * INT8_PER_WORD
    else:
        input_bytes = first.rows_k
    last_tiles = -(-last.out_ch // width)
    emitted_words = last.positions * sum(
        response_words(Opcode.EMIT_INT8, min(width, last.out_ch - t * width),
                       config) for t in range(last_tiles))
    emits = last.positions * last_tiles
    result_words = (writebacks * _command_words(Opcode.WRITEBACK)
                    + emits * _command_words(Opcode.EMIT_INT8))
    sample_in = (payload_words(Opcode.LOAD_ACT, input_bytes, config)
                 + _command_words(Opcode.LOAD_ACT)
                 + matvecs * _command_words(Opcode.MATVEC) + result_words)
    # a status word per command (LOAD_ACT, MATVECs, results) and the emitted outputs
    sample_out = 1 + matvecs + writebacks + emits + emitted_words
    read_counters_out = 1 + response_words(Opcode.READ_COUNTERS, 0, config)
    reload_counters = {
        Counter.WEIGHT_WORDS.name: weight_words,
        Counter.BEATS_IN.name: reload_in,
        Counter.BEATS_OUT.name: reload_out,
    }
    counters = {
        Counter.MAC_ACTIVE.name: batch * rows_read,
        Counter.ROW_READS.name: batch * rows_read,
        Counter.BUS_BEATS.name: batch * rows_read * config.beats_per_row
        if arch == "baseline" else 0,
        Counter.WEIGHT_WORDS.name: weight_words,
        Counter.BEATS_IN.name: batch * sample_in + reload_in
        + _command_words(Opcode.READ_COUNTERS),
        Counter.BEATS_OUT.name: batch * sample_out + reload_out + read_counters_out,
    }
    return Estimate(arch=arch, weight_bytes=sum(layer.weights for layer in layers),
                    stored_bytes=stored, capacity_bytes=config.depth * config.row_bytes,
                    fits=fits, passes=passes,
                    reloaded_bytes=reloaded, compute_cycles=compute,
                    reload_cycles=int(round(reloaded / bandwidth)),
                    counters=counters, reload_counters=reload_counters)


def shapes_of(network):
    """The :class:`LayerShape` list of a :class:`pim_macro.sw.compiler.network.Network` (for
    checking the estimate against the exact model)."""
    from pim_macro.sw.compiler.network import Conv
    shapes = []
    for i, layer in enumerate(network.layers):
        if isinstance(layer, Conv):
            (kh, kw), (sh, _), (ph, _) = layer.kernel, layer.stride, layer.pad
            c, h, w = layer.in_shape
            shapes.append(LayerShape(f"layer{i}", "conv", layer.w.shape[0], c, kh, kw, sh, ph,
                                     h, w))
        else:
            shapes.append(LayerShape(f"layer{i}", "dense", layer.outputs, layer.inputs, 1, 1,
                                     1, 0, 1, 1))
    return shapes
