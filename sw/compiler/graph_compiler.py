"""Run a :class:`~pim_macro.sw.compiler.graph.Graph` on the macro and the host: macro ops become
command *segments*, host ops run in numpy between them.

Lowering of one macro op (:class:`~pim_macro.sw.compiler.graph.MacroOp`, a GEMM of ``P``
patches of ``K`` int8 values by an ``(N, K)`` weight matrix)
==========================================================================================

* **Tiles.** Output channels in tiles of ``min(lanes, bias_depth)`` (a tile's channels must be in
  the channel memory at once). A tile uses the columns ``op.k_range(n0, n1)`` only (all of them
  for a dense op; one input channel's taps for a depthwise one: block-diagonal), laid out as
  ``ceil(cols / R)`` weight rows by :func:`pim_macro.sw.runtime.asm.weight_rows`.
* **Pieces.** A tile's columns are cut into *pieces*, each one ``MATVEC`` (the first clears the
  accumulators, the others ``ACCUMULATE``): a piece has at most ``depth`` rows (a scratch
  half's when streamed, below) and, when a patch does not fit the activation buffer, at most
  half of it (a command's ``count`` caps both).
* **Weights.** When every tile of every macro op fits the SRAM together they are *resident*:
  written once, by :meth:`GraphProgram.setup_words`, before the first inference (counted apart, as
  set-up). Otherwise each op's tiles are grouped into *passes* that fit (``depth`` rows) and a
  pass's weights are written at its start, every inference; a tile taller than the SRAM is
  *streamed*: its pass keeps its first rows in the SRAM, and every patch writes the rest through
  two alternating scratch halves after them, so a write overlaps the ``MATVEC`` of the piece
  before (:meth:`GraphProgram._stream_split` sizes them).
* **Channels** (``LOAD_BIAS`` of :meth:`MacroOp.folded_bias`, ``LOAD_QUANT`` of the multipliers
  and shifts) likewise: resident when every op's channels fit ``bias_depth`` together, else
  loaded per pass (passes then also hold at most ``bias_depth`` channels).
* **Activations.** The patches (:meth:`MacroOp.patches`: padding holds the input zero point) are
  cut on the host and sent with ``LOAD_ACT`` in *bands*: as many *patch images* (the column
  ranges the tiles use, each padded to a whole word) as fit the activation buffer, in two
  alternating halves when two images fit (double buffering: a band loads while the one before
  is multiplied). A patch image larger than the buffer is sent piece by piece instead (again in
  alternating halves), once per tile.
* **On-chip im2col** (``im2col=True``, ``CONV_2D`` only, where it applies and saves words):
  the host sends padded input *rows* instead, as many output rows' worth (with their halo of
  ``kh - sh`` rows) as fit the buffer (or a half of it); each output position then multiplies,
  per kernel row ``dy``, the contiguous ``kw * C`` bytes under its window by that kernel row's
  weight rows (``kh`` ``MATVEC`` s, accumulating), so an input pixel crosses the stream once per
  band rather than once per window it falls in.
* **Results.** After a patch's pieces, ``EMIT_INT8`` with the tile's channels, the op's
  ``output_zero_point``, ``[act_min, act_max]`` and ``double_rounding``; the int8 results return
  to the host.

Running
=======

Each segment (one macro op for one sample) is ``READ_COUNTERS CLEAR``, its commands, then
``READ_COUNTERS``: its ``CYCLES`` count from its first command to the last one done. The host's
time between segments is not macro time and is not counted. Segments go through one
:class:`pim_macro.sw.runtime.driver.Session`, which keeps the macro's state (resident weights and
channels) across them. An inference's cycles are the sum of its segments'.

Host-op shares (:class:`GraphResult`): *work* counts a host op as the elements it reads (the sum
of its inputs' sizes) against the macro ops' multiply-accumulates; *traffic* is the stream words
at the boundary between a macro op and a host op (the ``LOAD_ACT`` words of a macro op whose
input a host op made, the ``EMIT_INT8`` answers of one whose output a host op reads) against
every stream word of the inference.
"""

from dataclasses import dataclass, field

import numpy as np

from pim_macro.hw.isa import (COUNT_BITS, INT8_PER_WORD, Counter, Error, MacroConfig, Opcode,
                              Status)
from pim_macro.sw.compiler.graph import Conv2D, Graph, MacroOp
from pim_macro.sw.runtime import asm
from pim_macro.sw.runtime.driver import Session, check_run_options


__all__ = ["Piece", "Tile", "Pass", "OpPlan", "Segment", "GraphProgram", "OpStats",
           "GraphResult", "compile_graph", "run_graph"]


#: The largest ``count`` of one command (rows written or multiplied, bytes or channels loaded).
COUNT_MAX = (1 << COUNT_BITS) - 1

#: Stream word categories of the input (by the command that carries them) and of the output.
IN_KINDS = {Opcode.WRITE_WEIGHTS: "weights", Opcode.LOAD_BIAS: "channels",
            Opcode.LOAD_QUANT: "channels", Opcode.LOAD_ACT: "activations",
            Opcode.MATVEC: "commands", Opcode.EMIT_INT8: "commands",
            Opcode.READ_COUNTERS: "counters"}


