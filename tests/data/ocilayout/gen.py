#!/usr/bin/env python3
"""gen.py OUTDIR: write the output tars of a compromised Dockerfile builder.

tests/integration/t_dockerfile_hostile.sh puts each OUTDIR/<case>.tar on the
output disk of a Dockerfile job, from an evil init that stands in for the
agent and buildah (root in the guest). Every case is an `oci/` OCI image
layout that lies in one way; `valid` is the control that must go through.
The layer tars are built header by header with tests/data/ingest/gen.py's
helpers, so entries no tar writer would produce are easy.
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ingest"))
from gen import BLOCK, END, entry, pad, pax, raw, ustar  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def good_layer():
    return raw(entry("app/", typeflag=b"5", mode=0o755),
               entry("app/hello.txt", b"hello from a Dockerfile\n"),
               entry("app/run", b"#!/app/run\n", mode=0o755))


def config(diff_ids, extra=None, history=None):
    doc = {"architecture": "amd64", "os": "linux",
           "config": {"Env": ["PATH=/usr/bin:/bin"], "WorkingDir": "/app",
                      "Labels": {"dev.buildvm.commit": "0" * 40}},
           "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    if extra:
        doc["config"].update(extra)
    if history is not None:
        doc["history"] = history
    return json.dumps(doc).encode()


class Layout:
    """An OCI image layout as the guest would stream it under `oci/`."""

    def __init__(self):
        self.blobs = {}  # name (hex) -> bytes
        self.index = None
        self.layout = b'{"imageLayoutVersion":"1.0.0"}'
        self.extra = []  # (tarinfo, data) added as they are

    def blob(self, data, name=None):
        d = sha(data)
        self.blobs[name or d[7:]] = data
        return d

    def image(self, layers, media=OCI_TAR, cfg=None, n_manifests=1, skip=(), foreign=None):
        descs = []
        for i, layer in enumerate(layers):
            d = sha(layer) if i in skip else self.blob(layer)
            descs.append({"mediaType": media, "digest": foreign if (foreign and i in skip) else d,
                          "size": len(layer)})
        if cfg is None:
            cfg = config([sha(gzip.decompress(x) if media == OCI_GZIP else x) for x in layers])
        c = self.blob(cfg)
        man = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                          "config": {"mediaType": OCI_CONFIG, "digest": c, "size": len(cfg)},
                          "layers": descs}).encode()
        m = self.blob(man)
        self.index = json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": m, "size": len(man),
             "annotations": {"org.opencontainers.image.ref.name": "latest"}}] * n_manifests}
        ).encode()
        return self

    def tar(self):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as t:
            def add(name, data=None, kind=tarfile.REGTYPE, link=""):
                ti = tarfile.TarInfo(name)
                ti.type = kind
                ti.mtime = 1700000000
                ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
                ti.linkname = link
                if data is not None:
                    ti.size = len(data)
                t.addfile(ti, io.BytesIO(data) if data is not None else None)
            add("oci/", kind=tarfile.DIRTYPE)
            add("oci/oci-layout", self.layout)
            add("oci/blobs/", kind=tarfile.DIRTYPE)
            add("oci/blobs/sha256/", kind=tarfile.DIRTYPE)
            for name, data in sorted(self.blobs.items()):
                add("oci/blobs/sha256/" + name, data)
            for name, data, kind, link in self.extra:
                add(name, data, kind, link)
            if self.index is not None:
                add("oci/index.json", self.index)
        return out.getvalue()


# the base image's one layer
BASE_LAYER = raw(entry("bin/", typeflag=b"5", mode=0o755), entry("bin/sh", b"#!tiny shell\n", mode=0o755))


def base_layout(outdir):
    """base/tiny:1 as an OCI layout (gzip layer) in OUTDIR/base, for skopeo."""
    layer = gzip.compress(BASE_LAYER, mtime=0)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [sha(BASE_LAYER)]},
                      "history": [{"created_by": "tiny base"}]}).encode()
    lay = Layout()
    ld, cd = lay.blob(layer), lay.blob(cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": len(cfg)},
                      "layers": [{"mediaType": OCI_GZIP, "digest": ld, "size": len(layer)}]}).encode()
    md = lay.blob(man)
    d = os.path.join(outdir, "base")
    os.makedirs(os.path.join(d, "blobs", "sha256"), exist_ok=True)
    for name, data in lay.blobs.items():
        with open(os.path.join(d, "blobs", "sha256", name), "wb") as f:
            f.write(data)
    with open(os.path.join(d, "oci-layout"), "wb") as f:
        f.write(lay.layout)
    with open(os.path.join(d, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": md, "size": len(man),
             "annotations": {"org.opencontainers.image.ref.name": "1"}}]}, f)
    return ld


def cases():
    c = {}
    ok = good_layer()
    c["valid"] = Layout().image([ok])
    c["valid_gzip"] = Layout().image([gzip.compress(ok, mtime=0)], media=OCI_GZIP)

    # a blob whose name is not its content's digest: it could stand in for another
    lay = Layout().image([ok])
    victim = sha(ok)[7:]
    lay.blobs[victim] = raw(entry("app/evil", b"swapped\n"))
    c["blob_mismatch"] = lay

    c["dotdot"] = Layout().image([raw(entry("app/ok", b"x"), entry("../x", b"escaped"))])
    c["abs_path"] = Layout().image([raw(entry("/etc/passwd", b"root::0:0::/:/bin/sh\n"))])
    c["device"] = Layout().image([raw(ustar("dev/mem", typeflag=b"3", mode=0o666))])
    sparse_map = pad(b"1\n%d\n1\n" % ((1 << 60) - 1))
    c["sparse_huge"] = Layout().image([
        pax([("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.name", "huge"),
             ("GNU.sparse.realsize", str(1 << 60))])
        + ustar("GNUSparseFile.0/huge", size=len(sparse_map) + BLOCK) + sparse_map + pad(b"x")
        + END])
    # the manifest names a layer the build did not write: a blob of another
    # image (another app's) is in the registry, and naming it must not take it
    c["foreign_blob"] = Layout().image([ok, raw(entry("app/other", b"o"))], skip=(1,),
                                       foreign="sha256:" + hashlib.sha256(b"another app's layer").hexdigest())
    big = b'{"architecture":"amd64","os":"linux","pad":"' + b"x" * (8 << 20) + b'"}'
    c["oversized_config"] = Layout().image([ok], cfg=big)
    c["diff_ids_count"] = Layout().image([ok], cfg=config([sha(ok), sha(ok)]))
    c["diff_id_mismatch"] = Layout().image([ok], cfg=config([sha(b"not the layer")]))
    c["two_manifests"] = Layout().image([ok], n_manifests=2)
    # on a base (base/tiny:1, pushed by the test from OUTDIR/base): its layer
    # leads, and is pushed as the base's blob, mounted; a layer that claims
    # the base's diffID but is another tar is refused by its content
    c["with_base"] = Layout().image([BASE_LAYER, ok])
    c["base_swapped"] = Layout().image([raw(entry("bin/sh", b"#!evil\n")), ok],
                                       cfg=config([sha(BASE_LAYER), sha(ok)]))
    c["no_index"] = Layout().image([ok])
    c["no_index"].index = None
    c["bad_platform"] = Layout().image([ok], cfg=json.dumps(
        {"architecture": "arm64", "os": "linux",
         "rootfs": {"type": "layers", "diff_ids": [sha(ok)]}}).encode())
    # the layout's own names: nothing else under oci/, and no image/ root
    lay = Layout().image([ok])
    lay.extra.append(("oci/blobs/sha256/evil", b"x", tarfile.REGTYPE, ""))
    c["bad_name"] = lay
    lay = Layout().image([ok])
    lay.extra.append(("image/", None, tarfile.DIRTYPE, ""))
    lay.extra.append(("image/hello", b"x", tarfile.REGTYPE, ""))
    c["image_root"] = lay
    lay = Layout().image([ok])
    lay.extra.append(("oci/blobs/sha256/" + "ab" * 32, None, tarfile.SYMTYPE, "../../../../etc"))
    c["symlink"] = lay
    return c


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    print("base-blob", base_layout(outdir))
    for name, lay in cases().items():
        with open(os.path.join(outdir, name + ".tar"), "wb") as f:
            f.write(lay.tar())
        print(name)


if __name__ == "__main__":
    main()
