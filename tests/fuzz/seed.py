#!/usr/bin/env python3
"""seed.py: write the seed corpora of the fuzz targets into tests/fuzz/corpus/<name>/.

    python3 tests/fuzz/seed.py          (from the top of the repository)

Every file it writes is named `seed-*`: running it again replaces the seeds and
never touches `crash-*` reproducers (those are added by `make fuzz` or by hand,
each with its fix, and stay forever). The output is checked in, so CI needs no
python; run this after changing it and commit both.

The seeds are the project's real documents (examples/, policies/, the JSON
examples of docs/schemas.md and policies/README.md) and the hostile shapes the
parsers exist to refuse: path traversal, symlink-then-file, hardlinks out of
the tree, 2^60-byte sparse entries, `.git` spellings, deeply nested JSON,
duplicate keys. The tar builders are shared with the ingest unit test
(tests/data/ingest/gen.py); cases over MAX_SEED bytes are left out to keep the
corpus small (libFuzzer grows inputs itself).
"""
import base64
import glob
import gzip
import hashlib
import hmac
import importlib.util
import io
import json
import os
import re
import sys
import tarfile
import tempfile

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(TOP, "tests", "fuzz", "corpus")
MAX_SEED = 12 * 1024
COMMIT = "3f786850e387550fdab836ed7e6dc881de23001b"

spec = importlib.util.spec_from_file_location("gen", os.path.join(TOP, "tests/data/ingest/gen.py"))
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)

written = {}


def put(target, name, data):
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    fname = "seed-" + re.sub(r"[^A-Za-z0-9._-]", "_", name)
    assert fname not in written.setdefault(target, set()), (target, fname)
    written[target].add(fname)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def read(path):
    with open(os.path.join(TOP, path), "rb") as f:
        return f.read()


def nested(depth, leaf='"x"'):
    return '{"a":' * depth + leaf + "}" * depth


def doc_blocks(path):
    return re.findall(r"```json\n(.*?)```", read(path).decode(), re.S)


# --- real documents -------------------------------------------------------------------


def real_documents():
    for p in sorted(glob.glob(os.path.join(TOP, "examples/apps/*/buildvm.json"))):
        put("spec", "example-" + os.path.basename(os.path.dirname(p)) + ".json", read(p))
    put("config", "example-runner.json", read("examples/runner.json"))
    for p in sorted(glob.glob(os.path.join(TOP, "policies/*.json"))):
        put("policy", "builtin-" + os.path.basename(p), read(p))
    for i, b in enumerate(doc_blocks("docs/schemas.md") + doc_blocks("policies/README.md")):
        if '"Statement"' in b:
            put("policy", "doc-%d.json" % i, b)
        elif '"commit"' in b:
            put("job", "doc-%d.json" % i, b)
        elif '"profile"' in b:
            put("spec", "doc-%d.json" % i, b)
        put("jsonx", "doc-%d.json" % i, b)


# --- deploy requests ------------------------------------------------------------------

JOB = {"id": "d-42", "app": "hello", "repo": "https://git.example/hello.git", "commit": COMMIT,
       "ref": "refs/heads/main"}


def job_seeds():
    def j(name, **kw):
        d = dict(JOB)
        for k, v in kw.items():
            if v is None:
                d.pop(k, None)
            else:
                d[k] = v
        put("job", name + ".json", json.dumps(d))

    j("minimal")
    j("full", trigger="webhook", delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958",
      requested_at="2024-02-29T23:59:60.123456789+01:00", requested_by="alice \u00fcber")
    j("repo-local", repo="/srv/git/hello")
    j("repo-file", repo="file:///srv/git/hello")
    # path traversal and transports
    j("app-traversal", app="../other")
    j("app-slash", app="a/b")
    j("app-trailing-dash", app="hello-")
    j("repo-dotdot", repo="/srv/git/../../etc")
    j("repo-file-escape", repo="file:///srv/%2e%2e/etc")
    j("repo-credentials", repo="https://user:pass@git.example/x.git")
    j("repo-user", repo="https://git@git.example/x.git")
    j("repo-ext", repo="ext::sh -c touch% /tmp/pwned")
    j("repo-scp", repo="git@github.com:org/x.git")
    j("repo-dash", repo="--upload-pack=touch /tmp/pwned")
    j("repo-upper-scheme", repo="HTTPS://git.example/x.git")
    j("commit-expression", commit="HEAD~1")
    j("commit-upper", commit=COMMIT.upper())
    j("commit-short", commit=COMMIT[:12])
    j("ref-dotdot", ref="refs/heads/../../x")
    j("ref-lock", ref="refs/heads/x.lock")
    j("ref-at", ref="refs/heads/@{u}")
    j("ref-control", ref="refs/heads/a\x1b[31m")
    j("id-dot", id=".hidden")
    j("date-feb30", requested_at="2023-02-30T00:00:00Z")
    j("by-control", requested_by="x\ny")
    j("missing-commit", commit=None)
    j("trigger-unknown", trigger="cron")
    put("job", "dup-keys.json",
        '{"id":"d-1","app":"hello","app":"other","repo":"/r","commit":"%s","ref":"refs/heads/m"}'
        % COMMIT)
    put("job", "nested-deep.json", nested(40))
    put("job", "nested-jansson-limit.json", "[" * 2100 + "]" * 2100)
    put("job", "nul-escape.json", json.dumps(JOB)[:-1] + ',"requested_by":"a\\u0000b"}')
    put("job", "bad-utf8.json", b'{"id":"d-\xff"}')
    put("job", "not-object.json", "[1,2,3]")
    put("job", "number-field.json", json.dumps(dict(JOB, id=42)))