#: Stream words of the commands around one streamed piece: a ``WRITE_WEIGHTS`` header and row
#: argument, a ``MATVEC`` header and argument (the rows' own words come on top).
_PIECE_WORDS = 4


#: (offset, mask) of each field of a status word, read once from the layout.
_STATUS_FIELDS = {name: (Status[name].offset, (1 << Status[name].width) - 1)
                  for name in ("opcode", "error", "count")}
_ERRORS = {e.value for e in Error}


def _field(word, name):
    offset, mask = _STATUS_FIELDS[name]
    return (word >> offset) & mask


def _ceil(a, b):
    return -(-a // b)


def _whole_words(n):
    """``n`` bytes rounded up to whole stream words (a ``LOAD_ACT`` address is word-aligned)."""
    return _ceil(n, INT8_PER_WORD) * INT8_PER_WORD


def _halves(size, unit):
    """Bases of two alternating halves of a memory of ``size`` units, each a multiple of
    ``unit`` and at least ``unit`` large, or of one whole memory when two do not fit."""
    half = size // 2 // unit * unit
    return ((0, half), half) if half >= unit else ((0,), size)


@dataclass(frozen=True)
class Piece:
    """Columns ``k0 .. k1 - 1`` of an op's weights, one ``MATVEC``. ``act``: its offset in a
    patch image (whole-image mode; 0 otherwise); ``row``: its first weight row (``None`` for a
    streamed tile); ``rows``: its weight rows, int8 ``(ceil(cols / R), R, lanes)``."""
    k0: int
    k1: int
    act: int
    row: int
    rows: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class Tile:
    """Output channels ``n0 .. n1 - 1`` of an op, computed in lanes ``0 .. n1 - n0 - 1`` with
    channel entries ``channel ..``; ``pieces`` (tuple of :class:`Piece`); ``streamed``: it is
    taller than the SRAM, and its pieces without a ``row`` are written for every patch,
    alternating between the scratch rows ``stream_bases``."""
    n0: int
    n1: int
    channel: int
    pieces: tuple
    streamed: bool
    stream_bases: tuple = (0,)

    @property
    def rows(self):
        return sum(len(p.rows) for p in self.pieces)


@dataclass(frozen=True)
class Pass:
    """Tiles that are on the macro together. ``write_weights``: the pass writes its tiles'
    weights (those with a ``row``) at its start (they are not resident); ``load_channels``: it
    loads their channels at its start."""
    tiles: tuple
    write_weights: bool
    load_channels: bool


@dataclass(frozen=True)
class OpPlan:
    """The lowering of ``op`` (``graph.ops[index]``). ``image``: bytes of a patch image (the
    distinct column ranges of its tiles, each word-aligned), ``offsets`` where each range
    ``(k0, k1)`` starts in it, or ``image`` 0 when a patch is sent piece by piece;
    ``act_bases``: the activation buffer halves (one base when not double buffered); ``band``:
    patch images per ``LOAD_ACT``. ``rows``: on-chip im2col (a ``CONV_2D`` with
    ``im2col``): the bytes of one input row of a strip of ``strip`` output columns in the buffer
    (``image`` is then 0 and ``band`` counts output rows, whose input rows and halo one
    ``LOAD_ACT`` carries); 0 otherwise."""
    index: int
    op: MacroOp
    passes: tuple
    image: int
    offsets: dict
    act_bases: tuple
    band: int
    rows: int = 0
    strip: int = 0

    @property
    def tiles(self):
        return [t for p in self.passes for t in p.tiles]

    @property
    def streamed(self):
        return any(t.streamed for t in self.tiles)


@dataclass
class Segment:
    """The words of one macro op on one sample, and what reading the answer needs: the opcode
    of every command, ``emits`` (patch, n0, n1) per ``EMIT_INT8``, and ``words_in`` by kind
    (:data:`IN_KINDS`)."""
    words: list
    opcodes: list
    emits: list
    words_in: dict


class _Builder:
    def __init__(self):
        self.words, self.opcodes, self.emits = [], [], []
        self.words_in = dict.fromkeys(sorted(set(IN_KINDS.values())), 0)

    def add(self, opcode, words):
        self.words.extend(words)
        self.opcodes.append(opcode)
        self.words_in[IN_KINDS[opcode]] += len(words)

    def segment(self):
        return Segment(self.words, self.opcodes, self.emits, self.words_in)


def _load_channels(builder, first, bias, multiplier, shift):
    """``LOAD_BIAS`` and ``LOAD_QUANT`` of channels ``first ..``, in commands of at most
    :data:`COUNT_MAX` channels."""
    for i in range(0, len(bias), COUNT_MAX):
        builder.add(Opcode.LOAD_BIAS, asm.encode_load_bias(first + i, bias[i:i + COUNT_MAX]))
        builder.add(Opcode.LOAD_QUANT, asm.encode_load_quant(
            first + i, multiplier[i:i + COUNT_MAX], shift[i:i + COUNT_MAX]))


class GraphProgram:
    """The lowering of every macro op of ``graph`` for ``config`` (see the module).

    Attributes: ``plans`` (one :class:`OpPlan` per macro op, in graph order, keyed by the op's
    index in ``graph.ops``), ``weights_resident`` and ``channels_resident`` (bool),
    ``weight_rows`` (rows all tiles need, streamed ones included) and ``channels``.
    Raises ``ValueError`` for a graph that is not a :class:`Graph`, a config that is not a
    :class:`MacroConfig`."""

    def __init__(self, graph, config, *, im2col=False):
        if not isinstance(graph, Graph):
            raise ValueError(f"graph must be a Graph, not {type(graph).__name__}")
        if not isinstance(config, MacroConfig):
            raise ValueError(f"config must be a MacroConfig, not {config!r}")
        self.graph, self.config, self.im2col = graph, config, bool(im2col)
        c = config
        self.tile_width = min(c.lanes, c.bias_depth)
        self._splits = {}
        macro = [(i, op) for i, op in enumerate(graph.ops) if isinstance(op, MacroOp)]
        # First, where each op's columns go and how they split (independent of residency).
        layouts = {i: self._layout(op) for i, op in macro}
        self.weight_rows = sum(_ceil(k1 - k0, c.rows_per_cycle)
                               for layout in layouts.values() for tile in layout["tiles"]
                               for k0, k1, _ in tile["ranges"])
        self.channels = sum(op.channels for _, op in macro)
        self.weights_resident = (self.weight_rows <= c.depth and not any(
            tile["streamed"] for layout in layouts.values() for tile in layout["tiles"]))
        self.channels_resident = self.channels <= c.bias_depth
        self.plans = {}
        row = channel = 0
        for i, op in macro:
            plan, row, channel = self._plan(i, op, layouts[i], row, channel)
            self.plans[i] = plan

    # -- planning -----------------------------------------------------------------------------

    def _stream_split(self, rows):
        """``(resident, half)`` for a tile of ``rows`` weight rows taller than the SRAM: the
        first ``resident`` rows stay in the SRAM for its pass, the rest go through two
        alternating scratch halves of ``half`` rows after them, written for every patch.

        Per patch the input stream carries one word a cycle (the streamed rows' words and about
        :data:`_PIECE_WORDS` command words per streamed piece) while the lanes multiply one row
        a cycle (``rows``): the split minimizes the larger of the two, then the pieces."""
        c = self.config
        if c.depth < 2:
            return 0, c.depth
        if rows in self._splits:            # every tile of an op has the same height, mostly
            return self._splits[rows]
        best = None
        for half in range(1, min(c.depth // 2, COUNT_MAX) + 1):
            resident = c.depth - 2 * half
            over = rows - resident
            pieces = _ceil(over, half)
            cost = (max(over * c.row_words + pieces * _PIECE_WORDS, rows), pieces)
            if best is None or cost < best[0]:
                best = (cost, resident, half)
        self._splits[rows] = best[1], best[2]
        return self._splits[rows]

    def _layout(self, op):
        """Tiles of ``op`` as dicts: ``n0``, ``n1``, ``ranges`` (``(k0, k1, streamed)`` of its
        pieces), ``rows`` (resident ones), ``streamed``, ``stream_bases`` (the scratch halves);
        and the patch image (``image`` bytes, range offsets) or 0, the activation halves and the
        band."""
        c, r = self.config, self.config.rows_per_cycle
        if self.im2col:
            layout = self._row_layout(op)
            if layout is not None:
                return layout
        spans = []
        for n0 in range(0, op.channels, self.tile_width):
            n1 = min(n0 + self.tile_width, op.channels)
            spans.append((n0, n1, *op.k_range(n0, n1)))
        offsets, image = {}, 0
        for *_, k0, k1 in spans:
            if (k0, k1) not in offsets:
                offsets[(k0, k1)] = image
                image += _whole_words(k1 - k0)
        if image > min(c.act_depth, COUNT_MAX):
            offsets, image = {}, 0                  # a patch goes piece by piece
            act_bases, act_cap = _halves(c.act_depth, INT8_PER_WORD)
        else:
            act_bases, act_cap = _halves(c.act_depth, image)
        tiles = []
        for n0, n1, k0, k1 in spans:
            streamed = _ceil(k1 - k0, r) > c.depth
            resident, half = (self._stream_split(_ceil(k1 - k0, r)) if streamed
                              else (c.depth, 0))
            ranges = []
            # The resident columns, then the streamed ones; a piece within the SRAM's (or a
            # scratch half's) rows, a command's count and, piece by piece, the buffer's half.
            for first, stop, most, stream in ((k0, min(k0 + resident * r, k1), resident, False),
                                             (k0 + resident * r, k1, half, True)):
                if first >= stop:
                    continue
                most = min(most, COUNT_MAX) * r
                if not image:
                    most = min(most, act_cap)       # a multiple of 4, so of R
                ranges += [(a, min(a + most, stop), stream) for a in range(first, stop, most)]
            rows = sum(_ceil(b - a, r) for a, b, stream in ranges if not stream)
            bases = (resident, resident + half) if streamed and c.depth >= 2 else (0,)
            tiles.append({"n0": n0, "n1": n1, "ranges": ranges, "rows": rows,
                          "streamed": streamed, "stream_bases": bases})
        band = (min(act_cap, COUNT_MAX) // image) if image else 0
        return {"tiles": tiles, "image": image, "offsets": offsets, "act_bases": act_bases,
                "band": band, "rows": 0, "strip": 0}

    def _row_layout(self, op):
        """The on-chip im2col layout of a ``CONV_2D`` (``None`` when it does not apply): the
        buffer holds padded input rows, and each output position multiplies, per kernel row
        ``dy``, the contiguous run of ``kw * C`` bytes under its window with that kernel row's
        weight rows (one ``MATVEC`` each, accumulating). The output is cut into *strips* of
        ``strip`` columns, whose input rows (``(strip - 1) * sw + kw`` pixels of ``C`` bytes,
        padded to a whole word: ``rows`` bytes) are as wide as the buffer allows, and the strips
        into bands of output rows whose input rows (halo included) fit the buffer, or half of it
        (double buffering) when ``kh`` whole rows fit a half, or do not fit the buffer but ``kh``
        rows of one output column fit a half. Applies when ``kw * C`` is a multiple of
        R (a run starts and ends on a row of R), a tile's ``kh`` pieces fit the SRAM without
        streaming, ``kh`` rows of one output column fit the buffer, and the rows (halos
        included) are fewer bytes than the patches."""
        c, r = self.config, self.config.rows_per_cycle
        if type(op) is not Conv2D:                  # not a depthwise one: channel-major
            return None
        (_, _, ch), (kh, kw), (sh, sw) = op.in_shape, op.kernel, op.stride
        ho, wo = op.out_hw()
        run = kw * ch
        if run % r or kh * (run // r) > c.depth or run // r > COUNT_MAX:
            return None

        def row_bytes(strip):
            return _whole_words(((strip - 1) * sw + kw) * ch)
        whole = min(c.act_depth, COUNT_MAX)
        if kh * row_bytes(1) > whole:
            return None
        # Whole rows, double buffered if they fit a half; else whole rows in the whole buffer;
        # else strips, double buffered if one column's rows fit a half.
        act_bases, cap = _halves(c.act_depth, kh * row_bytes(wo))
        if cap < kh * row_bytes(wo) or len(act_bases) == 1 and whole < kh * row_bytes(wo):
            act_bases, cap = _halves(c.act_depth, kh * row_bytes(1))
        cap = min(cap, COUNT_MAX)
        strip = wo
        while kh * row_bytes(strip) > cap:
            strip -= 1
        width = row_bytes(strip)
        band = (cap // width - kh) // sh + 1        # output rows whose inputs fit
        strips = _ceil(wo, strip)
        loaded = strips * sum(((min(oy + band, ho) - 1 - oy) * sh + kh) * width
                              for oy in range(0, ho, band))
        if loaded >= op.positions() * _whole_words(op.depth):
            return None                 # no saving (a strided 1x1 skips most of its rows)
        tiles = []
        for n0 in range(0, op.channels, self.tile_width):
            n1 = min(n0 + self.tile_width, op.channels)
            ranges = [(dy * run, (dy + 1) * run, False) for dy in range(kh)]
            tiles.append({"n0": n0, "n1": n1, "ranges": ranges, "rows": kh * (run // r),
                          "streamed": False, "stream_bases": (0,)})
        return {"tiles": tiles, "image": 0, "offsets": {}, "act_bases": act_bases,
                "band": band, "rows": width, "strip": strip}

    def _plan(self, index, op, layout, row, channel):
        """The :class:`OpPlan` of ``op``; ``row`` and ``channel`` are the next free resident
        weight row and channel entry; returns them updated."""
        c = self.config
        groups, current, rows_in, chans_in = [], [], 0, 0
        for tile in layout["tiles"]:
            rows, width = tile["rows"], tile["n1"] - tile["n0"]
            too_many_rows = not self.weights_resident and rows_in + rows > c.depth
            too_many_chans = not self.channels_resident and chans_in + width > c.bias_depth
            if current and (tile["streamed"] or current[-1]["streamed"] or too_many_rows
                            or too_many_chans):
                groups.append(current)
                current, rows_in, chans_in = [], 0, 0
            current.append(tile)
            rows_in, chans_in = rows_in + rows, chans_in + width
        groups.append(current)

        weights = op.weights
        passes = []
        for group in groups:
            pass_row = row if self.weights_resident else 0
            pass_channel = channel if self.channels_resident else 0
            tiles = []
            for tile in group:
                n0, n1 = tile["n0"], tile["n1"]
                whole = op.k_range(n0, n1)
                pieces = []
                for k0, k1, stream in tile["ranges"]:
                    block = np.zeros((c.lanes, k1 - k0), dtype=np.int8)
                    block[:n1 - n0] = weights[n0:n1, k0:k1]
                    piece_rows = asm.weight_rows(block, c)
                    act = (layout["offsets"][whole] + k0 - whole[0]) if layout["image"] else 0
                    pieces.append(Piece(k0, k1, act, None if stream else pass_row, piece_rows))
                    if not stream:
                        pass_row += len(piece_rows)
                tiles.append(Tile(n0, n1, pass_channel, tuple(pieces), tile["streamed"],
                                  tile["stream_bases"]))
                pass_channel += n1 - n0
            passes.append(Pass(tuple(tiles), not self.weights_resident,
                               not self.channels_resident))
            if self.weights_resident:
                row = pass_row
            if self.channels_resident:
                channel = pass_channel
        plan = OpPlan(index, op, tuple(passes), layout["image"], layout["offsets"],
                      layout["act_bases"], layout["band"], layout["rows"], layout["strip"])
        return plan, row, channel

    # -- words --------------------------------------------------------------------------------

    @property
    def passes(self):
        """Passes per inference over every macro op (one per op when everything is resident)."""
        return sum(len(plan.passes) for plan in self.plans.values())

    def setup_words(self):
        """The :class:`Segment` written once before the first inference: resident weights and
        channels (``READ_COUNTERS`` around it like any segment); ``None`` if nothing is
        resident."""
        if not (self.weights_resident or self.channels_resident):
            return None
        b = _Builder()
        b.add(Opcode.READ_COUNTERS, asm.encode_read_counters(clear=True))
        for plan in self.plans.values():
            op = plan.op
            if self.weights_resident:
                for tile in plan.tiles:
                    for piece in tile.pieces:
                        b.add(Opcode.WRITE_WEIGHTS,
                              asm.encode_write_weights(piece.row, piece.rows, self.config))
            if self.channels_resident:
                tiles = plan.tiles
                _load_channels(b, tiles[0].channel, op.folded_bias(), op.multiplier, op.shift)
        b.add(Opcode.READ_COUNTERS, asm.encode_read_counters())
        return b.segment()

    def segment(self, plan, x):
        """The :class:`Segment` of macro op ``plan`` on one sample's input ``x`` (its tensor's
        shape without the batch, or with a batch of 1)."""
        op, c = plan.op, self.config
        if plan.rows:
            padded = op.padded(x)                   # (H + top + bottom, W + left + right, C)
            kh, (sh, sw) = op.kernel[0], op.stride
            ho, wo = op.out_hw()
            count = ho * wo
        else:
            patches = op.patches(x)
            count = len(patches)
        b = _Builder()
        b.add(Opcode.READ_COUNTERS, asm.encode_read_counters(clear=True))
        folded = op.folded_bias()
        streams = [0]                           # streamed pieces written so far (alternation)
        loads = [0]                             # activation loads so far (alternation)
        quant = {"zero_point": op.output_zero_point, "act_min": op.act_min,
                 "act_max": op.act_max, "double_rounding": op.double_rounding}

        def next_act_base():
            base = plan.act_bases[loads[0] % len(plan.act_bases)]
            loads[0] += 1
            return base

        def multiply(tile, piece, act, first):
            row = piece.row
            if row is None:                      # streamed: write it, alternating halves
                row = tile.stream_bases[streams[0] % len(tile.stream_bases)]
                streams[0] += 1
                b.add(Opcode.WRITE_WEIGHTS, asm.encode_write_weights(row, piece.rows, c))
            b.add(Opcode.MATVEC, asm.encode_matvec(row, act, len(piece.rows),
                                                   accumulate=not first))

        def emit(tile, p):
            b.add(Opcode.EMIT_INT8, asm.encode_emit_int8(tile.n1 - tile.n0,
                                                         channel=tile.channel, **quant))
            b.emits.append((p, tile.n0, tile.n1))

        if plan.image:
            images = np.zeros((count, plan.image), dtype=np.int8)
            for (k0, k1), offset in plan.offsets.items():
                images[:, offset:offset + k1 - k0] = patches[:, k0:k1]
        for ps in plan.passes:
            if ps.write_weights:
                for tile in ps.tiles:
                    for piece in tile.pieces:
                        if piece.row is not None:
                            b.add(Opcode.WRITE_WEIGHTS,
                                  asm.encode_write_weights(piece.row, piece.rows, c))
            if ps.load_channels:
                n0, n1 = ps.tiles[0].n0, ps.tiles[-1].n1
                _load_channels(b, ps.tiles[0].channel, folded[n0:n1], op.multiplier[n0:n1],
                               op.shift[n0:n1])
            if plan.rows:
                channels, kw = padded.shape[2], op.kernel[1]
                for ox0 in range(0, wo, plan.strip):
                    ox1 = min(ox0 + plan.strip, wo)
                    c0, c1 = ox0 * sw, (ox1 - 1) * sw + kw      # its input columns
                    for oy0 in range(0, ho, plan.band):
                        oy1 = min(oy0 + plan.band, ho)
                        r0, r1 = oy0 * sh, (oy1 - 1) * sh + kh
                        rows = np.zeros((r1 - r0, plan.rows), dtype=np.int8)
                        rows[:, :(c1 - c0) * channels] = padded[r0:r1, c0:c1].reshape(r1 - r0,
                                                                                       -1)
                        base = next_act_base()
                        b.add(Opcode.LOAD_ACT, asm.encode_load_act(base, rows))
                        for oy in range(oy0, oy1):
                            for ox in range(ox0, ox1):
                                at = (base + (oy - oy0) * sh * plan.rows
                                      + (ox - ox0) * sw * channels)
                                for tile in ps.tiles:
                                    for dy, piece in enumerate(tile.pieces):
                                        multiply(tile, piece, at + dy * plan.rows, dy == 0)
                                    emit(tile, oy * wo + ox)
            elif plan.image:
                for first in range(0, count, plan.band):
                    stop = min(first + plan.band, count)
                    base = next_act_base()
                    b.add(Opcode.LOAD_ACT, asm.encode_load_act(base, images[first:stop]))
                    for p in range(first, stop):
                        at = base + (p - first) * plan.image
                        for tile in ps.tiles:
                            for j, piece in enumerate(tile.pieces):
                                multiply(tile, piece, at + piece.act, j == 0)
                            emit(tile, p)
            else:
                for p in range(count):
                    for tile in ps.tiles:
                        for j, piece in enumerate(tile.pieces):
                            base = next_act_base()
                            b.add(Opcode.LOAD_ACT,
                                  asm.encode_load_act(base, patches[p, piece.k0:piece.k1]))
                            multiply(tile, piece, base, j == 0)
                        emit(tile, p)
        b.add(Opcode.READ_COUNTERS, asm.encode_read_counters())
        return b.segment()

    @staticmethod
    def decode(segment, out):
        """``(y, counters, words_out)`` of ``segment`` from its output words ``out``: ``y`` int8
        ``(P, N)`` (``None`` without emits), the final ``READ_COUNTERS`` (a dict by counter
        name), and the output words by kind (``results``, ``statuses``, ``counters``). Raises
        ``RuntimeError`` when the answer is malformed or a command failed.

        Status words are cut with the :data:`pim_macro.hw.isa.Status` field positions read once
        (a segment has tens of thousands of answers; unpacking each through the layout would
        cost more than the golden model's run)."""
        out = [int(w) for w in out]
        words_out = {"results": 0, "statuses": 0, "counters": 0}
        y = None
        if segment.emits:
            patches = 1 + max(p for p, _, _ in segment.emits)
            channels = max(n1 for _, _, n1 in segment.emits)
            y = np.zeros((patches, channels), dtype=np.int8)
        emits = iter(segment.emits)
        i, counters = 0, None
        for n, opcode in enumerate(segment.opcodes):
            if i >= len(out):
                raise RuntimeError(f"the macro answered {n} of {len(segment.opcodes)} commands")
            status = out[i]
            echoed, error, count = (_field(status, "opcode"), _field(status, "error"),
                                    _field(status, "count"))
            if echoed != opcode.value or error != Error.OK.value:
                name = Error(error).name if error in _ERRORS else f"error {error}"
                raise RuntimeError(f"command {n} ({opcode.name}) answered opcode "
                                   f"{echoed:#04x} {name}")
            data = out[i + 1:i + 1 + count]
            if len(data) != count:
                raise RuntimeError(f"malformed output stream: command {n} ({opcode.name}) "
                                   f"announces {count} words, {len(data)} follow")
            i += 1 + count
            if opcode == Opcode.EMIT_INT8:
                p, n0, n1 = next(emits)
                y[p, n0:n1] = asm.unpack_bytes(data, n1 - n0)
                words_out["results"] += 1 + count
            elif opcode == Opcode.READ_COUNTERS:
                words_out["counters"] += 1 + count
                counters = {c.name.lower(): data[c.value] for c in Counter}
            else:
                words_out["statuses"] += 1
        if i != len(out):
            raise RuntimeError(f"the macro answered {len(out) - i} words more than "
                               f"{len(segment.opcodes)} commands")
        return y, counters, words_out


def compile_graph(graph, config, *, im2col=False):
    """The :class:`GraphProgram` of ``graph`` for ``config`` (``ValueError`` for bad ones);
    ``im2col``: cut the patches of ``CONV_2D`` ops on chip where it applies
    (:meth:`GraphProgram._row_layout`): their input rows cross the stream once per band instead
    of once per window they fall in."""
    return GraphProgram(graph, config, im2col=im2col)


# -- running -----------------------------------------------------------------------------------

@dataclass
class OpStats:
    """One graph op over every sample of a run: ``name`` (the TFLite op), ``kind`` ``"macro"`` or
    ``"host"``, ``macs`` (the model's, per sample; 0 for a host op), ``host_work`` (elements a
    host op reads per sample), and for a macro op the sums over samples of its segments'
    counters (``cycles``, ``mac_active``, ``row_reads``, ``bus_beats``) and stream words
    (``words_in``/``words_out`` by kind), and its ``passes`` and ``streamed``."""
    index: int
    name: str
    kind: str
    macs: int = 0
    host_work: int = 0
    cycles: int = 0
    mac_active: int = 0
    row_reads: int = 0
    bus_beats: int = 0
    words_in: dict = field(default_factory=dict)
    words_out: dict = field(default_factory=dict)
    passes: int = 0
    streamed: bool = False
    host_traffic: int = 0


def _add(into, more):
    for key, value in more.items():
        into[key] = into.get(key, 0) + value


@dataclass
class GraphResult:
    """What :func:`run_graph` returns (counts are for the whole batch unless said).

    ``outputs``: one array per graph output, its tensor's dtype, shape ``(B, *shape[1:])``;
    ``tensors``: ``{tensor index: (B, ...) array}`` of every macro op's output (layer-by-layer
    checks); ``cycles``: int per sample, the sum of its segments' ``CYCLES`` (0 on ``golden``,
    which has no time); ``setup_cycles``: the one-time set-up segment's (resident weights and
    channels); ``ops``: an :class:`OpStats` per graph op; ``words_in``/``words_out``: stream
    words of the inferences by kind (set-up apart: ``setup_words_in``); ``weights_resident``,
    ``channels_resident``, ``passes`` (per inference), ``weight_rows``, ``macs`` (per sample),
    ``im2col`` (the program's option); ``counters``: every counter (by lower-case name) summed
    over the inferences' segments, the batch's, set-up apart (``setup_counters``): what
    :func:`pim_macro.sw.models.energy.energy` prices."""
    sim: str
    arch: str
    config: MacroConfig
    batch: int
    outputs: list
    tensors: dict
    cycles: list
    setup_cycles: int
    setup_words_in: dict
    ops: list
    words_in: dict
    words_out: dict
    weights_resident: bool
    channels_resident: bool
    passes: int
    weight_rows: int
    weight_bytes: int
    macs: int
    im2col: bool = False
    counters: dict = field(default_factory=dict)
    setup_counters: dict = field(default_factory=dict)

    def utilization(self):
        """Per macro op kind (``FULLY_CONNECTED``, ...): ``macs`` per sample, ``cycles`` per
        sample, ``utilization`` (useful MACs over ``macs_per_cycle`` times its cycles; ``None``
        without cycles) and ``active`` (useful MACs over the MACs of the rows read: what the
        mapping wastes, e.g. the zero lanes of a depthwise op)."""
        out = {}
        per = self.config.macs_per_cycle
        for s in self.ops:
            if s.kind != "macro":
                continue
            k = out.setdefault(s.name, {"macs": 0, "cycles": 0, "mac_active": 0})
            k["macs"] += s.macs
            k["cycles"] += s.cycles
            k["mac_active"] += s.mac_active
        for k in out.values():
            total = k["macs"] * self.batch
            k["utilization"] = total / (k["cycles"] * per) if k["cycles"] else None
            k["active"] = total / (k["mac_active"] * per) if k["mac_active"] else None
            k["cycles"] = k["cycles"] / self.batch
            del k["mac_active"]
        return out

    def host_share(self):
        """``{"work": ..., "traffic": ...}``: the host ops' shares (see the module)."""
        host = sum(s.host_work for s in self.ops)
        traffic = sum(s.host_traffic for s in self.ops)
        total = sum(self.words_in.values()) + sum(self.words_out.values())
        return {"work": host / (host + self.macs) if host + self.macs else 0.0,
                "traffic": traffic / total if total else 0.0}

    def report(self):
        """A JSON-ready dict of everything but the arrays."""
        return {
            "sim": self.sim, "arch": self.arch, "config": self.config.as_dict(),
            "batch": self.batch, "macs": self.macs, "weight_bytes": self.weight_bytes,
            "weight_rows": self.weight_rows, "sram_bytes": self.config.weight_bytes,
            "weights_resident": self.weights_resident,
            "channels_resident": self.channels_resident, "passes": self.passes,
            "im2col": self.im2col,
            "cycles": self.cycles, "setup_cycles": self.setup_cycles,
            "words_in": self.words_in, "words_out": self.words_out,
            "setup_words_in": self.setup_words_in,
            "utilization": self.utilization(), "host_share": self.host_share(),
            "ops": [{"index": s.index, "name": s.name, "kind": s.kind, "macs": s.macs,
                     "cycles": s.cycles, "passes": s.passes, "streamed": s.streamed,
                     "words_in": s.words_in, "words_out": s.words_out}
                    for s in self.ops],
        }


def _graph_inputs(graph, x):
    """The batch of each graph input as an array ``(B, *shape[1:])``; ``ValueError`` naming
    the mismatch."""
    arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    if len(arrays) != len(graph.inputs):
        raise ValueError(f"the model has {len(graph.inputs)} inputs, not {len(arrays)}")
    out, batch = [], None
    for i, array in zip(graph.inputs, arrays):
        tensor = graph.tensors[i]
        array = np.asarray(array)
        want = tuple(tensor.shape[1:])
        if array.shape[1:] != want or array.ndim != len(want) + 1:
            raise ValueError(f"input {tensor.name!r} must have shape (B, "
                             f"{', '.join(map(str, want))}), not {array.shape}")
        float_input = np.dtype(tensor.dtype).kind == "f" and array.dtype.kind == "f"
        if array.dtype != np.dtype(tensor.dtype) and not float_input:
            raise ValueError(f"input {tensor.name!r} must be {np.dtype(tensor.dtype).name}, "
                             f"not {array.dtype}")
        # QUANTIZE casts NaN and inf to int32 with numpy's warning and an undefined value.
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ValueError(f"input {tensor.name!r} holds values that are not finite (inf or "
                             "NaN)")
        if float_input and array.dtype != np.dtype(tensor.dtype):
            # numpy saves float64: a float model input takes any float, as the float32 the
            # model holds (TFLite's converter's users cast it the same way).
            with np.errstate(over="ignore"):
                array = array.astype(tensor.dtype)
            if not np.all(np.isfinite(array)):
                raise ValueError(f"input {tensor.name!r} holds values beyond "
                                 f"{np.dtype(tensor.dtype).name}'s range")
        if batch is not None and array.shape[0] != batch:
            raise ValueError(f"the inputs hold {batch} and {array.shape[0]} samples")
        batch = array.shape[0]
        out.append(array)
    if not batch:
        raise ValueError("the input holds no samples")
    return out, batch


def _as_tensor(graph, index, value):
    """``value`` in tensor ``index``'s shape (batch 1) and dtype."""
    t = graph.tensors[index]
    return np.asarray(value).astype(t.dtype).reshape(t.shape)


def run_graph(graph, x, config, *, sim="golden", arch="pim", idle=0.0, backpressure=0.0,
              seed=0, port=None, program=None, im2col=False, fabric="portable"):
    """Run ``graph`` on the batch ``x`` (one array ``(B, *input shape without batch)`` in the
    input tensor's dtype (any float dtype for a float32 input: cast to float32), or a list of
    them for several inputs): macro ops on ``sim`` of
    ``arch`` through one :class:`~pim_macro.sw.runtime.driver.Session`, host ops in numpy.
    ``program``: a :class:`GraphProgram` of this graph and config already compiled.
    ``fabric``: what ``sim="model"`` times (see :class:`~pim_macro.sw.runtime.driver.Session`).

    Returns a :class:`GraphResult`. Raises ``ValueError`` for bad arguments or input (one line),
    ``RuntimeError`` when the macro fails a command or answers wrongly, and what
    :class:`Session` raises (a missing simulator, a hang)."""
    check_run_options(sim, arch, idle, backpressure, port)
    program = program or compile_graph(graph, config, im2col=im2col)
    inputs, batch = _graph_inputs(graph, x)
    consumers = {}
    for op in graph.ops:
        for i in op.inputs:
            consumers.setdefault(i, []).append(op)
    producers = {op.output: op for op in graph.ops}
    stats = []
    for index, op in enumerate(graph.ops):
        if index in program.plans:
            plan = program.plans[index]
            stats.append(OpStats(index, op.name, "macro", macs=op.macs,
                                 passes=len(plan.passes), streamed=plan.streamed))
        else:
            work = sum(int(np.prod(graph.tensors[i].shape)) for i in op.inputs)
            stats.append(OpStats(index, op.name, "host", host_work=work))
    tensors = {plan.op.output: [] for plan in program.plans.values()}
    outputs = [[] for _ in graph.outputs]
    cycles, words_in, words_out = [], {}, {}
    setup_cycles, setup_in = 0, {}
    run_counters, setup_counters = {}, {}
    with Session(config, sim=sim, arch=arch, idle=idle, backpressure=backpressure, seed=seed,
                 port=port, fabric=fabric) as session:
        setup = program.setup_words()
        if setup is not None:
            _, counters, _ = program.decode(setup, session.run(setup.words))
            setup_cycles, setup_in = counters["cycles"], setup.words_in
            setup_counters = counters
        for s in range(batch):
            # As Graph.run: values in their tensor's shape (batch 1) and dtype; a host op's
            # constant operand from its tensor's data.
            values = {i: _as_tensor(graph, i, array[s]) for i, array in zip(graph.inputs, inputs)}
            total = 0
            for index, op in enumerate(graph.ops):
                args = [values[i] if i in values else graph.tensors[i].data for i in op.inputs]
                if index not in program.plans:
                    values[op.output] = _as_tensor(graph, op.output, op.run(*args))
                    continue
                plan = program.plans[index]
                segment = program.segment(plan, args[0])
                y, counters, out_kinds = program.decode(segment, session.run(segment.words))
                value = _as_tensor(graph, op.output, y)
                values[op.output] = value
                tensors[op.output].append(value[0])
                st = stats[index]
                for name in ("cycles", "mac_active", "row_reads", "bus_beats"):
                    setattr(st, name, getattr(st, name) + counters[name])
                _add(st.words_in, segment.words_in)
                _add(st.words_out, out_kinds)
                _add(words_in, segment.words_in)
                _add(words_out, out_kinds)
                if op.input in producers and not isinstance(producers[op.input], MacroOp):
                    st.host_traffic += segment.words_in["activations"]
                if any(not isinstance(c, MacroOp) for c in consumers.get(op.output, [])):
                    st.host_traffic += out_kinds["results"]
                _add(run_counters, counters)
                total += counters["cycles"]
            cycles.append(total)
            for k, i in enumerate(graph.outputs):
                outputs[k].append(values[i][0])
    return GraphResult(
        sim=sim, arch=arch, config=config, batch=batch,
        outputs=[np.stack(o).astype(graph.tensors[i].dtype) for o, i in
                 zip(outputs, graph.outputs)],
        tensors={i: np.stack(v) for i, v in tensors.items()},
        cycles=cycles, setup_cycles=setup_cycles, setup_words_in=setup_in, ops=stats,
        words_in=words_in, words_out=words_out,
        weights_resident=program.weights_resident,
        channels_resident=program.channels_resident, passes=program.passes,
        weight_rows=program.weight_rows, weight_bytes=graph.weight_bytes, macs=graph.macs,
        im2col=program.im2col, counters=run_counters, setup_counters=setup_counters)
