"""Reading the user's numpy files (``.npy`` arrays, ``.npz`` archives) without surprises.

numpy's own ``np.load`` raises a dozen exception types for a damaged file (``SyntaxError`` from
its header parser, ``zipfile.BadZipFile``, ``zlib.error``, ``EOFError``...), tries to allocate
whatever a garbled header announces, and can be asked to unpickle. :func:`read_numpy` never
unpickles, checks a ``.npy`` header against the file's size before numpy allocates (an
archive's members against their sizes, and their total against :data:`ARCHIVE_BYTES_MAX`), and turns
every failure into one :class:`FileError` (a ``ValueError``) naming the file and what is wrong.
"""

import math
import os
import struct
import tokenize
import warnings
import zipfile
import zlib

import numpy as np


__all__ = ["FileError", "open_input", "shown", "listed", "read_numpy", "read_array", "read_archive",
           "ARCHIVE_BYTES_MAX"]


class FileError(ValueError):
    """A file that cannot be read, or holds something else than asked for; its message is one
    line naming the file."""


#: The first bytes of a ``.npy`` file, of a zip archive (``.npz``) and of an empty one: what
#: ``np.load`` goes by.
_NPY_MAGIC, _ZIP_MAGIC, _EMPTY_ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06"
#: What numpy, zipfile and zlib raise for content that is not what it claims to be (a cut or
#: garbled header, a pickled member, a damaged archive, a header announcing terabytes). OSError,
#: the file system's refusal, is reported apart.
#: zipfile raises RuntimeError for an encrypted member, NotImplementedError for an unknown
#: compression method, LargeZipFile, KeyError and ``struct.error`` for a damaged directory.
_FORMAT_ERRORS = (ValueError, EOFError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile,
                  zipfile.LargeZipFile, zlib.error, NotImplementedError, MemoryError,
                  RuntimeError, KeyError, IndexError, struct.error)
_PICKLED = ("it holds Python objects (a pickled array), which pim does not unpickle: that could "
            "run code")
#: The most data (bytes) the members of an archive may declare in all: 4 GiB, far more than a
#: model for the macro holds; checked, with each member's header against the member's size in
#: the zip directory, before anything is loaded (a zip bomb declares gigabytes in kilobytes).
ARCHIVE_BYTES_MAX = 4 << 30
#: The ``.npy`` format versions numpy reads (and :func:`_npy_data` checks).
_VERSIONS = ((1, 0), (2, 0), (3, 0))
#: The largest ``.npy`` header numpy parses (bytes); a longer one is a damaged file.
_HEADER_MAX = getattr(np.lib.format, "_MAX_HEADER_SIZE", 10000)


class _Problem(ValueError):
    """What is wrong with a file's content, said as it is (no "damaged numpy file" prefix)."""


def shown(token, width=40):
    """``token`` (a name or text of the user's) for a message: at most ``width`` characters,
    cut with an ellipsis."""
    token = str(token)
    return token if len(token) <= width else token[:width - 3] + "..."


def listed(items, most=5):
    """``items`` for a message: the first ``most``, each :func:`shown`, then how many more."""
    items = list(items)
    text = ", ".join(shown(item) for item in items[:most])
    return text + (f" and {len(items) - most} more" if len(items) > most else "")


def _first_line(exc):
    text = str(exc).strip()
    return shown(text.splitlines()[0], 200) if text else type(exc).__name__


