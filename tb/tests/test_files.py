"""Tests of sw/files.py, the safe reading of the user's numpy files: archives are looked at
member by member before anything is loaded, headers are checked before numpy allocates, and each
failure says what is really wrong. (The CLI's handling of a hundred malformed files is in
test_cli.py; these are the kinds a tester found.) Cost: well under a second."""

import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from pim_macro.sw import files
from pim_macro.sw.files import FileError, read_archive, read_array


def _npy_header(header, version=(1, 0)):
    text = repr(header).encode()
    if version == (1, 0):
        text += b" " * (64 - (10 + len(text) + 1) % 64) + b"\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text
    text += b" " * (64 - (12 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack("<I", len(text)) + text


def _int8_header(shape, **extra):
    return _npy_header({"descr": "|i1", "fortran_order": False, "shape": shape, **extra})


@pytest.fixture
def bomb(tmp_path):
    """A 20 MB member (zeros) deflated to some 20 KB."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w0.npy", _int8_header((20_000_000,)) + bytes(20_000_000))
    return path


def test_read_array_does_not_load_an_archive(bomb):
    """An .npz given for an array is refused without inflating its members (a zip bomb used to
    cost the memory it declares before the refusal)."""
    tracemalloc.start()
    try:
        with pytest.raises(FileError, match=r"it is an \.npz archive, not a \.npy file"):
            read_array(bomb, "weights")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"{peak} bytes allocated to refuse an archive"


def test_archive_members_are_checked_before_loading(tmp_path, monkeypatch, bomb):
    """A member whose header declares more data than the member holds (its uncompressed size
    in the zip directory), and archives declaring more than the total limit (here lowered), are
    refused before numpy allocates anything."""
    lying = tmp_path / "lying.npz"
    with zipfile.ZipFile(lying, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w0.npy", _int8_header((10**12, 10)) + bytes(60))
    with pytest.raises(FileError, match=r"member w0\.npy: cut short: its header announces "
                                        r"10000000000000 bytes of int8 data, 60 follow"):
        read_archive(lying, "model")
    monkeypatch.setattr(files, "ARCHIVE_BYTES_MAX", 1_000_000)
    with pytest.raises(FileError, match=r"its members declare 20000000 bytes of data, more "
                                        r"than the limit of 1000000"):
        read_archive(bomb, "model")
    monkeypatch.setattr(files, "ARCHIVE_BYTES_MAX", 100_000_000)
    assert read_archive(bomb, "model")["w0"].shape == (20_000_000,)


def test_a_pickled_member_is_named_as_one(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, a=np.array([1, "x"], dtype=object))
    with pytest.raises(FileError, match=r"member a\.npy: it holds Python objects"):
        read_archive(path, "model")


def test_a_huge_header_is_not_called_a_pickle(tmp_path):
    """A header over numpy's safe size: numpy's message mentions allow_pickle, which used to
    make it "holds Python objects"; it is said as it is."""
    path = tmp_path / "bighdr.npy"
    path.write_bytes(_npy_header({"descr": "|i1", "fortran_order": False, "shape": (6, 10),
                                  "x": "a" * 20000}, (2, 0)) + bytes(60))
    with pytest.raises(FileError) as info:
        read_array(path, "weights")
    message = str(info.value)
    assert "Python objects" not in message and "pickle" not in message, message
    assert "its header is 20" in message and "more than the 10000 bytes" in message, message
    archive = tmp_path / "bighdr.npz"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(path, "w0.npy")
    with pytest.raises(FileError, match=r"member w0\.npy: its header is 20\d+ bytes"):
        read_archive(archive, "model")


def _stored_archive(tmp_path, members):
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w") as z, __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")       # zipfile warns of a duplicate
        for name, data in members:
            z.writestr(name, data)
    return path


def test_an_encrypted_member_is_one_line(tmp_path):
    """zipfile raises RuntimeError for an encrypted member (tester, round 2): any exception
    zipfile raises for content is a FileError."""
    path = _stored_archive(tmp_path, [("w.npy", _int8_header((4,)) + bytes(4))])
    raw = bytearray(path.read_bytes())
    raw[raw.find(b"PK\x03\x04") + 6] |= 1
    raw[raw.find(b"PK\x01\x02") + 8] |= 1
    path.write_bytes(raw)
    with pytest.raises(FileError, match="member w.npy is encrypted"):
        read_archive(path, "model")


@pytest.mark.parametrize("version", [(2, 0), (3, 0)])
def test_every_header_version_is_checked(tmp_path, version):
    """Format 3.0 headers were not checked (tester, round 2): three members declaring 3 GiB
    each passed the 4 GiB archive limit."""
    header = _npy_header({"descr": "|i1", "fortran_order": False, "shape": (3 << 30,)},
                         version)
    path = _stored_archive(tmp_path, [(f"m{k}.npy", header + bytes(64)) for k in range(3)])
    with pytest.raises(FileError, match="cut short"):
        read_archive(path, "model")


def test_an_unknown_header_version_is_an_error(tmp_path):
    path = tmp_path / "v9.npy"
    path.write_bytes(_npy_header({"descr": "|i1", "fortran_order": False, "shape": (4,)},
                                 (9, 0)) + bytes(4))
    with pytest.raises(FileError, match="version"):
        read_array(path, "weights")


def test_a_duplicate_member_is_refused(tmp_path):
    """zipfile keeps the last of two members of one name: which one numpy reads is a guess."""
    member = _int8_header((4,)) + bytes(4)
    path = _stored_archive(tmp_path, [("w.npy", member), ("w.npy", member)])
    with pytest.raises(FileError, match="w.npy.*twice|twice.*w.npy"):
        read_archive(path, "model")
