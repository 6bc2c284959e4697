"""The MAC engine: a small queue of MATVEC and capture operations, run in the background."""

from amaranth import *
from amaranth.lib import wiring, data, stream
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from .fabric import fabric_for
from .isa import MacroConfig, ACC_BITS, COUNT_BITS, FIELD_BITS
from .mac_array import MacArray
from .scoreboard import Span
from .weight_store import WeightWriteSignature


__all__ = ["MacEngine", "OP_SLOTS", "Tag", "Op", "CaptureSignature", "HazardSignature",
           "EngineEventsSignature"]


#: Operations the engine holds: the one being issued, and the ones queued behind it.
OP_SLOTS = 4
# The slot pointers (`wp + 1`, `ip + 2`) wrap by dropping their carry: a power of two.
assert OP_SLOTS & (OP_SLOTS - 1) == 0, OP_SLOTS

#: What travels with a weight row request through the weight store.
Tag = data.StructLayout({"act": FIELD_BITS, "first": 1, "capture": 1, "last": 1, "slot": 2})

#: A queued operation: the weight rows and activation bytes a MATVEC reads (``rows.hi =
#: rows.lo + count``, ``acts.hi = acts.lo + count * R``) come precomputed, so that the hazard
#: checks compare registers without adding. Only a command that passed its checks is queued, so
#: its ends lie within the memories (at most ``1 << FIELD_BITS``).
Op = data.StructLayout({"capture": 1, "rows": Span(FIELD_BITS), "acts": Span(FIELD_BITS),
                        "count": COUNT_BITS, "first": 1})
# A queued operation as a slot holds it: ``last`` = ``count - 1`` (the index of its last row),
# subtracted as it is queued, so that issuing a row compares the row index with a register
# (an equality, a few LUT levels) instead of through a subtractor's carry chain.
# Derived from Op's fields, so that the two cannot drift apart.
_Slot = data.StructLayout({("last" if name == "count" else name): field.shape
                           for name, field in Op})


class CaptureSignature(wiring.Signature):
    """Captured accumulators, seen from the side that captures them: ``acc`` holds a capture
    while ``full``; the reader takes lanes from the front, strobing ``shift`` (1 ..
    ``requantizers`` lanes, 0: none) to move ``acc`` down by that many lanes in the next cycle
    (``acc[l] <= acc[l + shift]``; lanes past the end become undefined), and strobes
    ``release`` when it no longer needs it."""

    def __init__(self, config: MacroConfig):
        super().__init__({
            "acc":     Out(data.ArrayLayout(signed(ACC_BITS), config.lanes)),
            "full":    Out(1),
            "shift":   In(range(config.requantizers + 1)),
            "release": In(1),
        })


class HazardSignature(wiring.Signature):
    """A question to the MAC engine, seen from the asker: does a queued or running MATVEC read
    a weight row in the span ``rows`` (``rows_busy``) or an activation byte in ``acts``
    (``acts_busy``)? Answered combinationally. On a fabric with a single-port weight store
    (:attr:`pim_macro.hw.fabric.Fabric.single_port`) ``rows_busy`` is any live MATVEC."""

    def __init__(self):
        super().__init__({
            "rows":      Out(Span(FIELD_BITS)),
            "acts":      Out(Span(FIELD_BITS)),
            "rows_busy": In(1),
            "acts_busy": In(1),
        })


class EngineEventsSignature(wiring.Signature):
    """Strobes for the performance counters: the MAC lanes multiplied a row (``mac_active``),
    a row was read (``row_read``), a word crossed the weight bus (``bus_beat``)."""

    def __init__(self):
        super().__init__({"mac_active": Out(1), "row_read": Out(1), "bus_beat": Out(1)})


