"""The iCE40 UltraPlus single-port RAM (SPRAM) as a weight memory, and the memory choice of the
weight stores (:func:`weight_sram`).

Source of the primitive's rules: Lattice, *iCE40 SPRAM Usage Guide* (TN1314): the UP5K has four
SB_SPRAM256KA blocks of 16K x 16 bits (128 KB); one port (one ``ADDRESS``) reads or writes in a
cycle; ``DATAOUT`` is registered (a read's word appears the cycle after it); ``MASKWREN`` masks the
nibbles of a write; ``POWEROFF`` is active low, ``SLEEP`` and ``STANDBY`` active high. Yosys does
not infer SPRAM from an Amaranth memory, so the blocks are instantiated here; simulations use
Yosys' own model of the block (``share/ice40/cells_sim.v``).
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .fabric import fabric_for


__all__ = ["SPRAM", "SPRAM_BLOCKS", "BLOCK_DEPTH", "BLOCK_BITS", "spram_blocks", "weight_sram"]


#: SB_SPRAM256KA blocks on an iCE40 UP5K, and each block's words and word width.
SPRAM_BLOCKS = 4
BLOCK_DEPTH = 16384
BLOCK_BITS = 16


def spram_blocks(width, depth):
    """Blocks a ``width`` x ``depth`` memory takes: ``width / 16`` side by side, times
    ``ceil(depth / 16384)`` banks one above the other."""
    return width // BLOCK_BITS * -(-depth // BLOCK_DEPTH)


class _ReadPort(wiring.Signature):
    def __init__(self, width, depth):
        super().__init__({"addr": In(range(depth)), "en": In(1), "data": Out(width)})


class _WritePort(wiring.Signature):
    def __init__(self, width, depth):
        super().__init__({"addr": In(range(depth)), "en": In(width // 32), "data": In(width)})


class SPRAM(wiring.Component):
    """A ``width`` x ``depth`` memory (``width`` a multiple of 32) of SB_SPRAM256KA blocks, with
    the interface of an Amaranth :class:`~amaranth.lib.memory.Memory`'s synchronous read port
    and 32-bit-granular write port (``read``, ``write``: ``addr``, ``en``, ``data``).

    Single port: in a cycle with any ``write.en`` bit the blocks take ``write.addr`` and write;
    otherwise they take ``read.addr`` and read when ``read.en``. A read in the same cycle as a
    write is lost: the user must never ask for both (the weight stores' single-port rule,
    :attr:`pim_macro.hw.fabric.Fabric.single_port`). ``read.data`` is valid in the cycle after
    a read (1-cycle registered read, as the Memory's port); unlike it, it may change in the cycle
    after a write (Yosys' model makes it undefined). Only the written 32-bit group's blocks are
    selected, so a write never disturbs another group.

    The blocks have no initial contents (block RAM gets its zeros from the bitstream; the
    SB_SPRAM256KA primitive has no initial-value parameter, and Yosys' model reads X): a word
    must be written before it is read. The golden
    model's zero weights at power-up therefore hold on the SPRAM only for rows written since;
    the compiler's programs write every row before a MATVEC reads it.

    Raises ``ValueError`` at construction when ``width`` is not a multiple of 32 or the memory
    needs more than the UP5K's :data:`SPRAM_BLOCKS` blocks.
    """

    def __new__(cls, width, depth):
        # Checked before the object exists, so a rejected one leaves no unused object behind.
        if not isinstance(width, int) or width % 32 or width <= 0:
            raise ValueError(f"an SPRAM width must be a multiple of 32 bits, not {width!r}")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"an SPRAM depth must be a positive number of words, not {depth!r}")
        blocks = spram_blocks(width, depth)
        if blocks > SPRAM_BLOCKS:
            raise ValueError(f"a {width}-bit x {depth} memory needs {blocks} SB_SPRAM256KA "
                             f"blocks; the iCE40 UP5K has {SPRAM_BLOCKS}")
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, width, depth):
        self.width, self.depth = width, depth
        super().__init__({"read": In(_ReadPort(width, depth)),
                          "write": In(_WritePort(width, depth))})

    def elaborate(self, platform):
        m = Module()
        banks = -(-self.depth // BLOCK_DEPTH)
        columns = self.width // BLOCK_BITS
        writing = self.write.en.any()
        addr = Signal(range(self.depth))
        m.d.comb += addr.eq(Mux(writing, self.write.addr, self.read.addr))
        bank = addr >> 14                   # 0 with a single bank
        block_addr = Signal(14)             # ADDRESS is 14 bits whatever the depth
        m.d.comb += block_addr.eq(addr[:14])
        # The bank of the last read picks the blocks whose DATAOUT is on `read.data`.
        read_bank = Signal(range(max(banks, 2)))
        with m.If(self.read.en & ~writing):
            m.d.sync += read_bank.eq(bank)
        outs = []
        for b in range(banks):
            out = Signal(self.width, name=f"bank{b}_out")
            outs.append(out)
            here = bank == b if banks > 1 else C(1)
            for c in range(columns):
                wren = self.write.en[c // 2] & here
                m.submodules[f"spram_b{b}_c{c}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=block_addr, i_DATAIN=self.write.data[16 * c:16 * c + 16],
                    # Whole 16-bit halves of a 32-bit group are written: every nibble.
                    i_MASKWREN=C(0b1111, 4), i_WREN=wren,
                    i_CHIPSELECT=wren | (self.read.en & ~writing & here),
                    i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=out[16 * c:16 * c + 16])
        m.d.comb += self.read.data.eq(Array(outs)[read_bank] if banks > 1 else outs[0])
        return m


def weight_sram(m, name, platform, *, width, depth):
    """A weight store's SRAM of ``width`` x ``depth`` bits, added to module ``m`` as ``name``,
    in the memory the platform's fabric asks for (:attr:`pim_macro.hw.fabric.Fabric.weight_memory`):
    an Amaranth :class:`~amaranth.lib.memory.Memory` (32-bit write granularity) or an
    :class:`SPRAM`. Returns ``(write port, read port)``, each with ``addr``, ``en`` and ``data``
    and the same timing."""
    if fabric_for(platform).weight_memory == "spram":
        sram = m.submodules[name] = SPRAM(width, depth)
        return sram.write, sram.read
    mem = m.submodules[name] = Memory(shape=unsigned(width), depth=depth, init=[])
    return mem.write_port(granularity=32), mem.read_port()
