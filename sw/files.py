"""Reading the user's numpy files (``.npy`` arrays, ``.npz`` archives) without surprises.

numpy's own ``np.load`` raises a dozen exception types for a damaged file (``SyntaxError`` from
its header parser, ``zipfile.BadZipFile``, ``zlib.error``, ``EOFError``...), tries to allocate
whatever a garbled header announces, and can be asked to unpickle. :func:`read_numpy` never
unpickles, checks a ``.npy`` header against the file's size before numpy allocates, and turns
every failure into one :class:`FileError` (a ``ValueError``) naming the file and what is wrong.
"""

import math
import os
import tokenize
import warnings
import zipfile
import zlib

import numpy as np


__all__ = ["FileError", "read_numpy", "read_array", "read_archive"]


class FileError(ValueError):
    """A file that cannot be read, or holds something else than asked for; its message is one
    line naming the file."""


#: The first bytes of a ``.npy`` file, of a zip archive (``.npz``) and of an empty one: what
#: ``np.load`` goes by.
_NPY_MAGIC, _ZIP_MAGIC, _EMPTY_ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06"
#: What numpy, zipfile and zlib raise for content that is not what it claims to be (a cut or
#: garbled header, a pickled member, a damaged archive, a header announcing terabytes). OSError,
#: the file system's refusal, is reported apart.
_FORMAT_ERRORS = (ValueError, EOFError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile,
                  zlib.error, NotImplementedError, MemoryError)
_PICKLED = ("it holds Python objects (a pickled array), which pim does not unpickle: that could "
            "run code")


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _open(path, what):
    """``path`` opened for binary reading, or a :class:`FileError` saying why it cannot be."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise FileError(f"cannot read {what} {path}: no such file") from None
    except IsADirectoryError:
        raise FileError(f"cannot read {what} {path}: it is a directory") from None
    except OSError as exc:
        raise FileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _check_npy(f, path, what):
    """Raise ``ValueError`` when the ``.npy`` file ``f`` (at its start) holds less data than its
    header announces (numpy would first try to allocate all of it: a cut file, or a garbled
    shape, would ask for terabytes), a :class:`FileError` when it holds Python objects."""
    version = np.lib.format.read_magic(f)
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    if version in readers:
        shape, _, dtype = readers[version](f)
        need = math.prod(shape) * dtype.itemsize
        have = os.fstat(f.fileno()).st_size - f.tell()
        if dtype.hasobject:
            raise FileError(f"cannot read {what} {path}: {_PICKLED}")
        if have < need:
            raise ValueError(f"cut short: its header announces {need} bytes of {dtype} data, "
                             f"{have} follow")
    f.seek(0)


def read_numpy(path, what):
    """The array of a ``.npy`` file, or the arrays of an ``.npz`` archive as a dict of
    name -> array, never unpickling anything. ``what`` names the file's role in messages
    ("weights", "model"). Raises :class:`FileError` for a file that cannot be read or holds
    anything else."""
    with _open(path, what) as f, warnings.catch_warnings():
        # numpy warns (UserWarning) when a header parses only the Python 2 way: the file is
        # read all the same, and the warning is no business of a pim user.
        warnings.simplefilter("ignore", UserWarning)
        try:
            magic = f.read(len(_NPY_MAGIC))
            f.seek(0)
            if magic == _NPY_MAGIC:
                _check_npy(f, path, what)
                return np.load(f, allow_pickle=False)
            if magic.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
                with np.load(f, allow_pickle=False) as archive:
                    return {key: archive[key] for key in archive.files}
        except FileError:
            raise
        except OSError as exc:
            raise FileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
        except _FORMAT_ERRORS as exc:
            if "allow_pickle" in str(exc):          # an archive member holding objects
                raise FileError(f"cannot read {what} {path}: {_PICKLED}") from None
            raise FileError(f"cannot read {what} {path}: a damaged numpy file: "
                            f"{_first_line(exc)}") from None
    if not magic:
        raise FileError(f"cannot read {what} {path}: it is empty")
    if magic.startswith(b"\x80"):
        raise FileError(f"cannot read {what} {path}: it is a Python pickle, not a numpy file (pim "
                        f"does not unpickle: that could run code)")
    raise FileError(f"cannot read {what} {path}: it is not a numpy file (.npy or .npz)")


def read_array(path, what):
    """The array in the ``.npy`` file ``path``; a :class:`FileError` for anything else."""
    data = read_numpy(path, what)
    if isinstance(data, dict):
        raise FileError(f"cannot read {what} {path}: it is an .npz archive, not a .npy file")
    return data


def read_archive(path, what, *, expected="an .npz archive"):
    """The arrays (name -> array) of the ``.npz`` archive ``path``; a :class:`FileError` for
    anything else (``expected`` says what it should have been)."""
    data = read_numpy(path, what)
    if not isinstance(data, dict):
        raise FileError(f"cannot read {what} {path}: it is a single array (.npy), not "
                        f"{expected}")
    return data