# --- build specs ----------------------------------------------------------------------


def spec_seeds():
    base = {"profile": "minimal", "steps": ["make"]}

    def s(name, **kw):
        d = json.loads(json.dumps(base))
        d.update(kw)
        put("spec", name + ".json", json.dumps(d))

    img = {"from": "dist", "to": "/app"}
    s("image-traversal-from", image=dict(img, **{"from": "../../etc"}))
    s("image-traversal-to", image=dict(img, to="/app/../../etc"))
    s("image-from-absolute", image=dict(img, **{"from": "/etc"}))
    s("image-to-relative", image=dict(img, to="app"))
    s("image-base-digest", image=dict(img, base="base/x@sha256:" + "ab" * 32))
    s("image-base-host", image=dict(img, base="evil.example/x:1"))
    s("image-ports", image=dict(img, ports=["8080", "53/udp", "0", "65536/tcp", "1/icmp"]))
    s("image-user", image=dict(img, user="root:root:root"))
    s("image-labels-dup", image=dict(img, labels={"a": "1"}))
    s("artifacts-traversal", artifacts=["../secret", "a/../../b", "/etc/passwd", "ok/*.txt"])
    s("env-reserved", env={"HOME": "/root", "BUILDVM_TOKEN": "x", "LD_PRELOAD": "/x.so"})
    s("env-bad-name", env={"A=B": "c", "1X": "y"})
    s("secrets-traversal", secrets=["../x", {"name": ".hidden"}, {"name": "ok", "env": "PATH"}])
    s("steps-many", steps=["true"] * 65)
    s("steps-empty", steps=[])
    s("step-object", steps=[{"name": "t", "run": "make", "timeout": 604801}])
    s("resources-huge", resources={"vcpus": 2 ** 63, "memory_mib": -1, "disk_mib": 1.5})
    s("version-2", version=2)
    put("spec", "dup-keys.json", '{"profile":"minimal","steps":["make"],"profile":"debian"}')
    put("spec", "dup-keys-nested.json",
        '{"profile":"minimal","steps":["make"],"image":{"from":"a","from":"../../b"}}')
    put("spec", "nested-deep.json", '{"profile":"minimal","steps":["make"],"env":%s}'
        % nested(40))


# --- runner configs -------------------------------------------------------------------


def config_seeds():
    cfg = json.loads(read("examples/runner.json"))

    def c(name, path, value):
        d = json.loads(json.dumps(cfg))
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        put("config", name + ".json", json.dumps(d))

    put("config", "empty-object.json", "{}")
    c("home-relative", ["home"], "var/lib/buildvm")
    c("artifacts-traversal", ["artifacts"], "dir:/var/lib/../../etc")
    c("registry-path", ["registry", "url"], "http://127.0.0.1:5000/v2/evil")
    c("registry-creds-url", ["registry", "url"], "http://u:p@127.0.0.1:5000")
    c("repository-no-app", ["registry", "repository"], "apps/shared")
    c("repository-traversal", ["registry", "repository"], "apps/../{app}")
    c("tag-template", ["registry", "tag"], "{short_commit}-{ref_name}-{id}")
    c("tag-unknown-var", ["registry", "tag"], "{secret}")
    c("extra-tags-many", ["registry", "extra_tags"], ["t%d" % i for i in range(20)])
    c("queue-redis", ["queue"], "redis://127.0.0.1:6379/jobs?group=runners")
    c("queue-redis-creds", ["queue"], "redis://user:pass@127.0.0.1/x")
    c("queue-relative", ["queue"], "spool:spool")
    c("limits-zero", ["limits", "max_vcpus"], 0)
    c("default-over-limit", ["defaults", "memory_mib"], 4096)
    c("limit-huge", ["limits", "max_output_bytes"], 2 ** 64 - 1)
    c("policies-relative", ["policies", "role"], "roles/x.json")
    c("accel-unknown", ["vm", "accel"], "hvf")
    put("config", "dup-keys.json", '{"home":"/a","home":"/b"}')
    put("config", "nested-deep.json", '{"registry":%s}' % nested(40))


# --- policies -------------------------------------------------------------------------


