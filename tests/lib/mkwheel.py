#!/usr/bin/env python3
"""mkwheel.py OUTDIR NAME VERSION MODULE.py...: a pure-Python wheel (PEP 427)
of the given modules, made with the standard library only (no setuptools or
wheel on the machine needed), reproducible: every entry has the same time."""
import base64
import hashlib
import os
import sys
import zipfile


def digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def main():
    out, name, version, modules = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    dist = name.replace("-", "_")
    info = "%s-%s.dist-info" % (dist, version)
    files = [(os.path.basename(m), open(m, "rb").read()) for m in modules]
    files.append((info + "/METADATA", ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version)).encode()))
    files.append((info + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: buildvm-mkwheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
    record = "".join("%s,%s,%d\n" % (p, digest(d), len(d)) for p, d in files) + info + "/RECORD,,\n"
    files.append((info + "/RECORD", record.encode()))
    path = os.path.join(out, "%s-%s-py3-none-any.whl" % (dist, version))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for p, d in files:
            zi = zipfile.ZipInfo(p, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, d)
    print(path)


if __name__ == "__main__":
    main()
