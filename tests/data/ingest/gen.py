#!/usr/bin/env python3
"""gen.py OUTDIR: write the ingest test tars (one per rule) into OUTDIR.

Fixtures are generated at test time rather than checked in: each case is a few
lines here, and the bytes that matter (headers a normal tar writer would never
produce) are built by hand with ustar()/pax(). tests/unit/test_ingest.c holds
the expected outcome of each case.
"""
import gzip
import io
import os
import random
import subprocess
import sys
import tarfile
import tempfile

BLOCK = 512


def pad(data):
    return data + b"\0" * (-len(data) % BLOCK)


def ustar(name, size=0, typeflag=b"0", mode=0o644, linkname=b"", mtime=1700000000,
          magic=b"ustar\x0000", bad_checksum=False, realsize=None):
    """One 512-byte ustar header, names as raw bytes."""
    if isinstance(name, str):
        name = name.encode("utf-8", "surrogateescape")
    if isinstance(linkname, str):
        linkname = linkname.encode("utf-8", "surrogateescape")
    h = bytearray(BLOCK)

    def put(off, length, value):
        assert len(value) <= length, (value, length)
        h[off:off + len(value)] = value

    put(0, 100, name[:100])
    put(100, 8, b"%07o\0" % mode)
    put(108, 8, b"%07o\0" % 1000)
    put(116, 8, b"%07o\0" % 1000)
    put(124, 12, b"%011o\0" % size)
    put(136, 12, b"%011o\0" % mtime)
    put(148, 8, b" " * 8)
    put(156, 1, typeflag)
    put(157, 100, linkname[:100])
    put(257, 8, magic)
    put(265, 32, b"build")
    put(297, 32, b"build")
    chk = sum(h)
    if bad_checksum:
        chk += 1
    put(148, 8, b"%06o\0 " % chk)
    return bytes(h)


def pax_records(records):
    out = b""
    for key, value in records:
        if isinstance(value, str):
            value = value.encode("utf-8", "surrogateescape")
        body = b" " + key.encode() + b"=" + value + b"\n"
        n = len(body) + 1
        while len(str(n).encode()) + len(body) != n:
            n = len(str(n).encode()) + len(body)
        out += str(n).encode() + body
    return out


def pax(records, typeflag=b"x"):
    body = pax_records(records)
    return ustar("PaxHeader/x", size=len(body), typeflag=typeflag) + pad(body)


def entry(name, data=b"", typeflag=b"0", mode=0o644, linkname=b"", records=None, size=None):
    out = pax(records) if records else b""
    out += ustar(name, size=len(data) if size is None else size, typeflag=typeflag, mode=mode,
                 linkname=linkname)
    return out + pad(data)


END = b"\0" * (2 * BLOCK)


def raw(*entries, end=END):
    return b"".join(entries) + end


def t_file(name, data=b"", mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    ti.mtime = 1700000000
    return ti, data


def t_dir(name, mode=0o755):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = mode
    ti.mtime = 1700000000
    return ti, None


def t_link(name, target, kind=tarfile.SYMTYPE):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = target
    ti.mode = 0o777 if kind == tarfile.SYMTYPE else 0o644
    ti.mtime = 1700000000
    return ti, None


def t_special(name, kind, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.devmajor, ti.devminor = 1, 3
    return ti, None


def pytar(items, fmt=tarfile.PAX_FORMAT):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=fmt, encoding="utf-8",
                      errors="surrogateescape") as t:
        for ti, data in items:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return bio.getvalue()


def gnutar(outdir, name, sparse_args):
    """A GNU sparse file made by GNU tar itself."""
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "image"))
        p = os.path.join(d, "image", "sparse")
        with open(p, "wb") as f:
            f.truncate(8 << 20)
            f.seek(4 << 20)
            f.write(b"x")
        subprocess.run(["tar", "--sparse"] + sparse_args + ["-C", d, "-cf",
                        os.path.join(outdir, name + ".tar"), "image/sparse"], check=True)


