"""Steady-state cycle estimates for networks far larger than the RTL can simulate.

The exact cycle model (:mod:`pim_macro.sw.models.cycle_model`) replays a command stream, which for
ResNet-50 or VGG-16 would be millions of commands and gigabytes of payload. This model keeps only
the terms that dominate at that scale, from the same timing rules:

* **compute**: every output tile (``lanes`` outputs) of every output position reads
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
  (``LOAD_BIAS``) and requantization (``LOAD_QUANT``) too.

Activations are assumed to stay on chip or to stream in without stalling the lanes. The tests
check the estimate against the exact model on networks the compiler can compile.
"""

from dataclasses import dataclass

from pim_macro.hw.isa import WORD_BYTES, MacroConfig, Opcode, payload_words
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

    @property
    def cycles(self):
        return self.compute_cycles + self.reload_cycles


def _rows(layer, config):
    tiles = -(-layer.out_ch // config.lanes)
    return tiles, -(-layer.rows_k // config.rows_per_cycle)


def estimate(layers, config: MacroConfig, arch, *, bandwidth=4.0, batch=1, chunk=1):
    """Cycles of ``batch`` inferences of ``layers`` (a list of
    :class:`pim_macro.sw.models.zoo.LayerShape`) on ``arch`` of ``config``; spilled weights are
    reloaded once per ``chunk`` samples (as many as the activation buffer holds), at ``bandwidth``
    bytes per cycle."""
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, not {bandwidth}")
    if batch < 1 or chunk < 1:
        raise ValueError("batch and chunk must be at least 1")
    interval = weight_store_for(arch).timing(config).interval
    stored_rows = compute = 0
    for layer in layers:
        tiles, rows = _rows(layer, config)
        stored_rows += tiles * rows
        for tile in range(tiles):
            outputs = min(config.lanes, layer.out_ch - tile * config.lanes)
            emit = (groups(ResponseKind.WRITEBACK, outputs, 0, config.requantizers)
                    + _OUTPUT_OVERHEAD)
            compute += layer.positions * max(rows * interval, emit)
    compute *= batch
    fits = stored_rows <= config.depth
    stored = stored_rows * config.row_bytes
    channels = sum(layer.out_ch for layer in layers)
    per_reload = stored
    if channels > config.bias_depth:        # the channels are reloaded with the weights
        per_reload += channels * WORD_BYTES * sum(
            payload_words(op, 1, config) for op in (Opcode.LOAD_BIAS, Opcode.LOAD_QUANT))
    reloaded = 0 if fits else per_reload * -(-batch // chunk)
    return Estimate(arch=arch, weight_bytes=sum(layer.weights for layer in layers),
                    stored_bytes=stored, capacity_bytes=config.depth * config.row_bytes,
                    fits=fits, passes=-(-stored_rows // config.depth),
                    reloaded_bytes=reloaded, compute_cycles=compute,
                    reload_cycles=int(round(reloaded / bandwidth)))


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
