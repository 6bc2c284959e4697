"""The macro: the command controller, its memories and its two engines, behind one stream pair."""

from amaranth import *
from amaranth.lib import wiring, data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from .isa import (STREAM_BITS, ARCHES, LOADS, LANE_COUNTED, Opcode, Flag, Error, Counter,
                  StatusWord, MacroConfig, COUNT_BITS, FIELD_BITS)
from .bias_memory import ChannelMemory
from .counters import PerfCounters
from .decoder import CommandDecoder
from .fifo import BlockFIFO
from .mac_engine import MacEngine
from .output_engine import OutputEngine, Response, ResponseKind, OUT_FIFO_DEPTH
from .scoreboard import WritebackScoreboard
from .status import StatusWords
from .weight_store import weight_store_for


__all__ = ["Macro", "make_macro", "check_macro_args", "OUT_FIFO_DEPTH", "RESPONSE_SLOTS",
           "DISPATCH_LAG"]


#: Responses the controller may queue ahead of the output engine.
RESPONSE_SLOTS = 8
#: Cycles from a dispatch condition coming true to the controller acting on it: the verdict on
#: the next command is registered (one flip-flop stage, see :class:`Macro`).
DISPATCH_LAG = 1

# Opcodes answered by the output engine from captured accumulators (a ResponseKind each):
# those whose count is a number of lanes.
_EMITTING = tuple(sorted(LANE_COUNTED, key=lambda op: op.value))


def check_macro_args(config, arch):
    """Raise ``TypeError``/``ValueError`` for arguments :class:`Macro` rejects."""
    if not isinstance(config, MacroConfig):
        raise TypeError(f"config must be a MacroConfig, not {config!r}")
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {', '.join(ARCHES)}, not {arch!r}")