def policy_seeds():
    def p(name, statements, version="2012-10-17", requests=None):
        doc = {"Version": version, "Statement": statements}
        data = json.dumps(doc).encode()
        if requests is not None:
            data += b"\0" + requests.encode()
        put("policy", name + ".json", data)

    allow = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    p("allow-everything", [allow])
    p("deny-beats-allow", [allow, {"Effect": "Deny", "Action": "registry:*",
                                   "Resource": "registry:apps/${job:App}:*"}])
    p("var-widening", [{"Effect": "Allow", "Action": "registry:PushImage",
                        "Resource": "registry:apps/${job:App}*"}])
    p("var-in-action", [{"Effect": "Allow", "Action": "${job:App}:x", "Resource": "*"}])
    p("var-unknown", [{"Effect": "Allow", "Action": "artifacts:PutObject",
                       "Resource": "artifacts:apps/${job:Name}/*"}])
    p("var-old-version", [{"Effect": "Allow", "Action": "artifacts:PutObject",
                           "Resource": "artifacts:apps/${job:App}/*"}],
      version="2008-10-17")
    p("not-action", [{"Effect": "Allow", "NotAction": "logs:*", "NotResource": "logs:*"}])
    p("conditions", [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {
        "StringLike": {"job:Ref": "refs/heads/*"}, "StringEqualsIfExists": {"req:Branch": "main"},
        "Null": {"req:Signed": "false"}, "Bool": {"req:Signed": True},
        "StringNotEquals": {"JOB:APP": ["app2", "app3"]}}}])
    p("condition-empty-list", [{"Effect": "Allow", "Action": "*", "Resource": "*",
                                "Condition": {"StringEquals": {"job:App": []}}}])
    p("condition-null-ifexists", [{"Effect": "Allow", "Action": "*", "Resource": "*",
                                   "Condition": {"NullIfExists": {"job:App": "true"}}}])
    p("too-many-statements", [dict(allow, Sid="S%d" % i) for i in range(101)])
    p("sid-dup", [dict(allow, Sid="A"), dict(allow, Sid="A")])
    p("wildcard-bomb", [{"Effect": "Allow", "Action": "registry:*u*s*h*i*m*a*g*e",
                         "Resource": "registry:*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*!"}],
      requests="app1 %s refs/heads/main j1\nregistry:PushImage registry:%s\n" % (COMMIT, "x" * 4000))
    p("requests-traversal", [allow],
      requests="app1 %s refs/heads/main j1\n"
               "artifacts:PutObject artifacts:apps/app1/../app2/x\n"
               "artifacts:PutObject artifacts:apps/app1/./x\n"
               "registry:PushImage registry:apps/app1:..\n"
               "registry:PushImage registry:apps/app1//x\n"
               "registry:PushImage registry:base/busybox:1\n"
               "REGISTRY:PUSHIMAGE registry:apps/app1:v1 job:App=app2 req:Signed=true\n"
               % COMMIT)
    p("requests-evil-vars", [allow],
      requests="app1* %s refs/heads/../x j1\nregistry:PushImage registry:apps/app10:v1\n"
               % COMMIT)
    p("requests-unset-vars", [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
      requests="- - - -\nregistry:PushImage registry:apps/x:y job:App=x\n")
    put("policy", "dup-keys.json",
        '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Effect":"Allow",'
        '"Action":"*","Resource":"*"}]}')
    put("policy", "statement-object.json",
        '{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"logs:PutLogEvents",'
        '"Resource":"logs:apps/${job:App}/*"}}')
    put("policy", "principal.json",
        '{"Statement":[{"Effect":"Allow","Principal":"*","Action":"a:b","Resource":"c"}]}')
    put("policy", "nested-deep.json", nested(40))


# --- guest result headers -------------------------------------------------------------


def guest_seeds():
    def g(name, text, max_tar=1 << 30, pad=False):
        data = text.encode("utf-8", "surrogateescape")
        if pad:
            data += b"\0" * (4096 - len(data))
        put("guest", name + ".bin", max_tar.to_bytes(8, "little") + data)

    ok = ("buildvm-output 1\nstatus ok\nstep 2\nexit 0\nsignal 0\nsteps 2\nentries 12\n"
          "tar_bytes 20480\nduration_ms 5123\nstep_ms 1 100\nstep_ms 2 5000\nend\n")
    g("ok", ok, pad=True)
    g("ok-unpadded", ok)
    g("step-failed", "buildvm-output 1\nstatus step-failed\nstep 1\nexit 2\nsteps 1\n"
      "message make: *** [all] Error 2\nend\n")
    g("zeroed", "", pad=True)
    g("no-magic", "buildvm-output 2\nstatus ok\nend\n")
    g("no-end", "buildvm-output 1\nstatus ok\n")
    g("after-end", ok + "status ok\n")
    g("bytes-after-nul", ok + "\0junk", pad=True)
    g("tar-bytes-over-disk", ok.replace("tar_bytes 20480", "tar_bytes 99999999999"),
      max_tar=4096)
    g("numbers-overflow", "buildvm-output 1\nstatus ok\nexit 18446744073709551616\nend\n")
    g("numbers-negative", "buildvm-output 1\nstatus ok\nduration_ms -1\nend\n")
    g("step-ms-index", "buildvm-output 1\nstatus ok\nstep_ms 0 1\nstep_ms 65 1\nend\n")
    g("step-inconsistent", "buildvm-output 1\nstatus ok\nstep 9\nsteps 2\nend\n")
    g("control-chars", "buildvm-output 1\nstatus ok\nmessage \x1b]0;pwned\x07\nend\n")
    g("message-long", "buildvm-output 1\nstatus agent-error\nmessage " + "m" * 3000 + "\nend\n")
    g("unknown-key", "buildvm-output 1\nstatus ok\nrun rm -rf /\nend\n")
    g("no-newlines", "buildvm-output 1\n" + "x" * 4000)
    g("short", "buildvm-output 1\nstatus ok\nend\n", pad=False)


# --- git tree names -------------------------------------------------------------------


def gitsrc_seeds():
    names = {
        "plain": b"README.md", "dotgit": b".git", "dotgit-upper": b".GIT", "dotgit-mixed": b".GiT",
        "dotgit-trailing-dot": b".git.", "dotgit-trailing-space": b".git ",
        "dotgit-trailing-mix": b".git. . .", "dotgit-stream": b".git::$INDEX_ALLOCATION",
        "dotgit-backslash": b".git\\config", "dotgit-short": b"git~1", "dotgit-short-upper": b"GIT~1",
        "dotgit-short-12": b"git~12", "dotgit-hfs-zwnj": ".g\u200cit".encode(),
        "dotgit-hfs-bom": "\ufeff.git".encode(), "dotgit-hfs-end": ".git\u200d".encode(),
        "dotgit-prefix-ok": b".gitignore", "dotgit-suffix-ok": b".github", "dot": b".",
        "dotdot": b"..", "slash": b"a/b", "nul": b"a\0b", "empty": b"", "bad-utf8": b"\xc0\xae",
        "dotdot-overlong": b"\xc0\xae\xc0\xae", "long": b"n" * 300,
    }
    for k, v in names.items():
        put("gitsrc", k, b"\0" + v)
    links = {"gitmodules": b".gitmodules", "gitmodules-upper": b".GITMODULES ",
             "gitmodules-short": b"gitmod~1", "gitmodules-hash": b"gi7eba~1",
             "gitmodules-hfs": ".gitmodules\u200c".encode(), "gitmodules-stream": b".gitmodules:x"}
    for k, v in links.items():
        put("gitsrc", "symlink-" + k, b"\1" + v)
        put("gitsrc", "file-" + k, b"\0" + v)


# --- output tar entry names -----------------------------------------------------------


def ingest_path_seeds():
    names = {
        "image-file": "image/bin/app", "artifact": "artifacts/report.txt", "root": "image",
        "root-slash": "artifacts/", "dir-slash": "image/usr/", "absolute": "/etc/passwd",
        "traversal": "image/../../etc/passwd", "dot": "image/./x", "empty-component": "image//x",
        "outside": "etc/passwd", "whiteout": "image/usr/.wh.lib", "whiteout-artifact":
        "artifacts/.wh.x", "control": "image/a\x1b[31m", "newline": "image/a\nb",
        "c1": "image/a\u009bb", "utf8": "image/\u00fcber", "long-component": "image/" + "c" * 256,
        "deep": "image/" + "d/" * 257 + "f", "dotgit": "image/.git/config",
    }
    for k, v in names.items():
        put("ingest_path", k, v.encode("utf-8"))
    put("ingest_path", "bad-utf8", b"image/\xff\xfe")
    put("ingest_path", "overlong-slash", b"image/a\xc0\xafb")
    put("ingest_path", "surrogate", b"image/\xed\xa0\x80")


# --- output tars ----------------------------------------------------------------------


def trim(data):
    """Cut a tar after its end-of-archive marker (python and GNU tar pad to 10 KiB)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
            t.getmembers()
            off = t.offset
    except (tarfile.TarError, EOFError):
        return data
    rest = data[off:]
    if len(rest) > 1024 and rest.count(0) == len(rest):
        return data[:off] + b"\0" * 1024
    return data


def gnu_sparse_old(name, realsize):
    """A GNU 'S' (old sparse) header claiming `realsize` bytes, base-256 encoded."""
    h = bytearray(gen.ustar(name, size=512, typeflag=b"S", magic=b"ustar  \0"))
    h[386:398] = b"%011o\0" % 0            # sparse[0].offset
    h[398:410] = b"%011o\0" % 512          # sparse[0].numbytes
    h[483:495] = b"\x80" + realsize.to_bytes(11, "big")
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h) + gen.pad(b"s")


def ustar_base256_size(name, size):
    h = bytearray(gen.ustar(name, size=0))
    h[124:136] = b"\x80" + size.to_bytes(11, "big")
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def ingest_seeds():
    with tempfile.TemporaryDirectory() as tmp:
        cases = gen.cases(tmp)
        for f in sorted(os.listdir(tmp)):  # GNU tar's own sparse files
            cases[f[:-4]] = read(os.path.join(tmp, f))
    t_file, t_dir, t_link = gen.t_file, gen.t_dir, gen.t_link
    raw, entry, END = gen.raw, gen.entry, gen.END
    small_valid = gen.pytar([
        t_dir("image/"), t_dir("image/bin/"), t_file("image/bin/app", b"#!/bin/sh\necho hi\n", 0o755),
        t_link("image/bin/app2", "image/bin/app", tarfile.LNKTYPE),
        t_link("image/usr/lib/up", "../../bin/app"), t_file("image/\u00dcber.txt", b"x"),
        t_dir("artifacts/"), t_file("artifacts/report.txt", b"all good\n"),
        t_link("artifacts/copy.txt", "artifacts/report.txt", tarfile.LNKTYPE)])
    cases["valid_small"] = small_valid
    cases["gzip"] = gzip.compress(trim(small_valid), mtime=0)
    # symlink-then-file: the classic extraction escape, and its same-name variant
    cases["symlink_then_file_escape"] = gen.pytar([t_link("image/x", "../../../.."),
                                                   t_file("image/x/etc/passwd", b"pwned")])
    cases["symlink_then_file_same_name"] = gen.pytar([t_link("image/a", "b"),
                                                      t_file("image/a", b"x")])
    cases["symlink_dir_then_file"] = gen.pytar([t_dir("image/d"), t_link("image/l", "d"),
                                                t_file("image/l/x", b"x")])
    # hardlinks out of the tree, directly and through a symlink
    cases["hardlink_via_symlink"] = gen.pytar([t_link("image/s", ".."),
                                               t_link("image/h", "image/s/etc/passwd",
                                                      tarfile.LNKTYPE)])
    # valid: a hardlink whose directory is only implied by an earlier name
    cases["hardlink_under_implied_dir"] = gen.pytar([t_dir("image/"),
                                                     t_file("image/bin/app", b"x"),
                                                     t_link("image/bin/app2", "image/bin/app",
                                                            tarfile.LNKTYPE)])
    cases["hardlink_to_root"] = gen.pytar([t_link("image/h", "image", tarfile.LNKTYPE)])
    # 2^60-byte entries: old GNU sparse, base-256 ustar size, pax size
    cases["sparse_old_gnu_huge"] = gnu_sparse_old("image/huge", 1 << 60) + END
    cases["size_base256_huge"] = ustar_base256_size("image/huge", 1 << 60) + gen.pad(b"x") + END
    cases["pax_size_huge"] = raw(entry("image/huge", b"x", records=[("size", str(1 << 60))]))
    cases["pax_size_negative"] = raw(entry("image/neg", b"x", records=[("size", "-1")]))
    cases["dotgit_in_image"] = gen.pytar([t_file("image/.git/config", b"[core]\n")])
    skipped = []
    for name in sorted(cases):
        data = trim(cases[name])
        if len(data) > MAX_SEED:
            skipped.append(name)
            continue
        put("ingest", name + ".tar", data)
    return skipped


# --- webhooks (no target yet: see corpus/webhook/README.md) ---------------------------

WEBHOOK_SECRET = b"buildvm-fuzz-secret"


def webhook_seeds():
    repo = {"id": 1, "name": "hello", "full_name": "org/hello",
            "clone_url": "https://git.example/org/hello.git"}
    github = {"ref": "refs/heads/main", "before": "0" * 40, "after": COMMIT, "repository": repo,
              "pusher": {"name": "alice"}, "head_commit": {"id": COMMIT, "message": "x"}}
    gitea = dict(github, commits=[{"id": COMMIT, "message": "x"}])
    gitlab = {"object_kind": "push", "ref": "refs/heads/main", "checkout_sha": COMMIT,
              "before": "0" * 40, "after": COMMIT, "user_username": "alice",
              "project": {"id": 1, "path_with_namespace": "org/hello",
                          "git_http_url": "https://git.example/org/hello.git"}}

    def sig(body):
        return hmac.new(WEBHOOK_SECRET, body, hashlib.sha256).hexdigest()

    def req(name, headers, body):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        head = "".join("%s: %s\r\n" % h for h in headers).encode()
        put("webhook", name + ".http", head + b"\r\n" + body)

    b = json.dumps(github).encode()
    gh = [("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")]
    req("github-push", gh + [("X-Hub-Signature-256", "sha256=" + sig(b))], b)
    req("github-bad-signature", gh + [("X-Hub-Signature-256", "sha256=" + "0" * 64)], b)
    req("github-sig-truncated", gh + [("X-Hub-Signature-256", "sha256=" + sig(b)[:63])], b)
    req("github-sig-upper", gh + [("X-Hub-Signature-256", "sha256=" + sig(b).upper())], b)
    req("github-sig-sha1-downgrade", gh + [("X-Hub-Signature", "sha1=" + "0" * 40)], b)
    req("github-sig-missing", gh, b)
    req("github-sig-duplicate", gh + [("X-Hub-Signature-256", "sha256=" + "0" * 64),
                                      ("X-Hub-Signature-256", "sha256=" + sig(b))], b)
    req("github-sig-empty", gh + [("X-Hub-Signature-256", "")], b)
    req("github-ping", [("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", "sha256=" + sig(b"{}"))],
        b"{}")
    tampered = b.replace(b"refs/heads/main", b"refs/heads/evil")
    req("github-body-tampered", gh + [("X-Hub-Signature-256", "sha256=" + sig(b))], tampered)
    for field, value in (("after", "HEAD~1"), ("ref", "refs/heads/../x")):
        evil = json.dumps(dict(github, **{field: value})).encode()
        req("github-evil-" + field, gh + [("X-Hub-Signature-256", "sha256=" + sig(evil))], evil)
    dup = b'{"ref":"refs/heads/main","after":"%s","after":"%s"}' % (COMMIT.encode(), b"0" * 40)
    req("github-dup-keys", gh + [("X-Hub-Signature-256", "sha256=" + sig(dup))], dup)
    deep = nested(40).encode()
    req("github-nested-deep", gh + [("X-Hub-Signature-256", "sha256=" + sig(deep))], deep)
    g = json.dumps(gitea).encode()
    req("gitea-push", [("X-Gitea-Event", "push"), ("X-Gitea-Delivery", "d-1"),
                       ("X-Gitea-Signature", sig(g))], g)
    req("gitea-bad-signature", [("X-Gitea-Event", "push"), ("X-Gitea-Signature", "zz")], g)
    gl = json.dumps(gitlab).encode()
    req("gitlab-push", [("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "buildvm-fuzz-secret")],
        gl)
    req("gitlab-bad-token", [("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "guess")], gl)
    req("gitlab-no-token", [("X-Gitlab-Event", "Push Hook")], gl)


# --- jsonx ----------------------------------------------------------------------------


def jsonx_seeds():
    seeds = {
        "getters.json": '{"a":"str","b":7,"id":true,"name":["x","y"],"z":{"q":[1,2]}}',
        "dup-keys.json": '{"a":1,"a":2}', "dup-keys-nested.json": '{"a":{"b":1,"b":1}}',
        "dup-keys-escaped.json": '{"a":1,"\\u0061":2}', "nested-32.json": nested(32),
        "nested-33.json": nested(33), "nested-array.json": "[" * 40 + "]" * 40,
        "nested-jansson-limit.json": "[" * 2100 + "]" * 2100, "nul-escape.json": '{"a":"x\\u0000y"}',
        "nul-key.json": '{"a\\u0000b":1}', "surrogate-half.json": '["\\ud800"]',
        "surrogate-pair.json": '["\\ud83d\\ude00"]', "big-int.json": '{"b":18446744073709551616}',
        "negative.json": '{"b":-1}', "real.json": '{"b":1.0}', "exp.json": '{"b":1e400}',
        "bom.json": "\ufeff{}", "trailing.json": "{} {}", "empty.json": "", "array-str.json":
        '{"name":["' + '","'.join("s%d" % i for i in range(10)) + '"]}',
    }
    for k, v in seeds.items():
        put("jsonx", k, v)
    put("jsonx", "bad-utf8.json", b'{"a":"\xff"}')
    put("jsonx", "overlong-utf8.json", b'{"a":"\xc0\xaf"}')
    put("jsonx", "raw-control.json", b'{"a":"\x1b[31m"}')
    put("jsonx", "raw-nul.json", b'{"a":1}\0')


# --- egress: destinations and addresses, channel frames ----------------------------


def netaddr_seeds():
    literals = [
        "127.0.0.1", "2130706433", "0x7f000001", "0x7f.1", "0177.0.0.1", "0177.1", "127.1",
        "127.0.0.1.", "017700000001", "169.254.169.254", "2852039166", "0xa9fea9fe",
        "0251.0376.0251.0376", "169.254.43518", "0", "0x", "4294967295", "4294967296",
        "256.0.0.1", "1.2.3.4.5", "1..1", "08.0.0.1", "example.123", "foo.0x10",
        "[::1]", "::1", "[::ffff:7f00:1]", "[::ffff:127.0.0.1]", "::127.0.0.1",
        "[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::]", "[fe80::1%eth0]", "fd00:ec2::254",
        "[::1", "[127.0.0.1]", "1:2:3:4:5:6:7:8:9",
    ]
    for i, lit in enumerate(literals):
        put("netaddr", "literal-%02d-%s" % (i, lit), lit)
    hostports = [
        "registry.npmjs.org:443", "EXAMPLE.com.:80", "[::1]:443", "2130706433:80",
        "0x7f.1:443", "[::ffff:a9fe:a9fe]:80", "example.com", "example.com:0443",
        "example.com:65536", "::1:443", "[::1]443", "a_b:80", "b\xc3\xbccher.de:443",
        "a" * 64 + ".example:443", ("a" * 63 + ".") * 4 + "com:443", "\x1b[2J:443",
    ]
    for i, hp in enumerate(hostports):
        put("netaddr", "hostport-%02d" % i, hp)
    for i, al in enumerate(["127.0.0.1/32", "10.0.0.0/8, ::1/128 fd00::/8", "10.0.0.1/8",
                            "::ffff:127.0.0.0/104", "0.0.0.0/0 ::/0", "10.0.0.0/08",
                            ",".join("10.0.%d.0/24" % n for n in range(70))]):
        put("netaddr", "allow-%02d" % i, al)
    for i, m in enumerate(["*.example.com\na.example.com", "*.example.com\nexample.com",
                           "*.example.com\naexample.com", "example.com\nEXAMPLE.COM.",
                           "*.\n.", "*\nx"]):
        put("netaddr", "match-%02d" % i, m)


def egress_frame_seeds():
    import struct

    def fr(t, flags, stream, payload=b"", reserved=0, length=None):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload) if length is None else length
        return struct.pack(">BBHII", t, flags, reserved, stream, n) + payload

    HELLO, OPEN, OK, ERR, DATA, WINDOW, CLOSE, RESET = range(1, 9)
    hello = fr(HELLO, 0, 0, struct.pack(">I", 1))
    g = b"\x00"  # from the guest, fed whole then in pieces
    h = b"\x01"  # from the host
    session = (hello + fr(OPEN, 1, 1, "registry.npmjs.org:443") + fr(OPEN, 2, 3, "[::1]:80")
               + fr(DATA, 0, 1, b"\x16\x03\x01" + bytes(range(256)) * 4)
               + fr(WINDOW, 0, 1, struct.pack(">I", 65536)) + fr(CLOSE, 0, 1)
               + fr(RESET, 0, 3, "client went away"))
    put("egress_frame", "guest-session.bin", g + session)
    put("egress_frame", "guest-session-pieces.bin", b"\x7e" + session)
    put("egress_frame", "host-session.bin",
        h + hello + fr(OK, 0, 1) + fr(ERR, 1, 3, "role denies net:Connect on net:x:443")
        + fr(DATA, 0, 1, "HTTP/1.1 200 OK\r\n\r\n") + fr(CLOSE, 0, 1))
    put("egress_frame", "big-data.bin", g + hello + fr(DATA, 0, 7, b"x" * 8000))
    bad = {
        "no-hello": fr(DATA, 0, 1, "x"),
        "hello-twice": hello + hello,
        "hello-v2": fr(HELLO, 0, 0, struct.pack(">I", 2)),
        "unknown-type": hello + fr(9, 0, 1),
        "type-zero": hello + fr(0, 0, 1),
        "reserved": hello + fr(DATA, 0, 1, "x", reserved=1),
        "length-4g": hello + fr(DATA, 0, 1, length=0xFFFFFFFF),
        "length-over-cap": hello + fr(DATA, 0, 1, length=65537) + b"y" * 100,
        "stream-zero": hello + fr(DATA, 0, 0, "x"),
        "stream-too-big": hello + fr(CLOSE, 0, 0x01000000),
        "open-ok-from-guest": hello + fr(OK, 0, 1),
        "open-no-mode": hello + fr(OPEN, 0, 1, "a:1"),
        "open-both-modes": hello + fr(OPEN, 3, 1, "a:1"),
        "open-control": hello + fr(OPEN, 1, 1, "a:1\n"),
        "open-too-long": hello + fr(OPEN, 1, 1, "a" * 301),
        "data-empty": hello + fr(DATA, 0, 1),
        "data-flags": hello + fr(DATA, 1, 1, "x"),
        "window-zero": hello + fr(WINDOW, 0, 1, struct.pack(">I", 0)),
        "window-huge": hello + fr(WINDOW, 0, 1, struct.pack(">I", 0xFFFFFFFF)),
        "window-short": hello + fr(WINDOW, 0, 1, b"\x00\x01"),
        "close-payload": hello + fr(CLOSE, 0, 1, "x"),
        "reset-escape": hello + fr(RESET, 0, 1, "\x1b[2J"),
        "truncated-header": hello + fr(DATA, 0, 1, "abc")[:7],
        "truncated-payload": hello + fr(DATA, 0, 1, "abcdef")[:15],
    }
    for name, data in bad.items():
        put("egress_frame", "guest-" + name + ".bin", g + data)
    put("egress_frame", "host-open-from-host.bin", h + hello + fr(OPEN, 1, 1, "a:1"))
    put("egress_frame", "host-err-bad-code.bin", h + hello + fr(ERR, 9, 1, "x"))
    put("egress_frame", "empty.bin", b"")


def lockfile_seeds():
    # the first byte picks the lock file: 0 npm, 1 pip, 2 go, 3 cargo
    for name in ("package-lock.json", "requirements.txt"):
        for root in ("examples/apps", "examples/hostile"):
            for path in sorted(glob.glob(os.path.join(TOP, root, "*", name))):
                kind = b"\x00" if name.endswith(".json") else b"\x01"
                put("lockfile", os.path.relpath(path, TOP), kind + read(os.path.relpath(path, TOP)))
    put("lockfile", "npm-v1.json", b"\x00" + b'{"lockfileVersion":1,"dependencies":{"a":{"version":"1","integrity":"sha1-AAAA"}}}')
    put("lockfile", "npm-bad-integrity.json", b"\x00" + b'{"packages":{"node_modules/a":{"version":"1","integrity":"sha512-$$$"}}}')
    put("lockfile", "npm-control.json", b"\x00" + b'{"packages":{"node_modules/\\u001b[2J":{"version":"1"}}}')
    put("lockfile", "npm-many.json", b"\x00" + json.dumps({"packages": {"node_modules/p%d" % i: {"version": "1"} for i in range(100)}}).encode())
    put("lockfile", "pip.txt", b"\x01" + b"a==1 \\\n  --hash=sha256:" + b"ab" * 32 + b"\n# c\nb>=2\n-r x\nC_D.e[x]==3;python_version<'3'\n")
    put("lockfile", "pip-continued-forever.txt", b"\x01" + b"a==1 \\\n" * 50)
    put("lockfile", "go.sum", b"\x02" + b"example.com/m v1.0.0 h1:abc=\nexample.com/m v1.0.0/go.mod h1:def=\n")
    put("lockfile", "go-bad.sum", b"\x02" + b"onlyonefield\n")
    put("lockfile", "Cargo.lock", b"\x03" + b'[[package]]\nname = "a"\nversion = "1"\nchecksum = "' + b"ab" * 32 + b'"\n[[package]]\nname = "b"\n')
    put("lockfile", "cargo-unterminated.lock", b"\x03" + b'[[package]]\nname = "a\n')


def attest_seeds():
    # the first byte: even, a statement for attest_check; odd, an envelope
    img = "1" * 64
    st = {"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://slsa.dev/provenance/v1",
          "subject": [{"name": "apps/hello", "digest": {"sha256": img}}],
          "predicate": {"buildDefinition": {"buildType": "https://buildvm.dev/build-types/vm/v1",
                                            "externalParameters": {"deploy": {"app": "hello"}}},
                        "runDetails": {"builder": {"id": "urn:x"}}}}
    put("attest", "statement.json", b"\x00" + json.dumps(st).encode())
    other = json.loads(json.dumps(st)); other["subject"][0]["digest"]["sha256"] = "2" * 64
    put("attest", "statement-other-image.json", b"\x00" + json.dumps(other).encode())
    app = json.loads(json.dumps(st)); app["predicate"]["buildDefinition"]["externalParameters"]["deploy"]["app"] = "\x1b[2Jevil"
    put("attest", "statement-control-app.json", b"\x00" + json.dumps(app).encode())
    put("attest", "statement-dup.json", b"\x00" + b'{"_type":"a","_type":"b"}')
    env = {"payloadType": "application/vnd.in-toto+json",
           "payload": base64.b64encode(json.dumps(st).encode()).decode(),
           "signatures": [{"keyid": "x", "sig": base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()}]}
    put("attest", "envelope.json", b"\x01" + json.dumps(env).encode())
    env2 = dict(env); env2["payloadType"] = "\x1b[31mx"
    put("attest", "envelope-type-control.json", b"\x01" + json.dumps(env2).encode())
    env3 = dict(env); env3["signatures"] = [{"sig": "-_-_"}] * 17
    put("attest", "envelope-many-sigs.json", b"\x01" + json.dumps(env3).encode())
    env4 = dict(env); env4["payload"] = "not base64!"
    put("attest", "envelope-bad-b64.json", b"\x01" + json.dumps(env4).encode())


def main():
    for d in glob.glob(os.path.join(CORPUS, "*", "seed-*")):
        os.unlink(d)
    real_documents()
    job_seeds()
    spec_seeds()
    config_seeds()
    policy_seeds()
    guest_seeds()
    gitsrc_seeds()
    ingest_path_seeds()
    skipped = ingest_seeds()
    webhook_seeds()
    jsonx_seeds()
    netaddr_seeds()
    egress_frame_seeds()
    lockfile_seeds()
    attest_seeds()
    total = 0
    for target in sorted(written):
        size = sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in written[target])
        total += size
        print("%-12s %4d seeds %8d bytes" % (target, len(written[target]), size))
    print("total %d bytes; tar cases over %d bytes left out: %s"
          % (total, MAX_SEED, ", ".join(skipped)))


if __name__ == "__main__":
    sys.exit(main())
