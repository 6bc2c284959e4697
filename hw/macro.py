"""The macro: the command controller, its memories and its two engines, behind one stream pair."""

from amaranth import *
from amaranth.lib import wiring, data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .isa import (STREAM_BITS, ISA_VERSION, ARCHES, REQUANT_SHIFT_MAX, Opcode, Flag, Error,
                  Counter, StatusWord, Header, Status, QuantArg, MacroConfig, arg_words,
                  allowed_flags, COUNTLESS, LANE_COUNTED)
from .bias_memory import BiasMemory
from .constmul import times_const
from .counters import PerfCounters
from .fifo import BlockFIFO
from .mac_engine import MacEngine
from .output_engine import OutputEngine, Response, ResponseKind, OUT_FIFO_DEPTH
from .weight_store import weight_store_for


__all__ = ["Macro", "make_macro", "OUT_FIFO_DEPTH", "RESPONSE_SLOTS"]


#: Responses the controller may queue ahead of the output engine.
RESPONSE_SLOTS = 8


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
    * A failed check (see :class:`pim_macro.hw.isa.Error`) executes nothing, writes no memory, reports the
      code, skips the announced payload and goes on with the next command. No input can make the
      controller wait for anything but its own engines and stream handshakes: it never hangs.
    * Synchronous reset returns the controller, engines, accumulators, counters and queues to
      their initial state in any cycle; SRAM, activation and bias contents are kept.

    Timing (each rule is what :mod:`pim_macro.sw.models.cycle_model` predicts)
    ------
    Every header and argument word takes one cycle; then the command waits in ``DISPATCH`` until
    it can go, and goes in one cycle:

    * every command needs a free response slot (``RESPONSE_SLOTS``), except ``READ_COUNTERS`` and
      ``STATUS``, which wait until everything is idle and the output FIFO is empty, then push
      their status and data words themselves, one per cycle;
    * ``MATVEC`` needs a free engine slot, and waits for pending write-backs when one of them
      may write the activation bytes it reads (their span is tracked since the count of pending
      write-backs was last zero);
      ``EMIT_*``/``WRITEBACK`` need a free engine slot (for their capture);
    * ``WRITE_WEIGHTS`` waits while a queued or running MATVEC reads one of its rows;
      ``LOAD_ACT`` while one reads one of its bytes, or any write-back is pending (they share
      the activation buffer's write port); ``LOAD_BIAS``
      until no response is queued or streaming;
    * a load then takes one payload word per cycle; a failed command skips its payload likewise.

    Parameters
    ----------
    config : MacroConfig
    arch : str
        ``"pim"`` (:class:`WeightArray`) or ``"baseline"`` (:class:`BusWeightStore`).
    """

    def __init__(self, config: MacroConfig, *, arch="pim"):
        problem = None
        if not isinstance(config, MacroConfig):
            problem = TypeError(f"config must be a MacroConfig, not {config!r}")
        elif arch not in ARCHES:
            problem = ValueError(f"arch must be one of {', '.join(ARCHES)}, not {arch!r}")
        if problem is not None:
            # A rejected macro is never elaborated: keep Amaranth from warning about it.
            self._MustUse__silence = True
            raise problem
        self.config = config
        self.arch = arch
        super().__init__({
            "i_stream": In(stream.Signature(STREAM_BITS)),
            "o_stream": Out(stream.Signature(STREAM_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        lanes, rows = cfg.lanes, cfg.rows_per_cycle

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
        m.submodules.bias_mem = bias_mem = BiasMemory(cfg.bias_depth, cfg.requantizers)

        m.d.comb += [
            act_rd.addr.eq(engine.act_addr), act_rd.en.eq(engine.act_en),
            engine.act_data.eq(act_rd.data),
            bias_mem.rd_addr.eq(oe.bias_addr), bias_mem.rd_en.eq(oe.bias_en),
            oe.bias_data.eq(bias_mem.rd_data),
            oe.acc_out.eq(engine.acc_out), oe.acc_out_full.eq(engine.acc_out_full),
            engine.release.eq(oe.release),
            oe.rq_data.eq(responses.r_data), oe.rq_valid.eq(responses.r_rdy),
            responses.r_en.eq(oe.rq_pop),
            oe.fifo_w_rdy.eq(out_fifo.w_rdy), oe.fifo_level.eq(out_fifo.level),
            self.o_stream.payload.eq(out_fifo.r_data),
            self.o_stream.valid.eq(out_fifo.r_rdy),
            out_fifo.r_en.eq(self.o_stream.ready),
        ]

        # Latched command.
        header = Signal(Header)
        arg0 = Signal(32)
        arg1 = Signal(QuantArg)
        opcode, count, flags = header.opcode, header.count, header.flags.as_value()
        error = Signal(Error)
        last_error = Signal(Error)
        error_count = Signal(16)
        lo16, hi16 = arg0[:16], arg0[16:]
        # Ends of the spans the command names, summed as its words arrive so that no adder sits
        # between the latched command and the checks that decide whether it can go.
        lo_end = Signal(17)         # lo16 + count
        hi_end = Signal(17)         # hi16 + count
        hi_span_end = Signal(18)    # hi16 + count * rows: the activation bytes a MATVEC reads

        # ---- Command checks (combinational on the latched command) -------------------------
        known, flags_ok, fields_ok, length_ok, aligned, in_range = (Signal(name=n) for n in (
            "known", "flags_ok", "fields_ok", "length_ok", "aligned", "in_range"))
        m.d.comb += [known.eq(0), flags_ok.eq(0), fields_ok.eq(1), length_ok.eq(count != 0),
                     aligned.eq(1), in_range.eq(1)]
        bias_flag = (flags & Flag.BIAS.value).any()
        bias_in_range = ~bias_flag | (lo_end <= cfg.bias_depth)
        quant_ok = (arg1.reserved == 0) & (arg1.shift <= REQUANT_SHIFT_MAX)
        with m.Switch(opcode):
            for op in Opcode:
                with m.Case(op):
                    m.d.comb += [known.eq(1),
                                 flags_ok.eq((flags & (0xFF & ~allowed_flags(op).value)) == 0)]
                    if op in COUNTLESS:
                        m.d.comb += [fields_ok.eq(count == 0), length_ok.eq(1)]
                    if op in LANE_COUNTED:
                        m.d.comb += length_ok.eq((count != 0) & (count <= lanes))
                    if op in (Opcode.WRITE_WEIGHTS, Opcode.LOAD_ACT, Opcode.LOAD_BIAS,
                              Opcode.EMIT_RAW, Opcode.EMIT_INT8):
                        m.d.comb += fields_ok.eq(hi16 == 0)
                    if op == Opcode.EMIT_INT8:
                        m.d.comb += fields_ok.eq((hi16 == 0) & quant_ok)
                    if op == Opcode.WRITEBACK:
                        m.d.comb += fields_ok.eq(quant_ok)
                    if op == Opcode.WRITE_WEIGHTS:
                        m.d.comb += in_range.eq(lo_end <= cfg.depth)
                    if op == Opcode.LOAD_ACT:
                        m.d.comb += [aligned.eq(lo16[:2] == 0),
                                     in_range.eq(lo_end <= cfg.act_depth)]
                    if op == Opcode.LOAD_BIAS:
                        m.d.comb += in_range.eq(lo_end <= cfg.bias_depth)
                    if op == Opcode.MATVEC:
                        m.d.comb += [aligned.eq(hi16 % rows == 0),
                                     in_range.eq((lo_end <= cfg.depth)
                                                 & (hi_span_end <= cfg.act_depth))]
                    if op in (Opcode.EMIT_RAW, Opcode.EMIT_INT8):
                        m.d.comb += in_range.eq(bias_in_range)
                    if op == Opcode.WRITEBACK:
                        m.d.comb += in_range.eq(bias_in_range & (hi_end <= cfg.act_depth))
        with m.If(~known):
            m.d.comb += error.eq(Error.BAD_OPCODE)
        with m.Elif(~flags_ok | ~fields_ok):
            m.d.comb += error.eq(Error.BAD_FIELD)
        with m.Elif(~length_ok):
            m.d.comb += error.eq(Error.BAD_LENGTH)
        with m.Elif(~aligned):
            m.d.comb += error.eq(Error.MISALIGNED)
        with m.Elif(~in_range):
            m.d.comb += error.eq(Error.BAD_ADDRESS)
        with m.Else():
            m.d.comb += error.eq(Error.OK)
        ok = error == Error.OK

        status = Signal(Status)
        data_words = Signal(16)
        with m.Switch(opcode):
            with m.Case(Opcode.EMIT_RAW):
                m.d.comb += data_words.eq(count)
            with m.Case(Opcode.EMIT_INT8):
                m.d.comb += data_words.eq((count + 3) >> 2)
            with m.Case(Opcode.READ_COUNTERS):
                m.d.comb += data_words.eq(len(Counter))
            with m.Case(Opcode.STATUS):
                m.d.comb += data_words.eq(len(StatusWord))
        m.d.comb += [status.opcode.eq(opcode), status.error.eq(error),
                     status.count.eq(Mux(ok, data_words, 0))]

        # Payload words that a load announces, consumed even when the command fails.
        announced = Signal(32)
        with m.Switch(opcode):
            with m.Case(Opcode.WRITE_WEIGHTS):
                m.d.comb += announced.eq(times_const(count, cfg.row_words))
            with m.Case(Opcode.LOAD_ACT):
                m.d.comb += announced.eq((count + 3) >> 2)
            with m.Case(Opcode.LOAD_BIAS):
                m.d.comb += announced.eq(count)

        # ---- What a command needs before it can go ------------------------------------------
        pending_writebacks = Signal(range(RESPONSE_SLOTS + 2))
        # The activation bytes [wb_lo, wb_hi) span every write-back pending since the count
        # was last zero.
        wb_lo = Signal(17)
        wb_hi = Signal(18)
        oe_quiet = ~responses.r_rdy & oe.idle
        all_idle = engine.idle & oe_quiet & (out_fifo.level == 0)
        m.d.comb += [
            engine.chk_row_lo.eq(lo16), engine.chk_row_hi.eq(lo_end),
            engine.chk_act_lo.eq(lo16), engine.chk_act_hi.eq(lo_end),
        ]
        can_go = Signal()
        barrier = (opcode == Opcode.READ_COUNTERS) | (opcode == Opcode.STATUS)
        with m.If(~ok):
            m.d.comb += can_go.eq(responses.w_rdy)
        with m.Elif(barrier):
            m.d.comb += can_go.eq(all_idle)
        with m.Else():
            with m.Switch(opcode):
                with m.Case(Opcode.WRITE_WEIGHTS):
                    m.d.comb += can_go.eq(responses.w_rdy & ~engine.w_conflict)
                with m.Case(Opcode.LOAD_ACT):
                    m.d.comb += can_go.eq(responses.w_rdy & ~engine.a_conflict
                                          & (pending_writebacks == 0))
                with m.Case(Opcode.LOAD_BIAS):
                    m.d.comb += can_go.eq(responses.w_rdy & oe_quiet)
                with m.Case(Opcode.MATVEC):
                    # Only a write-back into the bytes this MATVEC reads must land first
                    # (checked against the span of every write-back still pending).
                    reads_lo, reads_hi = hi16, hi_span_end
                    overlap = (reads_lo < wb_hi) & (wb_lo < reads_hi)
                    m.d.comb += can_go.eq(responses.w_rdy & engine.can_push
                                          & ((pending_writebacks == 0) | ~overlap))
                with m.Case(Opcode.EMIT_RAW, Opcode.EMIT_INT8, Opcode.WRITEBACK):
                    m.d.comb += can_go.eq(responses.w_rdy & engine.can_push)

        # The response queued for this command.
        response = Signal(Response)
        kind = Signal(2)
        with m.Switch(opcode):
            with m.Case(Opcode.EMIT_RAW):
                m.d.comb += kind.eq(ResponseKind.EMIT_RAW)
            with m.Case(Opcode.EMIT_INT8):
                m.d.comb += kind.eq(ResponseKind.EMIT_INT8)
            with m.Case(Opcode.WRITEBACK):
                m.d.comb += kind.eq(ResponseKind.WRITEBACK)
        m.d.comb += [
            response.status.eq(status), response.kind.eq(Mux(ok, kind, ResponseKind.STATUS_ONLY)),
            response.count.eq(count), response.bias_on.eq(bias_flag), response.bias.eq(lo16),
            response.act.eq(hi16), response.mult.eq(arg1.mult), response.shift.eq(arg1.shift),
            response.relu.eq((flags & Flag.RELU.value).any()),
            responses.w_data.eq(response),
        ]
        m.d.comb += [
            engine.push_op.capture.eq(opcode != Opcode.MATVEC),
            engine.push_op.row.eq(lo16), engine.push_op.act.eq(hi16),
            engine.push_op.count.eq(count),
            engine.push_op.row_end.eq(lo_end), engine.push_op.act_end.eq(hi_span_end),
            engine.push_op.first.eq(~(flags & Flag.ACCUMULATE.value).any()),
        ]
        with m.If(responses.w_en & ok & (opcode == Opcode.WRITEBACK)):
            m.d.sync += pending_writebacks.eq(pending_writebacks + 1 - oe.writeback_done)
            new_lo, new_hi = hi16, hi_end
            with m.If(pending_writebacks == 0):
                m.d.sync += [wb_lo.eq(new_lo), wb_hi.eq(new_hi)]
            with m.Else():
                m.d.sync += [wb_lo.eq(Mux(new_lo < wb_lo, new_lo, wb_lo)),
                             wb_hi.eq(Mux(new_hi > wb_hi, new_hi, wb_hi))]
        with m.Elif(oe.writeback_done):
            m.d.sync += pending_writebacks.eq(pending_writebacks - 1)

        # ---- Write ports: loads from the controller, write-backs from the output engine ---
        # They never collide: LOAD_ACT waits for pending write-backs, and a write-back cannot be
        # dispatched before an earlier load's payload is in.
        load_act_addr = Signal(range(cfg.act_depth // 4))
        load_act_en = Signal(4)
        m.d.comb += [
            act_wr.addr.eq(Mux(oe.act_wr_en.any(), oe.act_wr_addr, load_act_addr)),
            act_wr.data.eq(Mux(oe.act_wr_en.any(), oe.act_wr_data, self.i_stream.payload)),
            act_wr.en.eq(oe.act_wr_en | load_act_en),
        ]

        # ---- Output FIFO: the controller writes only when the output engine is quiet --------
        ctrl_push = Signal()
        ctrl_data = Signal(32)
        m.d.comb += [out_fifo.w_en.eq(ctrl_push | oe.fifo_push),
                     out_fifo.w_data.eq(Mux(ctrl_push, ctrl_data, oe.fifo_data))]

        # ---- Counters ----------------------------------------------------------------------
        events = Signal(data.ArrayLayout(1, len(Counter)))
        m.d.comb += [
            events[Counter.MAC_ACTIVE.value].eq(engine.mac_active),
            events[Counter.ROW_READS.value].eq(engine.row_read),
            events[Counter.BEATS_IN.value].eq(self.i_stream.valid & self.i_stream.ready),
            events[Counter.BEATS_OUT.value].eq(self.o_stream.valid & self.o_stream.ready),
            events[Counter.STALL_IN.value].eq(~self.i_stream.valid & self.i_stream.ready),
            events[Counter.STALL_OUT.value].eq(self.o_stream.valid & ~self.o_stream.ready),
            events[Counter.BUS_BEATS.value].eq(engine.bus_beat),
            counters.events.eq(events),
        ]
        status_words = Signal(data.ArrayLayout(32, len(StatusWord)))
        m.d.comb += [
            status_words[StatusWord.ERRORS.value].eq(
                Cat(last_error, Const(ISA_VERSION, 8), error_count)),
            status_words[StatusWord.SHAPE.value].eq(
                Cat(Const(lanes, 16), Const(rows, 8), Const(ARCHES.index(self.arch), 8))),
            status_words[StatusWord.DEPTH.value].eq(cfg.depth),
            status_words[StatusWord.ACT_DEPTH.value].eq(cfg.act_depth),
            status_words[StatusWord.BIAS_DEPTH.value].eq(cfg.bias_depth),
            status_words[StatusWord.BUS_BITS.value].eq(
                cfg.bus_bits if self.arch == "baseline" else 0),
            status_words[StatusWord.REQUANTIZERS.value].eq(cfg.requantizers),
        ]

        # ---- The controller ----------------------------------------------------------------
        i_word = self.i_stream.payload
        remaining = Signal(32)              # payload words to take or skip
        index = Signal(16)                  # payload word / data word
        row = Signal(16)                    # row / bias word being written
        word = Signal(range(cfg.row_words)) # word within the row being written
        act_word = Signal(16)
        n_args = Signal(2)
        with m.Switch(i_word[:8]):
            for op in Opcode:
                with m.Case(op):
                    m.d.comb += n_args.eq(arg_words(op))

        with m.FSM(name="ctrl"):
            with m.State("HEADER"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    word_count = i_word[16:]                 # Header.count
                    m.d.sync += [header.eq(i_word), arg0.eq(0), arg1.eq(0),
                                 lo_end.eq(word_count), hi_end.eq(word_count),
                                 hi_span_end.eq(word_count * rows)]
                    with m.If(n_args == 0):
                        m.next = "DISPATCH"
                    with m.Else():
                        m.next = "ARG0"
            with m.State("ARG0"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    m.d.sync += [arg0.eq(i_word), lo_end.eq(i_word[:16] + count),
                                 hi_end.eq(i_word[16:] + count),
                                 hi_span_end.eq(i_word[16:] + count * rows)]
                    with m.If((opcode == Opcode.EMIT_INT8) | (opcode == Opcode.WRITEBACK)):
                        m.next = "ARG1"
                    with m.Else():
                        m.next = "DISPATCH"
            with m.State("ARG1"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    m.d.sync += arg1.eq(i_word)
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(can_go):
                    m.d.sync += [index.eq(0), remaining.eq(announced), row.eq(lo16), word.eq(0),
                                 act_word.eq(lo16 >> 2)]
                    with m.If(~ok):
                        m.d.comb += responses.w_en.eq(1)
                        m.d.sync += [last_error.eq(error),
                                     error_count.eq(error_count + (error_count != 0xFFFF))]
                        with m.If(announced != 0):
                            m.next = "SKIP"
                        with m.Else():
                            m.next = "HEADER"
                    with m.Elif(barrier):
                        m.d.comb += [ctrl_push.eq(1), ctrl_data.eq(status)]
                        with m.If(opcode == Opcode.READ_COUNTERS):
                            m.d.comb += [counters.snapshot.eq(1),
                                         counters.clear.eq((flags & Flag.CLEAR.value).any())]
                        m.next = "DATA"
                    with m.Else():
                        m.d.comb += responses.w_en.eq(1)
                        with m.Switch(opcode):
                            with m.Case(Opcode.WRITE_WEIGHTS, Opcode.LOAD_ACT, Opcode.LOAD_BIAS):
                                m.next = "LOAD"
                            with m.Default():
                                m.d.comb += engine.push.eq(1)
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
                    engine.wr_row.eq(row), engine.wr_word.eq(word), engine.wr_data.eq(i_word),
                    bias_mem.wr_addr.eq(row), bias_mem.wr_data.eq(i_word),
                    load_act_addr.eq(act_word),
                ]
                with m.If(self.i_stream.valid):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 1):
                        m.next = "HEADER"
                    with m.Switch(opcode):
                        with m.Case(Opcode.WRITE_WEIGHTS):
                            m.d.comb += engine.wr_en.eq(1)
                            m.d.sync += word.eq(word + 1)
                            with m.If(word == cfg.row_words - 1):
                                m.d.sync += [word.eq(0), row.eq(row + 1)]
                        with m.Case(Opcode.LOAD_BIAS):
                            m.d.comb += bias_mem.wr_en.eq(1)
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
                        m.d.comb += ctrl_data.eq(counters.snap[index[:3]])
                    with m.Else():
                        m.d.comb += ctrl_data.eq(status_words[index[:3]])
                    m.d.comb += ctrl_push.eq(1)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == data_words - 1):
                        m.next = "HEADER"
                        with m.If(opcode == Opcode.STATUS):
                            m.d.sync += last_error.eq(Error.OK)
        return m


def make_macro(config: MacroConfig, *, arch="pim"):
    """The macro for ``arch`` (see :data:`pim_macro.hw.isa.ARCHES`): one signature, one controller; only
    the weight store differs."""
    return Macro(config, arch=arch)
