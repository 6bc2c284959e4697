"""Dynamic energy and data movement of a run, from the macro's exact event counters.

The counters (:class:`pim_macro.hw.isa.Counter`) count every event that costs energy; this module
multiplies them by a per-event energy table (a TOML file in ``energy_tables/``, or one of the
user's, :func:`load_table`). The counts come from an RTL run's ``READ_COUNTERS``, from the cycle
model (:func:`pim_macro.sw.models.cycle_model.predict`), or from the steady-state model at full
scale: the same arithmetic serves all three, so their energies agree whenever their counts do.

Events and what each costs (``config`` a :class:`pim_macro.hw.isa.MacroConfig`, ``L`` the lanes,
``R`` rows per cycle, ``e_*`` the table's entries):

============== ======================================== =======================================
kind           count                                    energy per unit
============== ======================================== =======================================
``mac``        ``MAC_ACTIVE x L x R`` int8 MACs         ``e_mac`` (int8 multiply + 32-bit add)
``sram_read``  ``ROW_READS x 8 L R`` bits               ``e_sram(depth x R bytes) / 64``
``sram_write`` ``WEIGHT_WORDS x 32`` bits               the same per bit (writes cost a read)
``bus``        ``BUS_BEATS x bus_bits`` bits            ``e_wire x side`` (baseline only)
``stream``     ``(BEATS_IN + BEATS_OUT) x 32`` bits     ``e_wire x side``
``register``   accumulators ``MAC_ACTIVE x L x 32``,    ``e_register`` per bit
               the baseline's row register (the bus
               bits) and the stream words' bits
``dram``       ``WEIGHT_WORDS x 4`` bytes               ``e_dram`` per byte
============== ======================================== =======================================

* **SRAM size.** Each MAC lane reads its own column of the array, ``depth x R`` bytes; both
  architectures read the same SRAM the same way (they differ only in the bus), so the per-bit
  read energy is taken at that size: log-log interpolation between the table's points, clamped
  at its ends (arrays below the smallest point are charged the smallest point's energy).
* **Wire length** ``side``: the weight SRAM's ``depth x row_bytes x 8`` bit cells laid out as a
  square of the table's cell area, periphery ignored (a lower bound). The baseline's bus carries
  every weight bit across it to the ALU's row register; a stream word crosses it between the
  macro's edge and its FIFO. The PIM macro has no bus: its lanes sit at their columns.
* **Off-chip.** Every weight word written into the SRAM was fetched from off-chip DRAM (the
  first load, or the reload of weights that spill). Activations, biases and requantization
  parameters are taken to stay on chip; the activation buffer, bias and parameter memories are
  not modelled (both architectures use them identically).

What this is not: the dynamic energy of the modelled events at the table's node. It is not the
power of an FPGA build, it has no leakage or clock-tree power (so a slower run costs no more), and
its wire lengths are a square's side, not a layout's.

Sources of the default tables: ``energy_tables/45nm.toml`` (Horowitz, ISSCC 2014, Fig. 1.1.9;
Keckler et al., IEEE Micro 2011, Table 1; Han et al., NeurIPS 2015, Fig. 1; Mistry et al., IEDM
2007) and ``energy_tables/7nm.toml`` (Jouppi et al., ISCA 2021, Table 2; Wu et al., IEDM 2016);
each entry carries its own citation.
"""

import math
import operator
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pim_macro.hw.isa import STREAM_BITS, WORD_BYTES, ACC_BITS, Counter, MacroConfig


__all__ = ["TABLES", "DEFAULT_TABLE", "KINDS", "LEVELS", "EnergyTable", "Events", "Energy",
           "load_table", "events_from_counters", "energy", "largest_kinds"]


TABLES_DIR = Path(__file__).resolve().parent / "energy_tables"
#: The tables shipped with the package, by name: ``--energy-table 45nm`` or a path.
TABLES = {path.stem: path for path in sorted(TABLES_DIR.glob("*.toml"))}
DEFAULT_TABLE = "45nm"
#: The event kinds of a breakdown, in report order.
KINDS = ("mac", "sram_read", "sram_write", "bus", "stream", "register", "dram")
#: The levels data moves across, in report order (bytes): inside the array (SRAM reads and
#: writes), over the memory-to-ALU bus, over the input and output streams, from off-chip.
LEVELS = ("array", "bus", "stream", "offchip")
# The entries a table must have: section -> its value key(s).
_ENTRIES = {"mac_int8": "pj", "sram_access": ("capacity_bytes", "pj_per_64_bits"),
            "wire": "pj_per_bit_mm", "register_write": "pj_per_bit",
            "dram_read": "pj_per_byte", "sram_cell": "um2"}


