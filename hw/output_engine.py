"""The output engine: answers commands in order, streaming captured accumulators out."""

from amaranth import *
from amaranth.lib import wiring, data, enum, stream
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from .isa import MacroConfig, ACC_BITS, STREAM_BITS, FIELD_BITS, LANES_MAX, REQUANT_MULT_BITS
from .bias_memory import ChannelReadSignature
from .fabric import fabric_for
from .mac_engine import CaptureSignature
from .requantizer import Requantizer


__all__ = ["OutputEngine", "Response", "ResponseKind", "OUT_FIFO_DEPTH", "groups",
           "issue_cycles", "lane_latency", "RAW_LATENCY", "FIFOWriteSignature"]


#: Words the output FIFO holds; the engine never issues more lanes than it has room for.
OUT_FIFO_DEPTH = 8


class ResponseKind(enum.Enum, shape=2):
    """What the output engine does with a queued response (after pushing its status word). The
    emitting kinds are named after the opcodes they answer."""
    STATUS_ONLY = 0
    EMIT_RAW = 1
    EMIT_INT8 = 2
    WRITEBACK = 3


#: A queued response: the status word, and for the emitting kinds the lane parameters: the
#: first channel (``bias``), the write-back's first byte, and the requantization of the command
#: (``DOUBLE_ROUND`` and its :data:`~pim_macro.hw.isa.QuantArg`).
Response = data.StructLayout({
    "status": STREAM_BITS, "kind": ResponseKind, "count": range(LANES_MAX + 1), "bias_on": 1,
    "bias": FIELD_BITS, "act": FIELD_BITS, "double": 1,
    "zero_point": signed(8), "act_min": signed(8), "act_max": signed(8),
})


def lane_latency(passes=1):
    """Cycles from issuing a lane group to its push or write, with requantizers of ``passes``
    multiplier passes: the channel and accumulator reads, their registered sum, then the
    :class:`Requantizer`. (``EMIT_RAW`` lanes take :data:`RAW_LATENCY`.)"""
    return RAW_LATENCY + Requantizer.latency_of(passes)


#: Cycles from issuing an ``EMIT_RAW`` lane to its push: the reads, then the registered sum.
RAW_LATENCY = 2


class FIFOWriteSignature(wiring.Signature):
    """Pushes into the output FIFO, seen from the writer: ``en`` writes ``data``; ``rdy`` says
    there is room now, ``level`` how many words it holds and ``pop`` that one leaves in this
    cycle (the engine keeps room for every word in its pipeline)."""

    def __init__(self):
        super().__init__({
            "data":  Out(STREAM_BITS),
            "en":    Out(1),
            "rdy":   In(1),
            "level": In(range(OUT_FIFO_DEPTH + 1)),
            "pop":   In(1),
        })