class Macro(wiring.Component):
    """A compute-in-memory macro driven by one command stream (see :mod:`pim_macro.hw.isa`).

    Contract
    --------
    * ``i_stream`` carries commands and their payloads, one 32-bit word per transfer. The macro
      takes a word whenever it is waiting for one; the source may idle at any time.
    * ``o_stream`` carries one status word per command, in command order, then its data words.
      The sink may hold ``ready`` low at any time; the macro then stops once its output FIFO
      (``OUT_FIFO_DEPTH`` words) and response queue are full, and waits without losing anything.
    * Results are exactly those of executing the commands one at a time, in order; underneath,
      the controller decodes ahead while a :class:`MacEngine` runs MATVECs and an
      :class:`OutputEngine` streams results, so loads, compute and output overlap.
    * A failed check (see :class:`pim_macro.hw.isa.Error`) executes nothing, writes no memory,
      reports the code, skips the announced payload and goes on with the next command. No input can
      make the controller wait for anything but its own engines and stream handshakes: it never
      hangs.
    * Synchronous reset returns the controller, engines, accumulators, counters and queues to
      their initial state in any cycle; SRAM, activation and channel memory contents are kept.

    Timing (each rule is what :mod:`pim_macro.sw.models.cycle_model` predicts)
    ------
    Every header and argument word takes one cycle; then the command waits in ``DISPATCH`` until
    it can go, and goes in one cycle. The verdict is registered: a command goes in cycle ``t``
    when its conditions held in cycle ``t - 1``, so it goes in its first ``DISPATCH`` cycle if
    they held while its last word was taken, and otherwise the cycle after they came true. The
    conditions:

    * every command needs a free response slot (``RESPONSE_SLOTS``), except ``READ_COUNTERS`` and
      ``STATUS``, which wait until everything is idle and the output FIFO is empty, then push
      their status and data words themselves, one per cycle;
    * ``MATVEC`` needs a free engine slot, and waits for pending write-backs when one of them
      may write the activation bytes it reads (their span is tracked since the count of pending
      write-backs was last zero);
      ``EMIT_*``/``WRITEBACK`` need a free engine slot (for their capture);
    * ``WRITE_WEIGHTS`` waits while a queued or running MATVEC reads one of its rows (on a
      single-port weight store, :attr:`pim_macro.hw.fabric.Fabric.single_port`, while any
      MATVEC is queued or running);
      ``LOAD_ACT`` while one reads one of its bytes, or any write-back is pending (they share
      the activation buffer's write port); ``LOAD_BIAS`` and ``LOAD_QUANT`` until no response
      is queued or streaming (the output engine reads the channel memory);
    * a load then takes one payload word per cycle (``LOAD_QUANT``: a channel's multiplier,
      then its shift); a failed command skips its payload likewise.

    Parts: a :class:`CommandDecoder` latches and checks each command; the controller's state
    machine (here) takes the stream, dispatches and loads; a :class:`WritebackScoreboard`
    tracks the write-backs still pending; :class:`StatusWords` answers ``STATUS``.

    Parameters
    ----------
    config : MacroConfig
    arch : str
        ``"pim"`` (:class:`WeightArray`) or ``"baseline"`` (:class:`BusWeightStore`).
    """

    def __new__(cls, config: MacroConfig, *, arch="pim"):
        # Checked before the object exists: a rejected macro leaves no unused object behind.
        check_macro_args(config, arch)
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, config: MacroConfig, *, arch="pim"):
        self.config = config
        self.arch = arch
        super().__init__({
            "i_stream": In(stream.Signature(STREAM_BITS)),
            "o_stream": Out(stream.Signature(STREAM_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config

        m.submodules.mac_engine = engine = MacEngine(cfg, weight_store_for(self.arch))
        m.submodules.output_engine = oe = OutputEngine(cfg)
        m.submodules.counters = counters = PerfCounters()
        # Block-RAM FIFOs, cycle for cycle like SyncFIFO: on an iCE40 the two would otherwise
        # take some 1300 logic cells of flip-flops and multiplexers.
        m.submodules.out_fifo = out_fifo = BlockFIFO(width=STREAM_BITS, depth=OUT_FIFO_DEPTH)
        m.submodules.responses = responses = BlockFIFO(width=Response.size, depth=RESPONSE_SLOTS)

        # Activations: 32-bit words with byte enables, so a payload word lands in one cycle and
        # a write-back can store a single int8 result.
        m.submodules.act_mem = act_mem = Memory(shape=unsigned(32), depth=cfg.act_depth // 4,
                                                init=[])
        act_wr = act_mem.write_port(granularity=8)
        act_rd = act_mem.read_port()
        m.submodules.bias_mem = bias_mem = ChannelMemory(cfg.bias_depth, cfg.requantizers)

        wiring.connect(m, engine.act_read, act_rd)
        wiring.connect(m, oe.bias_read, bias_mem.read)
        wiring.connect(m, engine.captured, oe.captured)
        wiring.connect(m, responses.r_stream, oe.responses)
        wiring.connect(m, out_fifo.r_stream, wiring.flipped(self.o_stream))
        m.d.comb += [oe.out.rdy.eq(out_fifo.w_rdy), oe.out.level.eq(out_fifo.level),
                     oe.out.pop.eq(out_fifo.r_en & out_fifo.r_rdy)]

        m.submodules.decoder = decoder = CommandDecoder(cfg)
        m.submodules.writebacks = writebacks = WritebackScoreboard(
            slots=RESPONSE_SLOTS, check_bits=len(decoder.hi_rows_span.hi))
        m.submodules.status = status_words = StatusWords(cfg, arch=self.arch)
        header, arg0, arg1 = decoder.header, decoder.arg0, decoder.arg1
        opcode, count = header.opcode, header.count
        has_flag = lambda flag: (header.flags.as_value() & flag.value).any()
        error, status = decoder.error, decoder.status
        ok = error == Error.OK
        m.d.comb += [decoder.word.eq(self.i_stream.payload), decoder.valid.eq(self.i_stream.valid),
                     status_words.error.eq(error)]

        # ---- What a command needs before it can go, decided a cycle ahead -----------------
        # The verdict on the command the decoder will hold next cycle (its `next_*` outputs:
        # the word being latched, or the command held) against the state now is registered,
        # and DISPATCH acts on the registered verdict: no path runs from the latched command
        # through the hazard compares into the state machine's enables. Every condition below
        # is made false only by the controller's own dispatch (a push into the response queue,
        # the engine or the write-back scoreboard, or its own words into the output FIFO), and
        # a dispatch is never followed by DISPATCH in the next cycle, so a verdict a cycle old
        # never lets a command go early; it sees a condition that has just come true a cycle
        # late, which the cycle model counts.
        oe_quiet = ~responses.r_rdy & oe.idle
        all_idle = engine.idle & oe_quiet & (out_fifo.level == 0)
        # The rows a WRITE_WEIGHTS writes, the bytes a LOAD_ACT writes.
        m.d.comb += [engine.hazards.rows.eq(decoder.next_lo_span),
                     engine.hazards.acts.eq(decoder.next_lo_span),
                     writebacks.check.eq(decoder.next_hi_rows_span)]
        next_opcode = decoder.next_header.opcode
        may_go = Signal()
        with m.If(decoder.next_error != Error.OK):
            m.d.comb += may_go.eq(responses.w_rdy)
        with m.Elif(decoder.next_barrier):
            m.d.comb += may_go.eq(all_idle)
        with m.Else():
            with m.Switch(next_opcode):
                with m.Case(Opcode.WRITE_WEIGHTS):
                    m.d.comb += may_go.eq(responses.w_rdy & ~engine.hazards.rows_busy)
                with m.Case(Opcode.LOAD_ACT):
                    # Loads and write-backs share the activation buffer's write port.
                    m.d.comb += may_go.eq(responses.w_rdy & ~engine.hazards.acts_busy
                                          & ~writebacks.pending)
                with m.Case(Opcode.LOAD_BIAS, Opcode.LOAD_QUANT):
                    m.d.comb += may_go.eq(responses.w_rdy & oe_quiet)
                with m.Case(Opcode.MATVEC):
                    # Only a write-back into the bytes this MATVEC reads must land first
                    # (checked against the span of every write-back still pending).
                    m.d.comb += may_go.eq(responses.w_rdy & engine.ops.ready
                                          & ~writebacks.conflict)
                with m.Case(*_EMITTING):
                    m.d.comb += may_go.eq(responses.w_rdy & engine.ops.ready)
        can_go = Signal()
        m.d.sync += can_go.eq(may_go)

        # The response queued for this command.
        response = Signal(Response)
        kind = Signal(ResponseKind)
        with m.Switch(opcode):
            for op in _EMITTING:
                with m.Case(op):
                    m.d.comb += kind.eq(ResponseKind[op.name])
        m.d.comb += [
            response.status.eq(status), response.kind.eq(Mux(ok, kind, ResponseKind.STATUS_ONLY)),
            response.count.eq(count), response.bias_on.eq(has_flag(Flag.BIAS)),
            response.bias.eq(arg0.writeback.bias), response.act.eq(arg0.writeback.act),
            response.double.eq(has_flag(Flag.DOUBLE_ROUND)),
            response.zero_point.eq(arg1.zero_point), response.act_min.eq(arg1.act_min),
            response.act_max.eq(arg1.act_max),
            responses.w_data.eq(response),
        ]
        m.d.comb += [
            engine.ops.payload.capture.eq(opcode != Opcode.MATVEC),
            engine.ops.payload.rows.eq(decoder.lo_span),
            engine.ops.payload.acts.lo.eq(decoder.hi_rows_span.lo),
            # Only a MATVEC that passed its checks is pushed: its end fits the buffer.
            engine.ops.payload.acts.hi.eq(decoder.hi_rows_span.hi),
            engine.ops.payload.count.eq(count),
            engine.ops.payload.first.eq(~has_flag(Flag.ACCUMULATE)),
        ]
        m.d.comb += [
            writebacks.add.eq(responses.w_en & ok & (opcode == Opcode.WRITEBACK)),
            writebacks.add_span.eq(decoder.hi_span),
            writebacks.done.eq(oe.writeback_done),
        ]

        # ---- Write ports: loads from the controller, write-backs from the output engine ---
        # They never collide: LOAD_ACT waits for pending write-backs, and a write-back cannot be
        # dispatched before an earlier load's payload is in.
        load_act_addr = Signal(range(cfg.act_depth // 4))
        load_act_en = Signal(4)
        m.d.comb += [
            act_wr.addr.eq(Mux(oe.act_write.en.any(), oe.act_write.addr, load_act_addr)),
            act_wr.data.eq(Mux(oe.act_write.en.any(), oe.act_write.data,
                               self.i_stream.payload)),
            act_wr.en.eq(oe.act_write.en | load_act_en),
        ]

        # ---- Output FIFO: the controller writes only when the output engine is quiet --------
        ctrl_push = Signal()
        ctrl_data = Signal(32)
        m.d.comb += [out_fifo.w_en.eq(ctrl_push | oe.out.en),
                     out_fifo.w_data.eq(Mux(ctrl_push, ctrl_data, oe.out.data))]

        # ---- Counters ----------------------------------------------------------------------
        events = Signal(data.ArrayLayout(1, len(Counter)))
        m.d.comb += [
            events[Counter.MAC_ACTIVE.value].eq(engine.events.mac_active),
            events[Counter.ROW_READS.value].eq(engine.events.row_read),
            events[Counter.BEATS_IN.value].eq(self.i_stream.valid & self.i_stream.ready),
            events[Counter.BEATS_OUT.value].eq(self.o_stream.valid & self.o_stream.ready),
            events[Counter.STALL_IN.value].eq(~self.i_stream.valid & self.i_stream.ready),
            events[Counter.STALL_OUT.value].eq(self.o_stream.valid & ~self.o_stream.ready),
            events[Counter.BUS_BEATS.value].eq(engine.events.bus_beat),
            events[Counter.WEIGHT_WORDS.value].eq(engine.write.en),
            counters.events.eq(events),
        ]
        # ---- The controller ----------------------------------------------------------------
        i_word = self.i_stream.payload
        remaining = Signal(32)              # payload words to take or skip
        index = Signal(COUNT_BITS)          # payload word / data word
        # The bits of `index` that pick a counter or a status word.
        which = index[:bits_for(max(len(Counter), len(StatusWord)) - 1)]
        row = Signal(FIELD_BITS)            # row / channel being written
        second = Signal()                   # LOAD_QUANT: the channel's second word (its shift)
        word = Signal(range(cfg.row_words)) # word within the row being written
        act_word = Signal(FIELD_BITS)
        start = arg0.row.row                # first row, bias word or activation byte written

        with m.FSM(name="ctrl"):
            # The decoder's strobes follow the state alone (its `next_*` views assume the word
            # is taken), and `valid` only enables its registers: the stream's handshake does
            # not reach the dispatch verdict's compares.
            with m.State("HEADER"):
                m.d.comb += [self.i_stream.ready.eq(1), decoder.latch_header.eq(1)]
                with m.If(self.i_stream.valid):
                    with m.If(decoder.word_args == 0):
                        m.next = "DISPATCH"
                    with m.Else():
                        m.next = "ARG0"
            with m.State("ARG0"):
                m.d.comb += [self.i_stream.ready.eq(1), decoder.latch_arg0.eq(1)]
                with m.If(self.i_stream.valid):
                    with m.If(decoder.has_arg1):
                        m.next = "ARG1"
                    with m.Else():
                        m.next = "DISPATCH"
            with m.State("ARG1"):
                m.d.comb += [self.i_stream.ready.eq(1), decoder.latch_arg1.eq(1)]
                with m.If(self.i_stream.valid):
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(can_go):
                    m.d.sync += [index.eq(0), remaining.eq(decoder.payload), row.eq(start),
                                 word.eq(0), second.eq(0), act_word.eq(start >> 2)]
                    with m.If(~ok):
                        m.d.comb += [responses.w_en.eq(1), status_words.fail.eq(1)]
                        with m.If(decoder.payload != 0):
                            m.next = "SKIP"
                        with m.Else():
                            m.next = "HEADER"
                    with m.Elif(decoder.barrier):
                        m.d.comb += [ctrl_push.eq(1), ctrl_data.eq(status)]
                        with m.If(opcode == Opcode.READ_COUNTERS):
                            m.d.comb += [counters.snapshot.eq(1),
                                         counters.clear.eq(has_flag(Flag.CLEAR))]
                        m.next = "DATA"
                    with m.Else():
                        m.d.comb += responses.w_en.eq(1)
                        with m.Switch(opcode):
                            with m.Case(*LOADS):
                                m.next = "LOAD"
                            with m.Default():
                                m.d.comb += engine.ops.valid.eq(1)
                                m.next = "HEADER"
            with m.State("SKIP"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 1):
                        m.next = "HEADER"
            with m.State("LOAD"):
                m.d.comb += [
                    self.i_stream.ready.eq(1),
                    engine.write.row.eq(row), engine.write.word.eq(word),
                    engine.write.data.eq(i_word),
                    bias_mem.write.addr.eq(row), bias_mem.write.data.eq(i_word),
                    load_act_addr.eq(act_word),
                ]
                with m.If(self.i_stream.valid):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 1):
                        m.next = "HEADER"
                    with m.Switch(opcode):
                        with m.Case(Opcode.WRITE_WEIGHTS):
                            m.d.comb += engine.write.en.eq(1)
                            m.d.sync += word.eq(word + 1)
                            with m.If(word == cfg.row_words - 1):
                                m.d.sync += [word.eq(0), row.eq(row + 1)]
                        with m.Case(Opcode.LOAD_BIAS):
                            m.d.comb += bias_mem.write.bias.eq(1)
                            m.d.sync += row.eq(row + 1)
                        with m.Case(Opcode.LOAD_QUANT):
                            m.d.comb += [bias_mem.write.multiplier.eq(~second),
                                         bias_mem.write.shift.eq(second)]
                            m.d.sync += second.eq(~second)
                            with m.If(second):
                                m.d.sync += row.eq(row + 1)
                        with m.Case(Opcode.LOAD_ACT):
                            # Bytes past `count` in the last word are not written.
                            left = count - (index << 2)
                            m.d.comb += load_act_en.eq(Mux(left >= 4, 0b1111,
                                                           (1 << left[:2]) - 1))
                            m.d.sync += [act_word.eq(act_word + 1), index.eq(index + 1)]
            with m.State("DATA"):
                with m.If(out_fifo.w_rdy):
                    with m.If(opcode == Opcode.READ_COUNTERS):
                        m.d.comb += ctrl_data.eq(counters.snap[which])
                    with m.Else():
                        m.d.comb += ctrl_data.eq(status_words.words[which])
                    m.d.comb += ctrl_push.eq(1)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == decoder.data_words - 1):
                        m.d.comb += counters.release.eq(1)   # the quiet counters' clear
                        m.next = "HEADER"
                        with m.If(opcode == Opcode.STATUS):
                            m.d.comb += status_words.clear.eq(1)
        return m


def make_macro(config: MacroConfig, *, arch="pim"):
    """The macro for ``arch`` (see :data:`pim_macro.hw.isa.ARCHES`): one signature, one controller;
    only the weight store differs."""
    return Macro(config, arch=arch)