class EnergyTableError(ValueError):
    """A table file that cannot be read or lacks an entry; the message is one line."""


@dataclass(frozen=True)
class EnergyTable:
    """Per-event energies of one technology node (pJ), with each entry's citation.

    ``sram_points`` are ``(capacity_bytes, pJ per 64-bit access)`` in increasing capacity.
    """
    name: str
    node: str
    mac_pj: float
    sram_points: tuple
    wire_pj_per_bit_mm: float
    register_pj_per_bit: float
    dram_pj_per_byte: float
    cell_um2: float
    sources: dict = field(default_factory=dict, compare=False)

    def sram_pj_per_bit(self, array_bytes):
        """pJ per bit of an access to an SRAM of ``array_bytes``: log-log interpolation between
        the table's points, clamped to the first and last."""
        points = self.sram_points
        if array_bytes <= points[0][0]:
            return points[0][1] / 64
        for (c0, e0), (c1, e1) in zip(points, points[1:]):
            if array_bytes <= c1:
                t = math.log(array_bytes / c0) / math.log(c1 / c0)
                return math.exp(math.log(e0) + t * math.log(e1 / e0)) / 64
        return points[-1][1] / 64

    def side_mm(self, bits):
        """Side of a square of ``bits`` SRAM bit cells, in mm."""
        return math.sqrt(bits * self.cell_um2) / 1000


#: The largest value a table entry may hold: no event costs a millijoule (1e9 pJ), no cell is
#: a square metre; bigger numbers are a typo, and would overflow a run's total to infinity.
_VALUE_MAX = 1e9
#: The largest capacity an ``sram_access`` point may name (bytes): a petabyte.
_CAPACITY_MAX = 1e15
#: The largest table file read (bytes): the shipped ones are about 3 KB.
TABLE_BYTES_MAX = 1 << 20


def _positive(value, where, largest=_VALUE_MAX):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= largest:
        raise EnergyTableError(f"{where} must be a positive number at most {largest:g}, not "
                               f"{value!r}")
    return float(value)


def _text(doc, key, default, where):
    """A table's ``name`` or ``node``: one line of printable text (it is shown in reports)."""
    value = doc.get(key, default)
    if not isinstance(value, str) or not value.isprintable() or not value.strip():
        raise EnergyTableError(f"{where}: {key} must be one line of text, not {value!r}")
    return value


def load_table(source=DEFAULT_TABLE):
    """The :class:`EnergyTable` of ``source``: a name in :data:`TABLES` or the path of a TOML
    file in their format (see ``energy_tables/45nm.toml``). Raises :class:`EnergyTableError`
    (a ``ValueError`` with a one-line message) for a missing or malformed file."""
    if isinstance(source, EnergyTable):
        return source
    if str(source) == "":           # Path("") is the current directory
        raise EnergyTableError(f"the energy table is empty: give a name ({', '.join(TABLES)}) "
                               f"or a TOML file")
    shipped = str(source) in TABLES
    path = TABLES.get(str(source)) or Path(source)
    try:
        # Only a regular file of a table's size: a device (/dev/zero) or a FIFO would never end.
        mode = os.stat(path)
        if not stat.S_ISREG(mode.st_mode):
            what = "a directory" if stat.S_ISDIR(mode.st_mode) else "not a regular file"
            raise EnergyTableError(f"energy table {str(source)!r} is {what}")
        if mode.st_size > TABLE_BYTES_MAX:
            raise EnergyTableError(f"energy table {str(source)!r} is {mode.st_size} bytes; a "
                                   f"table is a small TOML file (at most {TABLE_BYTES_MAX})")
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise EnergyTableError(f"energy table {str(source)!r}: no such file (tables shipped: "
                               f"{', '.join(TABLES)})") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EnergyTableError(f"energy table {str(path)!r}: {first}") from None
    where = f"energy table {path.name}"
    sources = {}
    for section, keys in _ENTRIES.items():
        entry = doc.get(section)
        if not isinstance(entry, dict):
            raise EnergyTableError(f"{where}: missing section [{section}]")
        for key in (keys if isinstance(keys, tuple) else (keys,)):
            if key not in entry:
                raise EnergyTableError(f"{where}: [{section}] has no {key}")
        source_text = entry.get("source")
        if not isinstance(source_text, str) or not source_text.strip():
            raise EnergyTableError(f"{where}: [{section}] must cite its source (source = \"...\")")
        sources[section] = source_text
    sram = doc["sram_access"]
    caps, energies = sram["capacity_bytes"], sram["pj_per_64_bits"]
    if not isinstance(caps, list) or not isinstance(energies, list) or not caps \
            or len(caps) != len(energies):
        raise EnergyTableError(f"{where}: [sram_access] capacity_bytes and pj_per_64_bits must "
                               f"be lists of the same non-zero length")
    points = tuple((_positive(c, f"{where}: [sram_access] capacity_bytes", _CAPACITY_MAX),
                    _positive(e, f"{where}: [sram_access] pj_per_64_bits"))
                   for c, e in zip(caps, energies))
    if any(b[0] <= a[0] for a, b in zip(points, points[1:])):
        raise EnergyTableError(f"{where}: [sram_access] capacity_bytes must increase")
    name = _text(doc, "name", path.stem, where)
    node = _text(doc, "node", "unstated node", where)
    if not shipped and (name in TABLES or not name):
        # A copy of a shipped table that kept its name must not pass for it in reports.
        name = f"{name} ({path})"
    return EnergyTable(
        name=name, node=node,
        mac_pj=_positive(doc["mac_int8"]["pj"], f"{where}: [mac_int8] pj"),
        sram_points=points,
        wire_pj_per_bit_mm=_positive(doc["wire"]["pj_per_bit_mm"],
                                     f"{where}: [wire] pj_per_bit_mm"),
        register_pj_per_bit=_positive(doc["register_write"]["pj_per_bit"],
                                      f"{where}: [register_write] pj_per_bit"),
        dram_pj_per_byte=_positive(doc["dram_read"]["pj_per_byte"],
                                   f"{where}: [dram_read] pj_per_byte"),
        cell_um2=_positive(doc["sram_cell"]["um2"], f"{where}: [sram_cell] um2"),
        sources=sources)