class OutputEngine(wiring.Component):
    """Takes the response queue in order and fills the output FIFO.

    Ports: ``responses``, a stream of :data:`Response`; ``captured``, the MAC engine's captured
    accumulators (:class:`pim_macro.hw.mac_engine.CaptureSignature`); ``bias_read``, the channel
    memory's read port (:class:`pim_macro.hw.bias_memory.ChannelReadSignature`);
    ``act_write``, a write port into the activation buffer (32-bit words, byte enables);
    ``out``, the output FIFO (:class:`FIFOWriteSignature`).

    A ``STATUS_ONLY`` response pushes its status word in one cycle. An emitting response waits
    until its accumulators have been captured (``captured.full``), pushes its status word, then
    issues one *group* of lanes every ``passes`` cycles (the requantizers' multiplier passes,
    :class:`pim_macro.hw.fabric.Fabric` ``requant_passes``; ``EMIT_RAW`` every cycle) while the FIFO
    has room for everything in flight (counting a word that leaves in this cycle as gone):
    ``EMIT_RAW`` one lane (one int32 word); ``EMIT_INT8`` up to ``g = config.requantizers``
    lanes of one output word (four lanes per word: with ``g < 4`` a word is packed from
    ``4 / g`` groups and pushed with its last one); ``WRITEBACK`` up to ``g`` lanes whose results
    land in one ``g``-aligned part of a 32-bit activation word. A group's captured values plus
    ``bias[bias + lane]`` (two cycles: the reads, then the registered sum; the channels'
    multipliers and shifts are read with the biases, with or without ``BIAS``), then ``g``
    :class:`Requantizer` s in parallel, give its FIFO word or its activation write
    (:func:`lane_latency` cycles after the issue: ``LANE_LATENCY`` with one pass; an
    ``EMIT_RAW`` lane is pushed after the sum, :data:`RAW_LATENCY` cycles after its issue).
    A group reads the first ``size`` lanes of ``captured.acc`` in the cycle after its issue and
    shifts them out then (``captured.shift``). ``captured.release`` strobes when the last group has been read; the
    engine takes the next response once the last group has left the pipeline
    (``writeback_done`` strobes then for a write-back). ``idle``: no response in progress.
    :func:`groups` gives the number of groups of a response, :func:`issue_cycles` the cycles
    they take to issue.
    """

    #: Cycles from issuing a group to its push or write, with one-pass requantizers.
    LANE_LATENCY = lane_latency(1)

    def __init__(self, config: MacroConfig):
        self._config = config
        super().__init__({
            "responses":      In(stream.Signature(Response)),
            "captured":       In(CaptureSignature(config)),
            "bias_read":      In(ChannelReadSignature(config.bias_depth, config.requantizers)),
            "act_write":      In(WritePort.Signature(
                                  addr_width=(config.act_depth // 4 - 1).bit_length(),
                                  shape=unsigned(32), granularity=8)),
            "out":            Out(FIFOWriteSignature()),
            "idle":           Out(1),
            "writeback_done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes, g = self._config.lanes, self._config.requantizers
        fabric = fabric_for(platform)
        passes = fabric.requant_passes
        requants = [Requantizer(soft=fabric.soft_requant, passes=passes) for _ in range(g)]
        for j, requant in enumerate(requants):
            m.submodules[f"requant{j}" if j else "requant"] = requant

        job = Signal(Response)              # the response being streamed
        index = Signal(range(lanes + 1))    # first lane of the next group
        issue = Signal()
        size = Signal(range(g + 1))         # lanes in the group issued now

        def group_size(size, first):
            """``size``: the lanes of the group of ``job`` that starts at lane ``first``."""
            with m.Switch(job.kind):
                with m.Case(ResponseKind.EMIT_RAW):
                    m.d.comb += size.eq(1)
                with m.Case(ResponseKind.EMIT_INT8):
                    m.d.comb += size.eq(Mux(job.count - first < g, job.count - first, g))
                with m.Default():           # WRITEBACK: up to the next g-aligned boundary
                    room = g - (job.act + first)[:2] % g
                    m.d.comb += size.eq(Mux(job.count - first < room, job.count - first, room))
        group_size(size, index)
        m.d.comb += [self.bias_read.addr.eq(job.bias + index), self.bias_read.en.eq(issue)]

        # Stage 0: the group's channels (block RAM) are read. Stage 1: the sums of its lanes
        # and biases, registered, so that the channel memory's output does not reach into the
        # multiplier (with one-pass requantizers the multipliers and shifts registered too).
        # The captured lanes are taken from the front: a group is summed from the first `size`
        # lanes of `captured.acc` in the cycle after its issue, and shifted out then (no
        # lanes:1 multiplexer, no copy of the lanes; `captured.shift`).
        taken = Signal(range(g + 1))
        m.d.sync += taken.eq(Mux(issue, size, 0))
        m.d.comb += self.captured.shift.eq(taken)
        values = []
        for j in range(g):
            channel = self.bias_read.data[j]
            value = Signal(signed(ACC_BITS), name=f"value{j}")
            multiplier = Signal(REQUANT_MULT_BITS, name=f"multiplier{j}")
            shift = Signal.like(channel.shift, name=f"shift{j}")
            m.d.sync += value.eq(self.captured.acc[j] + Mux(job.bias_on, channel.bias, 0))
            # Multi-pass requantizers: groups are issued `passes` >= 2 cycles apart, so the
            # channel memory's output (read only with an issue) still holds the group's
            # multiplier and shift when the requantizer samples them: no copy (on an iCE40
            # 37 flip-flops, each a logic cell of its own).
            domain = m.d.sync if passes == 1 else m.d.comb
            domain += [multiplier.eq(channel.multiplier), shift.eq(channel.shift)]
            values.append(value)
            m.d.comb += [requants[j].value.eq(value), requants[j].multiplier.eq(multiplier),
                         requants[j].shift.eq(shift), requants[j].double.eq(job.double),
                         requants[j].zero_point.eq(job.zero_point),
                         requants[j].act_min.eq(job.act_min), requants[j].act_max.eq(job.act_max)]

        # Each issued group's valid mark travels with it; its first lane and size are counted
        # again where it leaves (groups leave in order: one counter, not a delay line each).
        depth = lane_latency(passes)
        # An EMIT_RAW lane leaves after stage 1 (RAW_LATENCY: its value is the registered sum),
        # so its groups never enter the requantizers' stages.
        raw = job.kind == ResponseKind.EMIT_RAW
        stage_valid = Signal(depth)
        m.d.sync += stage_valid.eq(Cat(issue, stage_valid[0], stage_valid[1] & ~raw,
                                       stage_valid[2:-1]))
        for requant in requants:
            m.d.comb += requant.i_valid.eq(stage_valid[1] & ~raw)
        out_valid = stage_valid[-1]
        out_lane = Signal(range(lanes + 1))     # first lane of the group leaving the pipeline
        out_size = Signal(range(g + 1))
        group_size(out_size, out_lane)
        with m.If(out_valid):
            m.d.sync += out_lane.eq(out_lane + out_size)
        in_flight = Signal(range(depth + 1))
        m.d.comb += in_flight.eq(sum(stage_valid))
        # Room for one more group: every word in the FIFO or in flight has a place, a word
        # popped in this cycle being gone (with `level + in_flight <= OUT_FIFO_DEPTH` kept, a
        # group reaching the end of the pipeline always finds the FIFO not full).
        room = self.out.level + in_flight - self.out.pop < OUT_FIFO_DEPTH
        # Multi-pass requantizers take a group every `passes` cycles.
        paced = C(1)
        if passes > 1:
            wait = Signal(range(passes))
            m.d.sync += wait.eq(Mux(issue, passes - 1, Mux(wait != 0, wait - 1, 0)))
            # EMIT_RAW bypasses the requantizers: one lane a cycle.
            paced = (wait == 0) | (job.kind == ResponseKind.EMIT_RAW)

        # The group's results as bytes, lanes past its size zeroed.
        results = Signal(8 * g)
        for j in range(g):
            m.d.comb += results[8 * j:8 * j + 8].eq(
                Mux(j < out_size, requants[j].result.as_unsigned(), 0))
        if g == 4:
            int8_word, int8_push = results, 1
        else:
            # Groups of fewer than four lanes are packed into the output word; a word is pushed
            # with its fourth lane or the response's last one. Groups never straddle a word:
            # they start at multiples of g.
            packed = Signal(24)
            offset = out_lane[:2]
            int8_word = Signal(32)
            m.d.comb += int8_word.eq(Mux(offset == 0, 0, packed) | (results << (offset * 8)))
            int8_push = ((out_lane + out_size)[:2] == 0) | (out_lane + out_size == job.count)
            with m.If(out_valid & (job.kind == ResponseKind.EMIT_INT8)):
                m.d.sync += packed.eq(int8_word[:24])
        with m.If(raw & stage_valid[1]):
            m.d.comb += [self.out.data.eq(values[0]), self.out.en.eq(1)]
        with m.If(out_valid):
            with m.Switch(job.kind):
                with m.Case(ResponseKind.EMIT_INT8):
                    m.d.comb += [self.out.data.eq(int8_word), self.out.en.eq(int8_push)]
                with m.Case(ResponseKind.WRITEBACK):
                    address = job.act + out_lane
                    offset = address[:2]
                    m.d.comb += [
                        self.act_write.addr.eq(address >> 2),
                        self.act_write.data.eq(results << (offset * 8)),
                        self.act_write.en.eq((((1 << out_size) - 1) << offset)[:4]),
                    ]

        head = self.responses.payload
        with m.FSM(name="out"):
            with m.State("IDLE"):
                m.d.comb += self.idle.eq(1)
                ready = self.responses.valid & self.out.rdy
                with m.If(ready & (head.kind == ResponseKind.STATUS_ONLY)):
                    m.d.comb += [self.out.data.eq(head.status), self.out.en.eq(1),
                                 self.responses.ready.eq(1)]
                with m.Elif(ready & self.captured.full):
                    m.d.comb += [self.out.data.eq(head.status), self.out.en.eq(1),
                                 self.responses.ready.eq(1), self.idle.eq(0)]
                    m.d.sync += [job.eq(head), index.eq(0), out_lane.eq(0)]
                    m.next = "LANES"
            with m.State("LANES"):
                with m.If(index != job.count):
                    with m.If(room & paced):
                        last = index + size == job.count
                        m.d.comb += issue.eq(1)
                        m.d.sync += index.eq(index + size)
                        with m.If(last):
                            m.d.comb += self.captured.release.eq(1)
                with m.Elif(~stage_valid.any()):
                    m.d.comb += self.writeback_done.eq(job.kind == ResponseKind.WRITEBACK)
                    m.next = "IDLE"
        return m


def groups(kind, count, act=0, requantizers=4):
    """Lane groups of an emitting response: ``EMIT_RAW`` one per lane, ``EMIT_INT8`` one per
    ``requantizers`` lanes, ``WRITEBACK`` one per ``requantizers``-aligned part of an
    activation word written."""
    g = requantizers
    if kind == ResponseKind.EMIT_RAW:
        return count
    if kind == ResponseKind.EMIT_INT8:
        return -(-count // g)
    return (act + count - 1) // g - act // g + 1


def issue_cycles(kind, count, act=0, requantizers=4, passes=1):
    """Cycles from the first group's issue to the cycle after the last's: one per group, or
    ``passes`` apart for the requantizing kinds with multi-pass requantizers (``EMIT_RAW``
    issues one lane per cycle whatever the requantizers)."""
    n = groups(kind, count, act, requantizers)
    return n if kind == ResponseKind.EMIT_RAW else (n - 1) * passes + 1