class MacEngine(wiring.Component):
    """Runs MATVECs and accumulator captures in order while the controller decodes ahead.

    Operations
    ----------
    * MATVEC (``row``, ``act``, ``count``, ``first``): requests rows ``row .. row+count-1`` from
      the weight store, one whenever it is ready; the activations of row ``j`` (``R`` bytes at
      ``act + R*j``) are read from the activation buffer the cycle before the row lands. ``first``
      clears the accumulators with the first row (no ACCUMULATE flag).
    * CAPTURE: copies the accumulators, as they stand after every earlier MATVEC, into
      ``captured.acc`` for the output engine. Only one capture can be outstanding: it waits until
      the output engine has released the previous one (``captured.release``). When a MATVEC is
      queued right behind it, the capture rides on that MATVEC's first row (no bubble);
      otherwise (nothing or another capture behind it) it waits until the store is empty and
      enters the MAC pipeline on its own.

    Ports
    -----
    ``ops``: the operations (a stream of :data:`Op`); ``hazards`` (a :class:`HazardSignature`);
    ``captured``: the accumulators for the output engine (a :class:`CaptureSignature`);
    ``act_read``: the activation buffer's read port; ``write``: the weight store's write port
    (a :class:`pim_macro.hw.weight_store.WeightWriteSignature`), passed through; ``events``
    (an :class:`EngineEventsSignature`).

    Timing
    ------
    An operation transferred on ``ops`` (``ready`` while a slot is free) is queued in one cycle;
    it can start the next cycle. A slot is free again when its operation has retired: a MATVEC
    when its last row has landed, a capture when it has been issued. The hazard answers are
    combinational. ``idle``: nothing queued, in flight or in the MAC pipeline.
    """

    def __init__(self, config: MacroConfig, weight_store):
        self._config = config
        self._store_class = weight_store
        super().__init__({
            "ops":      In(stream.Signature(Op)),
            "hazards":  In(HazardSignature()),
            "idle":     Out(1),
            "captured": Out(CaptureSignature(config)),
            "act_read": In(ReadPort.Signature(addr_width=(config.act_depth // 4 - 1).bit_length(),
                                              shape=unsigned(32))),
            "write":    In(WeightWriteSignature(config)),
            "events":   Out(EngineEventsSignature()),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        rows = cfg.rows_per_cycle
        m.submodules.weight_store = store = self._store_class(cfg, tag_shape=Tag)
        m.submodules.macs = macs = MacArray(cfg)

        wiring.connect(m, wiring.flipped(self.write), store.write)
        m.d.comb += [
            self.events.row_read.eq(store.row_read), self.events.bus_beat.eq(store.bus_beat),
            self.captured.acc.eq(macs.acc_out), macs.shift.eq(self.captured.shift),
        ]

        # ---- The operation queue: OP_SLOTS slots in a ring --------------------------------
        ops = Array(Signal(_Slot, name=f"op{i}") for i in range(OP_SLOTS))
        live = Signal(OP_SLOTS)
        wp = Signal(range(OP_SLOTS))         # next slot to fill
        ip = Signal(range(OP_SLOTS))         # slot being issued
        pending = Signal(range(OP_SLOTS + 1))  # filled but not yet fully issued
        index = Signal(COUNT_BITS)           # next row of the MATVEC at ip
        m.d.comb += self.ops.ready.eq(~live.bit_select(wp, 1))
        retire_issue = Signal(OP_SLOTS)      # capture slots retired as they issue
        retire_land = Signal(OP_SLOTS)       # MATVEC slots retired as their last row lands
        push_now = self.ops.valid & self.ops.ready
        with m.If(push_now):
            new = self.ops.payload
            m.d.sync += [ops[wp].capture.eq(new.capture), ops[wp].rows.eq(new.rows),
                         ops[wp].acts.eq(new.acts), ops[wp].first.eq(new.first),
                         ops[wp].last.eq(new.count - 1)]
            m.d.sync += wp.eq(wp + 1)
        m.d.sync += live.eq((live | Mux(push_now, 1 << wp, 0)) & ~retire_issue & ~retire_land)
        issued = Signal(range(3))            # operations fully issued this cycle
        m.d.sync += pending.eq(pending + push_now - issued)

        # Hazard checks over live MATVECs. A single-port store (SPRAM) cannot write while a
        # MATVEC reads it, whichever rows: there any live MATVEC is a weight hazard.
        single_port = fabric_for(platform).single_port
        w_hits, a_hits = [], []
        for i in range(OP_SLOTS):
            op = ops[i]
            is_mv = live[i] & ~op.capture
            w_hits.append(is_mv & (C(1) if single_port
                                   else op.rows.overlaps(self.hazards.rows)))
            a_hits.append(is_mv & op.acts.overlaps(self.hazards.acts))
        m.d.comb += [self.hazards.rows_busy.eq(Cat(w_hits).any()),
                     self.hazards.acts_busy.eq(Cat(a_hits).any())]

        # ---- Issue -------------------------------------------------------------------------
        head, nxt = ops[ip], ops[(ip + 1) % OP_SLOTS]
        have_head, have_next = pending >= 1, pending >= 2
        capture_in_flight = Signal()
        capture_ok = ~self.captured.full & ~capture_in_flight
        tag = Signal(Tag)
        inject = Signal()                    # a capture enters the MAC pipeline without a row
        m.d.comb += store.rd_tag.eq(tag)
        with m.If(have_head & ~head.capture):
            m.d.comb += [
                store.rd_en.eq(1), store.rd_row.eq(head.rows.lo + index),
                tag.act.eq(head.acts.lo + index * rows), tag.first.eq(head.first & (index == 0)),
                tag.last.eq(index == head.last), tag.slot.eq(ip),
            ]
            with m.If(store.rd_ready):
                m.d.sync += index.eq(index + 1)
                with m.If(index == head.last):
                    m.d.comb += issued.eq(1)
                    m.d.sync += [index.eq(0), ip.eq(ip + 1)]
        with m.Elif(have_head & head.capture & capture_ok):
            with m.If(have_next & ~nxt.capture):
                # Ride on the next MATVEC's first row.
                m.d.comb += [
                    store.rd_en.eq(1), store.rd_row.eq(nxt.rows.lo),
                    tag.act.eq(nxt.acts.lo), tag.first.eq(nxt.first), tag.capture.eq(1),
                    tag.last.eq(nxt.last == 0), tag.slot.eq(ip + 1),
                ]
                with m.If(store.rd_ready):
                    m.d.comb += retire_issue.eq(1 << ip)
                    m.d.sync += capture_in_flight.eq(1)
                    with m.If(nxt.last == 0):
                        m.d.comb += issued.eq(2)
                        m.d.sync += [index.eq(0), ip.eq(ip + 2)]
                    with m.Else():
                        m.d.comb += issued.eq(1)
                        m.d.sync += [index.eq(1), ip.eq(ip + 1)]
            with m.Elif((~have_next | nxt.capture) & store.idle):
                m.d.comb += [inject.eq(1), retire_issue.eq(1 << ip), issued.eq(1)]
                m.d.sync += [capture_in_flight.eq(1), ip.eq(ip + 1)]

        # ---- Landing: activations are read the cycle before a row lands ---------------------
        soon_tag = Signal(Tag)
        landing = Signal(Tag)
        m.d.comb += [soon_tag.eq(store.soon_tag), landing.eq(store.rd_tag_out)]
        offset = Signal(2)
        m.d.comb += [self.act_read.addr.eq(soon_tag.act >> 2), self.act_read.en.eq(store.soon)]
        m.d.sync += offset.eq(soon_tag.act[:2])
        act_bytes = Signal(32)
        m.d.comb += act_bytes.eq(self.act_read.data >> (offset * 8))
        m.d.comb += [
            macs.valid.eq(store.rd_valid),
            macs.first.eq(store.rd_valid & landing.first),
            macs.capture.eq((store.rd_valid & landing.capture) | inject),
            macs.weights.eq(store.rd_data),
            self.events.mac_active.eq(store.rd_valid),
        ]
        for r in range(rows):
            m.d.comb += macs.acts[r].eq(act_bytes[8 * r:8 * r + 8])
        with m.If(store.rd_valid & landing.last):
            m.d.comb += retire_land.eq(1 << landing.slot)

        # ---- Capture handshake with the output engine ---------------------------------------
        with m.If(macs.captured):
            m.d.sync += [self.captured.full.eq(1), capture_in_flight.eq(0)]
        with m.If(self.captured.release):
            m.d.sync += self.captured.full.eq(0)

        m.d.comb += self.idle.eq((pending == 0) & ~live.any() & store.idle & ~macs.busy
                                 & ~capture_in_flight & ~inject)
        return m