@dataclass(frozen=True)
class Events:
    """Counts of the energy model's events in a run (see the module's table)."""
    macs: int = 0
    sram_read_bits: int = 0
    sram_write_bits: int = 0
    bus_bits: int = 0
    stream_bits: int = 0
    register_bits: int = 0
    dram_bytes: int = 0


def _counts(counters):
    """``counters`` as ``{Counter: int}``: keys a :class:`Counter`, its name or its lower-case
    name; values non-negative integers (numpy's included). ``TypeError`` for what is not a
    mapping (the words of a ``READ_COUNTERS`` answer are, parsed: ``Responses.counters()``),
    ``ValueError`` for a key that names no counter or a bad value."""
    if not isinstance(counters, Mapping):
        raise TypeError(f"counters must be a mapping of counter names to counts, not "
                        f"{type(counters).__name__} (parse a READ_COUNTERS answer with "
                        f"Responses.counters())")
    names = {**{c: c for c in Counter}, **{c.name: c for c in Counter},
             **{c.name.lower(): c for c in Counter}}
    counts = {}
    for key, value in counters.items():
        counter = names.get(key) if isinstance(key, (str, Counter)) else None
        if counter is None:
            raise ValueError(f"{key!r} names no counter (the counters: "
                             f"{', '.join(c.name.lower() for c in Counter)})")
        try:
            if isinstance(value, bool):
                raise TypeError
            value = operator.index(value)
        except TypeError:
            value = None
        if value is None or value < 0:
            raise ValueError(f"counter {counter.name} must be a non-negative integer, not "
                             f"{counters[key]!r}")
        counts[counter] = value
    return counts


def _check_arch(arch):
    if arch not in ("pim", "baseline"):
        raise ValueError(f"arch must be 'pim' or 'baseline', not {arch!r}")


def events_from_counters(counters, config: MacroConfig, arch):
    """The :class:`Events` of a run whose counters are ``counters`` (a mapping keyed by
    :class:`Counter`, its name or its lower-case name, as ``Responses.counters()`` and
    ``Prediction.counters`` give them; a counter missing counts 0) on ``arch`` of ``config``.
    Raises ``TypeError`` when ``counters`` is not a mapping, ``ValueError`` for a key that
    names no counter, a negative or non-integer count, or an unknown ``arch``."""
    _check_arch(arch)
    counts = _counts(counters)
    count = lambda counter: counts.get(counter, 0)      # noqa: E731
    lanes, r = config.lanes, config.rows_per_cycle
    mac_cycles = count(Counter.MAC_ACTIVE)
    bus_bits = count(Counter.BUS_BEATS) * config.bus_bits if arch == "baseline" else 0
    weight_words = count(Counter.WEIGHT_WORDS)
    stream_bits = (count(Counter.BEATS_IN) + count(Counter.BEATS_OUT)) * STREAM_BITS
    return Events(
        macs=mac_cycles * lanes * r,
        sram_read_bits=count(Counter.ROW_READS) * 8 * config.row_bytes,
        sram_write_bits=weight_words * STREAM_BITS,
        bus_bits=bus_bits,
        stream_bits=stream_bits,
        register_bits=mac_cycles * lanes * ACC_BITS + bus_bits + stream_bits,
        dram_bytes=weight_words * WORD_BYTES)


