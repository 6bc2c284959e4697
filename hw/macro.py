"""The macro: command controller, weight store, activation buffer, MAC lanes and output path."""

from amaranth import *
from amaranth.lib import wiring, data, stream
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .isa import (STREAM_BITS, ISA_VERSION, ARCHES, REQUANT_SHIFT_MAX, Opcode, Flag, Error,
                  Counter, StatusWord, Header, Status, QuantArg, MacroConfig, arg_words,
                  allowed_flags, COUNTLESS, LOADS, LANE_COUNTED)
from .mac_array import MacArray
from .requantizer import Requantizer
from .counters import PerfCounters
from .weight_array import WeightArray


__all__ = ["Macro", "make_macro", "OUT_FIFO_DEPTH"]


#: Words the output FIFO holds; the output path never issues more lanes than it has room for.
OUT_FIFO_DEPTH = 8


class Macro(wiring.Component):
    """A compute-in-memory macro driven by one command stream (see :mod:`hw.isa`).

    Contract
    --------
    * ``i_stream`` carries commands and their payloads, one 32-bit word per transfer. The macro
      takes a word whenever it is waiting for one; the source may idle at any time.
    * ``o_stream`` carries one status word per command, then its data words. The sink may hold
      ``ready`` low at any time; the macro then stops once its output FIFO (``OUT_FIFO_DEPTH``
      words) is full, and waits without losing anything.
    * Commands execute in order, one at a time. The status of a command is queued as soon as its
      header and arguments pass (or fail) their checks; a command with a payload then takes one
      payload word per cycle; ``MATVEC`` issues one weight row per cycle and drains
      ``MacArray.LATENCY`` cycles; the emitting commands issue one lane per cycle while the FIFO
      has room. ``READ_COUNTERS`` first waits until every earlier output word has left.
    * A failed check (see :class:`hw.isa.Error`) executes nothing, writes no memory, reports the
      code, skips the announced payload and goes on with the next command. No input can make the
      controller wait for anything but stream handshakes, so it never hangs.
    * Synchronous reset returns the controller, accumulators, counters and FIFO to their initial
      state in any cycle; SRAM contents are kept.

    Parameters
    ----------
    config : MacroConfig
    weight_store : class
        Builds the weight memory from ``config``; :class:`WeightArray` for the PIM organisation.
    arch : str
        Name reported by ``STATUS`` (one of :data:`hw.isa.ARCHES`).
    """

    def __init__(self, config: MacroConfig, *, weight_store=WeightArray, arch="pim"):
        if not isinstance(config, MacroConfig):
            raise TypeError(f"config must be a MacroConfig, not {config!r}")
        if arch not in ARCHES:
            raise ValueError(f"arch must be one of {', '.join(ARCHES)}, not {arch!r}")
        self.config = config
        self.arch = arch
        self._weight_store = weight_store
        super().__init__({
            "i_stream": In(stream.Signature(STREAM_BITS)),
            "o_stream": Out(stream.Signature(STREAM_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        lanes, rows = cfg.lanes, cfg.rows_per_cycle

        m.submodules.weight_store = weights = self._weight_store(cfg)
        m.submodules.macs = macs = MacArray(cfg)
        m.submodules.requant = requant = Requantizer()
        m.submodules.counters = counters = PerfCounters()
        m.submodules.out_fifo = out_fifo = SyncFIFO(width=STREAM_BITS, depth=OUT_FIFO_DEPTH)

        # Activations: 32-bit words with byte enables, so a payload word lands in one cycle and
        # a write-back can store a single int8 result.
        m.submodules.act_mem = act_mem = Memory(shape=unsigned(32), depth=cfg.act_depth // 4,
                                                init=[])
        act_wr = act_mem.write_port(granularity=8)
        act_rd = act_mem.read_port()
        m.submodules.bias_mem = bias_mem = Memory(shape=signed(32), depth=cfg.bias_depth, init=[])
        bias_wr = bias_mem.write_port()
        bias_rd = bias_mem.read_port()

        # Output stream straight from the FIFO.
        m.d.comb += [
            self.o_stream.payload.eq(out_fifo.r_data),
            self.o_stream.valid.eq(out_fifo.r_rdy),
            out_fifo.r_en.eq(self.o_stream.ready),
        ]

        # Latched command.
        header = Signal(Header)
        arg0 = Signal(32)
        arg1 = Signal(QuantArg)
        opcode = header.opcode
        count = header.count
        flags = header.flags
        error = Signal(Error)
        last_error = Signal(Error)
        error_count = Signal(16)

        # ---- Command checks (combinational on the latched command) -------------------------
        lo16, hi16 = arg0[:16], arg0[16:]
        known = Signal()
        flags_ok = Signal()
        fields_ok = Signal()
        length_ok = Signal()
        aligned = Signal()
        in_range = Signal()
        m.d.comb += [known.eq(0), flags_ok.eq(0), fields_ok.eq(1), length_ok.eq(count != 0),
                     aligned.eq(1), in_range.eq(1)]
        bias_in_range = ~(flags & int(Flag.BIAS)).any() | (lo16 + count <= cfg.bias_depth)
        quant_ok = (arg1.reserved == 0) & (arg1.shift <= REQUANT_SHIFT_MAX)
        with m.Switch(opcode):
            for op in Opcode:
                with m.Case(op):
                    m.d.comb += [known.eq(1),
                                 flags_ok.eq((flags & (0xFF & ~int(allowed_flags(op)))) == 0)]
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
                        m.d.comb += in_range.eq(lo16 + count <= cfg.depth)
                    if op == Opcode.LOAD_ACT:
                        m.d.comb += [aligned.eq(lo16[:2] == 0),
                                     in_range.eq(lo16 + count <= cfg.act_depth)]
                    if op == Opcode.LOAD_BIAS:
                        m.d.comb += in_range.eq(lo16 + count <= cfg.bias_depth)
                    if op == Opcode.MATVEC:
                        m.d.comb += [aligned.eq(hi16 % rows == 0),
                                     in_range.eq((lo16 + count <= cfg.depth)
                                                 & (hi16 + count * rows <= cfg.act_depth))]
                    if op in (Opcode.EMIT_RAW, Opcode.EMIT_INT8):
                        m.d.comb += in_range.eq(bias_in_range)
                    if op == Opcode.WRITEBACK:
                        m.d.comb += in_range.eq(bias_in_range & (hi16 + count <= cfg.act_depth))
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

        # ---- Sequencing state --------------------------------------------------------------
        remaining = Signal(32)              # payload words to take or skip
        index = Signal(16)                  # row / lane / data word being issued
        word_in_sub = Signal(range(max(lanes // 4, 2)))
        sub = Signal(range(max(rows, 2)))
        row = Signal(16)
        act_word = Signal(16)

        status = Signal(Status)
        m.d.comb += [status.opcode.eq(opcode), status.error.eq(error)]
        data_words = Signal(16)             # data words that follow an OK status
        with m.Switch(opcode):
            with m.Case(Opcode.EMIT_RAW):
                m.d.comb += data_words.eq(count)
            with m.Case(Opcode.EMIT_INT8):
                m.d.comb += data_words.eq((count + 3) >> 2)
            with m.Case(Opcode.READ_COUNTERS):
                m.d.comb += data_words.eq(len(Counter))
            with m.Case(Opcode.STATUS):
                m.d.comb += data_words.eq(len(StatusWord))
        m.d.comb += status.count.eq(Mux(error == Error.OK, data_words, 0))

        # Payload words that a load announces, consumed even when the command fails.
        announced = Signal(32)
        with m.Switch(opcode):
            with m.Case(Opcode.WRITE_WEIGHTS):
                m.d.comb += announced.eq(count * cfg.row_words)
            with m.Case(Opcode.LOAD_ACT):
                m.d.comb += announced.eq((count + 3) >> 2)
            with m.Case(Opcode.LOAD_BIAS):
                m.d.comb += announced.eq(count)

        # ---- MATVEC issue ------------------------------------------------------------------
        # The weight store answers after weights.LATENCY cycles; the activation read (latency 1)
        # and the row's control bits are delayed to meet it.
        mv_issue = Signal()
        mv_first = Signal()
        act_byte = Signal(16)               # byte address of the activations of the issued row
        m.d.comb += [
            weights.rd_en.eq(mv_issue),
            weights.rd_row.eq(lo16 + index),
            act_rd.addr.eq(act_byte >> 2),
            act_rd.en.eq(mv_issue),
        ]
        delay = weights.LATENCY
        first_pipe = Signal(delay)
        offset_pipe = [Signal(2, name=f"act_offset_d{i}") for i in range(delay)]
        m.d.sync += first_pipe.eq(Cat(mv_first, first_pipe[:-1]))
        m.d.sync += offset_pipe[0].eq(act_byte[:2])
        for i in range(1, delay):
            m.d.sync += offset_pipe[i].eq(offset_pipe[i - 1])
        act_data = act_rd.data
        for _ in range(delay - 1):
            held = Signal(32)
            m.d.sync += held.eq(act_data)
            act_data = held
        act_bytes = Signal(32)
        m.d.comb += act_bytes.eq(act_data >> (offset_pipe[-1] * 8))
        m.d.comb += [
            macs.valid.eq(weights.rd_valid),
            macs.first.eq(first_pipe[-1]),
            macs.weights.eq(weights.rd_data),
        ]
        for r in range(rows):
            m.d.comb += macs.acts[r].eq(act_bytes[8 * r:8 * r + 8])

        # ---- Output path: bias, requantize, then emit or write back -------------------------
        out_issue = Signal()
        out_mode = Signal(8)
        acc_sel = Signal(signed(32))
        bias_on = Signal()
        issued_last = Signal()
        m.d.comb += [bias_rd.addr.eq(lo16 + index), bias_rd.en.eq(out_issue)]
        m.d.sync += [acc_sel.eq(macs.acc[index[:max(1, (lanes - 1).bit_length())]]),
                     bias_on.eq((flags & int(Flag.BIAS)).any())]
        value = Signal(signed(32))
        m.d.comb += value.eq(acc_sel + Mux(bias_on, bias_rd.data, 0))
        m.d.comb += [
            requant.value.eq(value),
            requant.mult.eq(arg1.mult),
            requant.shift.eq(arg1.shift),
            requant.relu.eq((flags & int(Flag.RELU)).any()),
        ]
        # The issued lane's number and "last" mark travel with it.
        stage_valid = Signal(1 + Requantizer.LATENCY)
        stage_lane = [Signal(16, name=f"out_lane_d{i}") for i in range(1 + Requantizer.LATENCY)]
        stage_last = Signal(1 + Requantizer.LATENCY)
        raw_value = [Signal(signed(32), name=f"raw_d{i}") for i in range(Requantizer.LATENCY)]
        m.d.sync += [
            stage_valid.eq(Cat(out_issue, stage_valid[:-1])),
            stage_last.eq(Cat(issued_last, stage_last[:-1])),
            stage_lane[0].eq(index),
            raw_value[0].eq(value),
        ]
        for i in range(1, len(stage_lane)):
            m.d.sync += stage_lane[i].eq(stage_lane[i - 1])
        for i in range(1, len(raw_value)):
            m.d.sync += raw_value[i].eq(raw_value[i - 1])
        m.d.comb += requant.i_valid.eq(stage_valid[0])
        out_valid, out_lane, out_last = stage_valid[-1], stage_lane[-1], stage_last[-1]
        in_flight = Signal(range(len(stage_valid) + 1))
        m.d.comb += in_flight.eq(sum(stage_valid))
        out_room = out_fifo.level + in_flight < OUT_FIFO_DEPTH
        packed = Signal(32)
        packed_next = Signal(32)
        byte_lane = out_lane[:2]
        m.d.comb += packed_next.eq(packed)
        with m.Switch(byte_lane):
            for b in range(4):
                with m.Case(b):
                    m.d.comb += packed_next[8 * b:8 * b + 8].eq(requant.result)

        # FIFO writes come from exactly one place per state, never two at once.
        fifo_data = Signal(32)
        fifo_push = Signal()
        m.d.comb += [out_fifo.w_data.eq(fifo_data), out_fifo.w_en.eq(fifo_push)]
        with m.If(out_valid):
            with m.Switch(out_mode):
                with m.Case(Opcode.EMIT_RAW):
                    m.d.comb += [fifo_data.eq(raw_value[-1]), fifo_push.eq(1)]
                with m.Case(Opcode.EMIT_INT8):
                    m.d.sync += packed.eq(packed_next)
                    with m.If((byte_lane == 3) | out_last):
                        m.d.comb += [fifo_data.eq(packed_next), fifo_push.eq(1)]
                        m.d.sync += packed.eq(0)
                with m.Case(Opcode.WRITEBACK):
                    wb_addr = hi16 + out_lane
                    m.d.comb += [
                        act_wr.addr.eq(wb_addr >> 2),
                        act_wr.data.eq(requant.result.as_unsigned().replicate(4)),
                        act_wr.en.eq(1 << wb_addr[:2]),
                    ]

        # ---- Counters ----------------------------------------------------------------------
        events = Signal(data.ArrayLayout(1, len(Counter)))
        m.d.comb += [
            events[Counter.MAC_ACTIVE.value].eq(macs.valid),
            events[Counter.ROW_READS.value].eq(weights.row_read),
            events[Counter.BEATS_IN.value].eq(self.i_stream.valid & self.i_stream.ready),
            events[Counter.BEATS_OUT.value].eq(self.o_stream.valid & self.o_stream.ready),
            events[Counter.STALL_IN.value].eq(~self.i_stream.valid & self.i_stream.ready),
            events[Counter.STALL_OUT.value].eq(self.o_stream.valid & ~self.o_stream.ready),
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
        ]

        # ---- The controller ----------------------------------------------------------------
        i_word = self.i_stream.payload
        i_take = self.i_stream.valid & self.i_stream.ready
        n_args = Signal(2)
        with m.Switch(i_word[:8]):
            for op in Opcode:
                with m.Case(op):
                    m.d.comb += n_args.eq(arg_words(op))

        with m.FSM(name="ctrl"):
            with m.State("HEADER"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    m.d.sync += [header.eq(i_word), arg0.eq(0), arg1.eq(0)]
                    with m.If(n_args == 0):
                        m.next = "CHECK"
                    with m.Else():
                        m.next = "ARG0"
            with m.State("ARG0"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    m.d.sync += arg0.eq(i_word)
                    with m.If((opcode == Opcode.EMIT_INT8) | (opcode == Opcode.WRITEBACK)):
                        m.next = "ARG1"
                    with m.Else():
                        m.next = "CHECK"
            with m.State("ARG1"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    m.d.sync += arg1.eq(i_word)
                    m.next = "CHECK"
            with m.State("CHECK"):
                # READ_COUNTERS waits for all earlier output to leave, so BEATS_OUT is exact.
                drained = out_fifo.level == 0
                wait = (opcode == Opcode.READ_COUNTERS) & ~drained
                with m.If(out_fifo.w_rdy & ~wait):
                    m.d.comb += [fifo_data.eq(status), fifo_push.eq(1)]
                    m.d.sync += [index.eq(0), remaining.eq(announced), row.eq(lo16),
                                 sub.eq(0), word_in_sub.eq(0), act_word.eq(lo16 >> 2),
                                 out_mode.eq(opcode)]
                    with m.If(error != Error.OK):
                        m.d.sync += [last_error.eq(error),
                                     error_count.eq(error_count + (error_count != 0xFFFF))]
                        with m.If(announced != 0):
                            m.next = "SKIP"
                        with m.Else():
                            m.next = "HEADER"
                    with m.Else():
                        with m.Switch(opcode):
                            with m.Case(Opcode.WRITE_WEIGHTS, Opcode.LOAD_ACT, Opcode.LOAD_BIAS):
                                m.next = "LOAD"
                            with m.Case(Opcode.MATVEC):
                                m.next = "MATVEC"
                            with m.Case(Opcode.EMIT_RAW, Opcode.EMIT_INT8, Opcode.WRITEBACK):
                                m.next = "OUTPUT"
                            with m.Case(Opcode.READ_COUNTERS):
                                m.d.comb += [counters.snapshot.eq(1),
                                             counters.clear.eq((flags & int(Flag.CLEAR)).any())]
                                m.next = "DATA"
                            with m.Case(Opcode.STATUS):
                                m.next = "DATA"
            with m.State("SKIP"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 1):
                        m.next = "HEADER"
            with m.State("LOAD"):
                m.d.comb += self.i_stream.ready.eq(1)
                m.d.comb += [
                    weights.wr_row.eq(row), weights.wr_sub.eq(sub),
                    weights.wr_word.eq(word_in_sub), weights.wr_data.eq(i_word),
                    bias_wr.addr.eq(row), bias_wr.data.eq(i_word),
                ]
                with m.If(self.i_stream.valid):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 1):
                        m.next = "HEADER"
                    with m.Switch(opcode):
                        with m.Case(Opcode.WRITE_WEIGHTS):
                            m.d.comb += weights.wr_en.eq(1)
                            m.d.sync += word_in_sub.eq(word_in_sub + 1)
                            with m.If(word_in_sub == lanes // 4 - 1):
                                m.d.sync += [word_in_sub.eq(0), sub.eq(sub + 1)]
                                with m.If(sub == rows - 1):
                                    m.d.sync += [sub.eq(0), row.eq(row + 1)]
                        with m.Case(Opcode.LOAD_BIAS):
                            m.d.comb += bias_wr.en.eq(1)
                            m.d.sync += row.eq(row + 1)
                        with m.Case(Opcode.LOAD_ACT):
                            # Bytes past `count` in the last word are not written.
                            left = count - (index << 2)
                            m.d.comb += [
                                act_wr.addr.eq(act_word), act_wr.data.eq(i_word),
                                act_wr.en.eq(Mux(left >= 4, 0b1111, (1 << left[:2]) - 1)),
                            ]
                            m.d.sync += [act_word.eq(act_word + 1), index.eq(index + 1)]
            with m.State("MATVEC"):
                m.d.comb += [act_byte.eq(hi16 + index * rows),
                             mv_first.eq((index == 0) & ~(flags & int(Flag.ACCUMULATE)).any())]
                with m.If(weights.rd_ready):
                    m.d.comb += mv_issue.eq(1)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == count - 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                # Wait until the last row has reached the accumulators.
                with m.If(~weights.rd_valid & ~macs.busy):
                    m.next = "HEADER"
            with m.State("OUTPUT"):
                with m.If(index != count):
                    with m.If(out_room):
                        m.d.comb += [out_issue.eq(1), issued_last.eq(index == count - 1)]
                        m.d.sync += index.eq(index + 1)
                with m.Elif(~stage_valid.any()):
                    m.next = "HEADER"
            with m.State("DATA"):
                with m.If(out_fifo.w_rdy):
                    with m.If(opcode == Opcode.READ_COUNTERS):
                        m.d.comb += fifo_data.eq(counters.snap[index[:3]])
                    with m.Else():
                        m.d.comb += fifo_data.eq(status_words[index[:3]])
                    m.d.comb += fifo_push.eq(1)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == data_words - 1):
                        m.next = "HEADER"
                        with m.If(opcode == Opcode.STATUS):
                            m.d.sync += last_error.eq(Error.OK)
        return m


def make_macro(config: MacroConfig, *, arch="pim"):
    """The macro for ``arch`` (see :data:`hw.isa.ARCHES`): one signature, one controller."""
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {', '.join(ARCHES)}, not {arch!r}")
    return Macro(config, weight_store=WeightArray, arch=arch)