def open_input(path, what):
    """``path`` opened for binary reading, or a :class:`FileError` (one line naming ``what``,
    the file's role, and ``path``) saying why it cannot be."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise FileError(f"cannot read {what} {path}: no such file") from None
    except IsADirectoryError:
        raise FileError(f"cannot read {what} {path}: it is a directory") from None
    except OSError as exc:
        raise FileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _npy_data(f, size):
    """The bytes of data the ``.npy`` stream ``f`` (at its start, ``size`` bytes long) declares
    in its header, checked against what follows it: a :class:`_Problem` for a header longer
    than numpy reads, an array of Python objects (numpy would need to unpickle it), or less
    data than announced (numpy would first try to allocate all of it: a cut file, or a
    garbled shape, would ask for terabytes); ``ValueError`` & co. for a garbled header.
    Leaves ``f`` anywhere. A format version other than 1.0, 2.0 and 3.0 (3.0 is 2.0 with a
    UTF-8 header) is a :class:`_Problem`: numpy reads no other."""
    version = np.lib.format.read_magic(f)
    if version not in _VERSIONS:
        raise _Problem(f"its header is of format version {version[0]}.{version[1]}, which numpy "
                       f"does not read (1.0, 2.0 and 3.0 only)")
    width = 2 if version == (1, 0) else 4
    raw = f.read(width)
    if len(raw) < width:
        raise _Problem("cut short inside its header")
    length = int.from_bytes(raw, "little")
    if length > _HEADER_MAX:
        raise _Problem(f"its header is {length} bytes, more than the {_HEADER_MAX} bytes numpy "
                       f"reads (a damaged file?)")
    f.seek(f.tell() - width)
    # 3.0 is 2.0 with a UTF-8 header: read as 2.0 (latin-1) it gives the same shape and
    # item size (only a structured dtype's non-ASCII field names would read otherwise).
    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
    shape, _, dtype = reader(f, max_header_size=_HEADER_MAX)
    if dtype.hasobject:
        raise _Problem(_PICKLED)
    need = math.prod(shape) * dtype.itemsize
    have = size - f.tell()
    if have < need:
        raise _Problem(f"cut short: its header announces {need} bytes of {dtype} data, "
                       f"{have} follow")
    return need


def _check_archive(f):
    """Check every member of the zip archive ``f`` before numpy loads any (see
    :func:`_npy_data`; a member's size is its uncompressed size in the zip directory) and the
    data they declare in all against :data:`ARCHIVE_BYTES_MAX`."""
    total = 0
    with zipfile.ZipFile(f) as archive:
        names = [info.filename for info in archive.infolist()]
        if len(set(names)) < len(names):
            # zipfile (and numpy) would read the last member of a name: which one was meant?
            seen, twice = set(), None
            for name in names:
                if name in seen:
                    twice = name
                    break
                seen.add(name)
            raise _Problem(f"it holds member {shown(twice)} twice (which copy is meant?)")
        for info in archive.infolist():
            if info.flag_bits & 0x1:        # zipfile would ask for a password
                raise _Problem(f"member {shown(info.filename)} is encrypted (pim reads no "
                               f"password-protected archive)")
            with archive.open(info) as member:
                magic = member.read(len(_NPY_MAGIC))
            if magic != _NPY_MAGIC:         # numpy reads it as bytes
                total += info.file_size
                continue
            with archive.open(info) as member:
                try:
                    total += _npy_data(member, info.file_size)
                except _Problem as exc:
                    raise _Problem(f"member {shown(info.filename)}: {exc}") from None
                except _FORMAT_ERRORS as exc:
                    raise _Problem(f"member {shown(info.filename)}: a damaged numpy file: "
                                   f"{_first_line(exc)}") from None
    if total > ARCHIVE_BYTES_MAX:
        raise _Problem(f"its members declare {total} bytes of data, more than the limit of "
                       f"{ARCHIVE_BYTES_MAX} (a zip bomb?)")
    f.seek(0)


def _read(path, what, kind):
    """The array of a ``.npy`` file, or the arrays of an ``.npz`` archive as a dict; ``kind``
    ``"array"`` refuses an archive before reading any of it."""
    with open_input(path, what) as f, warnings.catch_warnings():
        # numpy warns (UserWarning) when a header parses only the Python 2 way: the file is
        # read all the same, and the warning is no business of a pim user.
        warnings.simplefilter("ignore", UserWarning)
        try:
            magic = f.read(len(_NPY_MAGIC))
            f.seek(0)
            if magic == _NPY_MAGIC:
                _npy_data(f, os.fstat(f.fileno()).st_size)
                f.seek(0)
                return np.load(f, allow_pickle=False)
            if magic.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
                if kind == "array":
                    raise FileError(f"cannot read {what} {path}: it is an .npz archive, not a "
                                    f".npy file")
                _check_archive(f)
                with np.load(f, allow_pickle=False) as archive:
                    return {key: archive[key] for key in archive.files}
        except FileError:
            raise
        except _Problem as exc:
            raise FileError(f"cannot read {what} {path}: {exc}") from None
        except OSError as exc:
            raise FileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
        except _FORMAT_ERRORS as exc:
            raise FileError(f"cannot read {what} {path}: a damaged numpy file: "
                            f"{_first_line(exc)}") from None
    if not magic:
        raise FileError(f"cannot read {what} {path}: it is empty")
    if magic.startswith(b"\x80"):
        raise FileError(f"cannot read {what} {path}: it is a Python pickle, not a numpy file (pim "
                        f"does not unpickle: that could run code)")
    raise FileError(f"cannot read {what} {path}: it is not a numpy file (.npy or .npz)")


def read_numpy(path, what):
    """The array of a ``.npy`` file, or the arrays of an ``.npz`` archive as a dict of
    name -> array, never unpickling anything. ``what`` names the file's role in messages
    ("weights", "model"). Raises :class:`FileError` for a file that cannot be read or holds
    anything else, or an archive whose members declare more than :data:`ARCHIVE_BYTES_MAX`
    bytes in all."""
    return _read(path, what, None)


def read_array(path, what):
    """The array in the ``.npy`` file ``path``; a :class:`FileError` for anything else (an
    ``.npz`` archive is refused without reading its members)."""
    return _read(path, what, "array")


def read_archive(path, what, *, expected="an .npz archive"):
    """The arrays (name -> array) of the ``.npz`` archive ``path``; a :class:`FileError` for
    anything else (``expected`` says what it should have been)."""
    data = read_numpy(path, what)
    if not isinstance(data, dict):
        raise FileError(f"cannot read {what} {path}: it is a single array (.npy), not "
                        f"{expected}")
    return data