@dataclass(frozen=True)
class Energy:
    """Energy of a run (pJ, by kind in :data:`KINDS`) and the bytes it moved (by level in
    :data:`LEVELS`), with the table, the per-unit energies used (``unit_pj``: ``mac`` per MAC,
    ``sram_bit``, ``wire_bit`` (over ``side_mm``) and ``register_bit`` per bit, ``dram_byte``
    per byte) and the wire length ``side_mm``."""
    table: str
    node: str
    pj: dict
    bytes: dict
    unit_pj: dict
    side_mm: float
    events: Events

    @property
    def total_pj(self):
        return sum(self.pj.values())

    def per(self, n):
        """This energy divided over ``n`` inferences (samples); ``n`` a positive integer."""
        try:
            if isinstance(n, bool):
                raise TypeError
            n = operator.index(n)
        except TypeError:
            n = 0
        if n < 1:
            raise ValueError(f"n must be a positive integer, not {n!r}")
        return Energy(self.table, self.node, {k: v / n for k, v in self.pj.items()},
                      {k: v / n for k, v in self.bytes.items()}, dict(self.unit_pj),
                      self.side_mm, Events(**{k: v / n for k, v in vars(self.events).items()}))

    def as_dict(self):
        """A JSON-ready dict: ``table``, ``node``, ``total_pj``, ``pj`` (by kind), ``bytes``
        (by level), ``unit_pj``, ``side_mm`` and ``events``."""
        return {"table": self.table, "node": self.node, "total_pj": self.total_pj,
                "pj": dict(self.pj), "bytes": dict(self.bytes), "unit_pj": dict(self.unit_pj),
                "side_mm": self.side_mm, "events": vars(self.events).copy()}


def energy(counters, config: MacroConfig, arch, table=DEFAULT_TABLE):
    """The :class:`Energy` of a run of ``arch`` on ``config`` whose counters are ``counters``
    (see :func:`events_from_counters`), priced with ``table`` (an :class:`EnergyTable`, a name in
    :data:`TABLES` or a path; :func:`load_table`). Raises ``ValueError`` (or
    :class:`EnergyTableError`) for bad counts or a bad table."""
    table = load_table(table)
    _check_arch(arch)
    events = counters if isinstance(counters, Events) else \
        events_from_counters(counters, config, arch)
    side = table.side_mm(config.depth * config.row_bytes * 8)
    unit = {
        "mac": table.mac_pj,
        "sram_bit": table.sram_pj_per_bit(config.depth * config.rows_per_cycle),
        "wire_bit": table.wire_pj_per_bit_mm * side,
        "register_bit": table.register_pj_per_bit,
        "dram_byte": table.dram_pj_per_byte,
    }
    pj = {
        "mac": events.macs * unit["mac"],
        "sram_read": events.sram_read_bits * unit["sram_bit"],
        "sram_write": events.sram_write_bits * unit["sram_bit"],
        "bus": events.bus_bits * unit["wire_bit"],
        "stream": events.stream_bits * unit["wire_bit"],
        "register": events.register_bits * unit["register_bit"],
        "dram": events.dram_bytes * unit["dram_byte"],
    }
    moved = {
        "array": (events.sram_read_bits + events.sram_write_bits) / 8,
        "bus": events.bus_bits / 8,
        "stream": events.stream_bits / 8,
        "offchip": events.dram_bytes,
    }
    if not all(math.isfinite(v) for v in pj.values()):
        raise ValueError(f"the energy of these counts overflows with table {table.name!r}: "
                         f"check its values")
    return Energy(table=table.name, node=table.node, pj=pj, bytes=moved, unit_pj=unit,
                  side_mm=side, events=events)


def largest_kinds(pj, count=2):
    """The ``count`` largest event kinds of a breakdown ``{kind: pJ}`` (``Energy.pj`` or its
    JSON form) with their shares of the total, in :data:`KINDS` order on ties, kinds of 0 pJ
    left out: e.g. ``"dram 97%, sram_read 1%"``; ``"-"`` for a zero total."""
    total = sum(pj.values())
    top = sorted((kind for kind in KINDS if pj.get(kind, 0.0) > 0),
                 key=lambda kind: -pj[kind])[:count]
    if not total or not top:
        return "-"
    return ", ".join(f"{kind} {100 * pj[kind] / total:.0f}%" for kind in top)
