"""The output engine: answers commands in order, streaming captured accumulators out."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .isa import MacroConfig, ACC_BITS, STREAM_BITS
from .requantizer import Requantizer


__all__ = ["OutputEngine", "Response", "ResponseKind", "OUT_FIFO_DEPTH"]


#: Words the output FIFO holds; the engine never issues more lanes than it has room for.
OUT_FIFO_DEPTH = 8


class ResponseKind:
    """What the output engine does with a queued response (after pushing its status word)."""
    STATUS_ONLY = 0
    EMIT_RAW = 1
    EMIT_INT8 = 2
    WRITEBACK = 3


#: A queued response: the status word, and for the emitting kinds the lane parameters.
Response = data.StructLayout({
    "status": STREAM_BITS, "kind": 2, "count": 9, "bias_on": 1, "bias": 16, "act": 16,
    "mult": 16, "shift": 5, "relu": 1,
})


class OutputEngine(wiring.Component):
    """Takes the response queue in order and fills the output FIFO.

    A ``STATUS_ONLY`` response pushes its status word in one cycle. An emitting response waits
    until its accumulators have been captured (``acc_out_full``), pushes its status word, then
    issues one lane per cycle while the FIFO has room for everything in flight: the lane's
    captured value plus ``bias[bias + lane]`` (one cycle, the bias read), then the
    :class:`Requantizer` (``Requantizer.LATENCY`` cycles); the lane's result is then pushed
    (``EMIT_RAW``: the int32 sum; ``EMIT_INT8``: four lanes per word) or written into the
    activation buffer (``WRITEBACK``). ``release`` strobes when the last lane has been read from
    ``acc_out``; the engine takes the next response once the last lane has left the pipeline
    (``writeback_done`` strobes then for a write-back). ``idle``: no response in progress.
    """

    #: Cycles from issuing a lane to its push or write.
    LANE_LATENCY = 1 + Requantizer.LATENCY

    def __init__(self, config: MacroConfig):
        self._config = config
        super().__init__({
            "rq_data":        In(Response),
            "rq_valid":       In(1),
            "rq_pop":         Out(1),
            "acc_out":        In(data.ArrayLayout(signed(ACC_BITS), config.lanes)),
            "acc_out_full":   In(1),
            "release":        Out(1),
            "bias_addr":      Out(range(config.bias_depth)),
            "bias_en":        Out(1),
            "bias_data":      In(signed(32)),
            "act_wr_addr":    Out(range(config.act_depth // 4)),
            "act_wr_en":      Out(4),
            "act_wr_data":    Out(32),
            "fifo_data":      Out(STREAM_BITS),
            "fifo_push":      Out(1),
            "fifo_w_rdy":     In(1),
            "fifo_level":     In(range(OUT_FIFO_DEPTH + 1)),
            "idle":           Out(1),
            "writeback_done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self._config.lanes
        m.submodules.requant = requant = Requantizer()

        job = Signal(Response)              # the response being streamed
        index = Signal(range(lanes + 1))    # next lane to issue
        issue = Signal()
        issue_last = Signal()
        m.d.comb += [self.bias_addr.eq(job.bias + index), self.bias_en.eq(issue)]

        acc_sel = Signal(signed(ACC_BITS))
        m.d.sync += acc_sel.eq(self.acc_out[index[:max(1, (lanes - 1).bit_length())]])
        value = Signal(signed(ACC_BITS))
        m.d.comb += value.eq(acc_sel + Mux(job.bias_on, self.bias_data, 0))
        m.d.comb += [requant.value.eq(value), requant.mult.eq(job.mult),
                     requant.shift.eq(job.shift), requant.relu.eq(job.relu)]

        # Each issued lane's number and "last" mark travel with it.
        depth = self.LANE_LATENCY
        stage_valid = Signal(depth)
        stage_last = Signal(depth)
        stage_lane = [Signal(range(lanes), name=f"out_lane_d{i}") for i in range(depth)]
        raw_value = [Signal(signed(ACC_BITS), name=f"raw_d{i}") for i in range(depth - 1)]
        m.d.sync += [stage_valid.eq(Cat(issue, stage_valid[:-1])),
                     stage_last.eq(Cat(issue_last, stage_last[:-1])),
                     stage_lane[0].eq(index), raw_value[0].eq(value)]
        for i in range(1, depth):
            m.d.sync += stage_lane[i].eq(stage_lane[i - 1])
        for i in range(1, depth - 1):
            m.d.sync += raw_value[i].eq(raw_value[i - 1])
        m.d.comb += requant.i_valid.eq(stage_valid[0])
        out_valid, out_lane, out_last = stage_valid[-1], stage_lane[-1], stage_last[-1]
        in_flight = Signal(range(depth + 1))
        m.d.comb += in_flight.eq(sum(stage_valid))
        room = self.fifo_level + in_flight < OUT_FIFO_DEPTH

        packed = Signal(32)
        packed_next = Signal(32)
        byte_lane = out_lane[:2] if lanes > 1 else C(0, 2)
        m.d.comb += packed_next.eq(packed)
        with m.Switch(byte_lane):
            for b in range(4):
                with m.Case(b):
                    m.d.comb += packed_next[8 * b:8 * b + 8].eq(requant.result)
        with m.If(out_valid):
            with m.Switch(job.kind):
                with m.Case(ResponseKind.EMIT_RAW):
                    m.d.comb += [self.fifo_data.eq(raw_value[-1]), self.fifo_push.eq(1)]
                with m.Case(ResponseKind.EMIT_INT8):
                    m.d.sync += packed.eq(packed_next)
                    with m.If((byte_lane == 3) | out_last):
                        m.d.comb += [self.fifo_data.eq(packed_next), self.fifo_push.eq(1)]
                        m.d.sync += packed.eq(0)
                with m.Case(ResponseKind.WRITEBACK):
                    address = job.act + out_lane
                    m.d.comb += [
                        self.act_wr_addr.eq(address >> 2),
                        self.act_wr_data.eq(requant.result.as_unsigned().replicate(4)),
                        self.act_wr_en.eq(1 << address[:2]),
                    ]

        head = self.rq_data
        with m.FSM(name="out"):
            with m.State("IDLE"):
                m.d.comb += self.idle.eq(1)
                ready = self.rq_valid & self.fifo_w_rdy
                with m.If(ready & (head.kind == ResponseKind.STATUS_ONLY)):
                    m.d.comb += [self.fifo_data.eq(head.status), self.fifo_push.eq(1),
                                 self.rq_pop.eq(1)]
                with m.Elif(ready & self.acc_out_full):
                    m.d.comb += [self.fifo_data.eq(head.status), self.fifo_push.eq(1),
                                 self.rq_pop.eq(1), self.idle.eq(0)]
                    m.d.sync += [job.eq(head), index.eq(0)]
                    m.next = "LANES"
            with m.State("LANES"):
                with m.If(index != job.count):
                    with m.If(room):
                        m.d.comb += [issue.eq(1), issue_last.eq(index == job.count - 1)]
                        m.d.sync += index.eq(index + 1)
                        with m.If(index == job.count - 1):
                            m.d.comb += self.release.eq(1)
                with m.Elif(~stage_valid.any()):
                    m.d.comb += self.writeback_done.eq(job.kind == ResponseKind.WRITEBACK)
                    m.next = "IDLE"
        return m