def valid_items():
    rnd = random.Random(7)
    blob = bytes(rnd.getrandbits(8) for _ in range(100000))
    long_name = "image/" + "/".join(["deep%02d" % i for i in range(20)]) + "/file.txt"
    return [
        t_dir("image/"),
        t_dir("image/bin/"),
        t_file("image/bin/app", b"#!/bin/sh\necho hi\n", 0o755),
        t_link("image/bin/app2", "image/bin/app", tarfile.LNKTYPE),
        t_dir("image/etc", 0o750),
        t_file("image/etc/conf", b"k=v\n", 0o640),
        t_file("image/usr/lib/libx.so.1", b"\x7fELF...", 0o755),
        t_link("image/usr/lib/libx.so", "libx.so.1"),
        t_link("image/usr/lib/up", "../../bin/app"),
        t_file("image/empty", b""),
        t_file("image/\u00dcber.txt", "gr\u00fc\u00df\n".encode()),
        t_file(long_name, b"long\n"),
        t_dir("artifacts/"),
        t_file("artifacts/report.txt", b"all good\n"),
        t_file("artifacts/sub/data.bin", blob),
        t_link("artifacts/copy.txt", "artifacts/report.txt", tarfile.LNKTYPE),
    ]


def cases(outdir):
    c = {}
    ok = entry("image/ok", b"ok\n")

    c["valid"] = pytar(valid_items())
    c["valid_gnu"] = pytar([t_file("image/" + "n" * 150, b"gnu long name\n"),
                            t_link("image/" + "l" * 120, "n" * 150)], fmt=tarfile.GNU_FORMAT)
    c["empty"] = END
    c["trailing_garbage"] = raw(ok) + b"garbage after the end" * 100

    # names
    c["abs_path"] = raw(entry("/etc/passwd", b"x"))
    c["dotdot"] = raw(entry("image/../../etc/passwd", b"x"))
    c["dot"] = raw(entry("image/./x", b"x"))
    c["empty_component"] = raw(entry("image//x", b"x"))
    c["outside_roots"] = raw(entry("etc/passwd", b"x"))
    c["bare_name"] = raw(entry("passwd", b"x"))
    # a Dockerfile job's `oci/` root (issue 17): an OCI image layout only
    hexname = "oci/blobs/sha256/" + "ab" * 32
    c["oci_ok"] = raw(entry("oci/", typeflag=b"5", mode=0o755),
                      entry("oci/oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                      entry("oci/blobs/", typeflag=b"5", mode=0o755),
                      entry("oci/blobs/sha256/", typeflag=b"5", mode=0o755),
                      entry(hexname, b"blob"), entry("artifacts/a", b"a"))
    c["oci_bad_name"] = raw(entry("oci/blobs/sha256/evil", b"x"))
    c["oci_symlink"] = raw(entry("oci/index.json", typeflag=b"2", linkname="../../etc/passwd"))
    c["oci_hardlink"] = raw(entry(hexname, b"x"), entry("oci/index.json", typeflag=b"1",
                                                        linkname=hexname))
    c["oci_blob_dir"] = raw(entry(hexname + "/", typeflag=b"5", mode=0o755))
    c["root_as_file"] = raw(entry("image", b"x"))
    c["root_as_symlink"] = raw(entry("artifacts", typeflag=b"2", linkname="/"))
    c["ctrl_char"] = raw(entry("image/a\x1b[31mb", b"x"))
    c["newline"] = raw(entry("image/a\nb", b"x"))
    c["bad_utf8"] = raw(entry(b"image/\xff\xfe", b"x"))
    c["c1_control"] = raw(entry(b"image/a\xc2\x9bb", b"x"))
    c["nul_in_pax_path"] = raw(entry("image/ok", b"x", records=[("path", b"image/a\0/../../x")]))
    c["pax_path_override"] = raw(entry("image/ok", b"x", records=[("path", "image/../../x")]))
    c["gnu_longname_dotdot"] = pytar([t_file("image/" + "a" * 120 + "/../../../x", b"x")],
                                     fmt=tarfile.GNU_FORMAT)
    c["long_component"] = raw(entry("image/ok", b"x", records=[("path", "image/" + "c" * 256)]))
    c["too_deep"] = raw(entry("image/ok", b"x", records=[("path", "image/" + "d/" * 300 + "f")]))
    c["whiteout"] = raw(entry("image/usr/.wh.lib", b""))
    c["whiteout_opaque"] = raw(entry("image/etc/.wh..wh..opq", b""))
    c["trailing_slash_symlink"] = raw(entry("image/l/", typeflag=b"2", linkname="x"))

    # types and modes
    c["chardev"] = pytar([t_special("image/dev/null", tarfile.CHRTYPE)])
    c["blockdev"] = pytar([t_special("image/dev/sda", tarfile.BLKTYPE)])
    c["fifo"] = pytar([t_special("image/fifo", tarfile.FIFOTYPE)])
    c["setuid"] = pytar([t_file("image/su", b"x", 0o4755)])
    c["setgid"] = pytar([t_file("image/sg", b"x", 0o2755)])
    c["sticky"] = pytar([t_dir("image/tmp", 0o1777)])
    c["xattr"] = raw(entry("image/ping", b"x", mode=0o755,
                           records=[("SCHILY.xattr.user.note", "hello")]))
    c["xattr_binary"] = raw(entry("image/ping", b"x", mode=0o755,
                                  records=[("SCHILY.xattr.security.capability",
                                            b"\x01\x00\x00\x02")]))
    c["dir_with_data"] = raw(entry("image/d", b"0123456789", typeflag=b"5",
                                   records=[("size", "10")]))
    c["hardlink_with_data"] = raw(entry("image/a", b"a"),
                                  entry("image/h", b"hello", typeflag=b"1", linkname="image/a",
                                        records=[("size", "5")]))

    # duplicates and shapes
    c["dup_file"] = raw(entry("image/a", b"1"), entry("image/a", b"2"))
    c["dup_swap_symlink"] = raw(entry("image/a", b"1"),
                                entry("image/a", typeflag=b"2", linkname="b"))
    c["dup_dir"] = pytar([t_dir("image/d"), t_dir("image/d/")])
    c["file_over_implied_dir"] = raw(entry("image/d/x", b"1"), entry("image/d", b"2"))
    c["below_file"] = raw(entry("image/f", b"1"), entry("image/f/x", b"2"))
    c["below_symlink"] = pytar([t_dir("image/d"), t_link("image/l", "d"), t_file("image/l/x", b"x")])

    # symlinks
    c["symlink_abs"] = pytar([t_link("image/l", "/etc/passwd")])
    c["symlink_escape"] = pytar([t_link("image/a/l", "../../etc")])
    c["symlink_escape_artifact_root"] = pytar([t_link("image/l", "../artifacts/x")])
    c["symlink_chain"] = pytar([t_dir("image/d"), t_link("image/d/up", ".."),
                                t_link("image/esc", "d/up/../etc/passwd")])
    c["symlink_chain_late"] = pytar([t_link("image/esc", "d/up/../etc/passwd"), t_dir("image/d"),
                                     t_link("image/d/up", "..")])
    c["symlink_loop"] = pytar([t_link("image/a", "b/x"), t_link("image/b", "a/y")])
    c["symlink_artifact"] = pytar([t_file("artifacts/x", b"x"), t_link("artifacts/l", "x")])
    c["symlink_empty"] = raw(entry("image/l", typeflag=b"2", linkname=""))
    c["symlink_ctrl"] = pytar([t_link("image/l", "a\x1b]0;pwned\x07")])

    # hardlinks
    c["hardlink_abs"] = pytar([t_link("image/h", "/etc/passwd", tarfile.LNKTYPE)])
    c["hardlink_dotdot"] = pytar([t_link("image/h", "image/../../etc/passwd", tarfile.LNKTYPE)])
    c["hardlink_other_root"] = pytar([t_file("artifacts/a", b"a"),
                                      t_link("image/h", "artifacts/a", tarfile.LNKTYPE)])
    c["hardlink_forward"] = pytar([t_link("image/h", "image/later", tarfile.LNKTYPE),
                                   t_file("image/later", b"x")])
    c["hardlink_dir"] = pytar([t_dir("image/d"), t_link("image/h", "image/d", tarfile.LNKTYPE)])
    c["hardlink_symlink"] = pytar([t_link("image/s", "x"),
                                   t_link("image/h", "image/s", tarfile.LNKTYPE)])
    c["hardlink_bare"] = pytar([t_file("image/a", b"a"), t_link("image/h", "a", tarfile.LNKTYPE)])

    # headers
    c["pax_over_cap"] = raw(entry("image/ok", b"x", records=[("comment", "c" * 100000)]))
    c["pax_huge"] = raw(entry("image/ok", b"x", records=[("comment", "c" * 1200000)]))
    c["pax_chain"] = raw(b"".join(pax([("comment", "c")]) for _ in range(40)) + entry("image/ok", b"x"))
    c["bad_checksum"] = raw(ustar("image/ok", size=1, bad_checksum=True) + pad(b"x"))
    c["garbage"] = bytes(random.Random(3).getrandbits(8) for _ in range(8192))
    c["gzip"] = gzip.compress(c["valid"], mtime=0)

    # sparse: GNU tar's own, and a hand-made 2^60-byte pax 1.0 one
    gnutar(outdir, "sparse_gnu", ["--format=gnu"])
    gnutar(outdir, "sparse_pax", ["--format=pax"])
    sparse_map = pad(b"1\n%d\n1\n" % ((1 << 60) - 1))
    c["sparse_huge"] = raw(pax([("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"),
                                ("GNU.sparse.name", "image/huge"),
                                ("GNU.sparse.realsize", str(1 << 60))])
                           + ustar("image/GNUSparseFile.0/huge", size=len(sparse_map) + BLOCK)
                           + sparse_map + pad(b"x"))

    # truncation
    c["truncated_data"] = ustar("image/big", size=10000) + b"y" * 600
    c["missing_marker"] = raw(ok, entry("image/ok2", b"2"), end=b"")
    c["one_zero_block"] = raw(ok, end=b"\0" * BLOCK)
    c["unknown_type"] = raw(entry("image/x", b"x", typeflag=b"Z"))
    c["contiguous_type"] = raw(entry("image/x", b"x", typeflag=b"7"))
    c["global_header"] = raw(pax([("comment", "g")], typeflag=b"g"), ok)
    c["two_pax_headers"] = raw(pax([("comment", "a")]) + entry("image/ok", b"x", records=[("comment", "b")]))
    c["gnu_longname_nul"] = raw(ustar("././@LongLink", size=20, typeflag=b"L")
                                + pad(b"image/a\0/../../../x\0") + entry("image/ok", b"x"))
    c["size_lies_short"] = ustar("image/a", size=3) + pad(b"abcdefghijklmnop" * 40) + END

    # caps (the test lowers the limits)
    c["many"] = pytar([t_file("image/f%02d" % i, b"x") for i in range(20)])
    c["big"] = pytar([t_file("image/big", b"b" * (2 << 20))])
    c["total"] = pytar([t_file("image/t%d" % i, b"t" * (600 << 10)) for i in range(3)])
    c["long_name"] = pytar([t_file("image/" + "n" * 200, b"x")])
    c["implied_dirs"] = pytar([t_file("image/" + "/".join("d%d" % j for j in range(i + 1)) + "/f",
                                      b"x") for i in range(6)])
    return c


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    for name, data in cases(outdir).items():
        with open(os.path.join(outdir, name + ".tar"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
