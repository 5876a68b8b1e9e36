#!/bin/bash
# The debian profile's toolchains build real programs offline in the VM: a Go
# program (go build), a Rust crate (cargo build --offline) and a Python
# package pip installs into a venv from a --find-links directory of wheels in
# the repository; cmake, the autotools and the -dev libraries are there. The
# binaries come back as artifacts and run here.
. "$(dirname "$0")/lib.sh"

[ -f "$BUILDVM_IMAGES/debian.json" ] || skip "needs the debian image (make image-debian)"
for p in golang rustc cargo cmake autoconf automake libtool python3-pip python3-venv \
         zlib1g-dev libssl-dev libpq-dev libcurl4-openssl-dev; do
    jq -e --arg p "$p" '.packages[] | select(.name == $p)' "$BUILDVM_IMAGES/debian.json" >/dev/null \
        || fail "the debian image has no $p: rebuild it (make image-debian)"
done

d=$T/tc
mkdir -p "$d/go" "$d/rust/src" "$d/wheels"
cat >"$d/go/go.mod" <<'EOF'
module example.com/hello

go 1.19
EOF
cat >"$d/go/main.go" <<'EOF'
package main

import (
	"fmt"
	"runtime"
)

func main() { fmt.Printf("hello from go %s\n", runtime.Version()) }
EOF
cat >"$d/rust/Cargo.toml" <<'EOF'
[package]
name = "hello-rust"
version = "0.1.0"
edition = "2021"

[dependencies]
EOF
cat >"$d/rust/src/main.rs" <<'EOF'
fn main() {
    println!("hello from rust");
}
EOF
python3 "$ROOT/tests/lib/mkwheel.py" "$d/wheels" hello-greeting 1.0.0 \
    "$ROOT/tests/fixtures/python/hello-greeting/hello_greeting.py" >/dev/null
cat >"$d/buildvm.json" <<'EOF'
{
  "profile": "debian",
  "env": {"GOCACHE": "/work/tmp/go-cache", "GOPATH": "/work/tmp/go", "GOPROXY": "off",
          "GOFLAGS": "-buildvcs=false", "CARGO_HOME": "/work/tmp/cargo",
          "CARGO_TARGET_DIR": "/work/tmp/target"},
  "resources": {"vcpus": 1, "memory_mib": 1024, "disk_mib": 1024, "timeout": 600},
  "steps": [
    {"name": "tools", "run": "mkdir -p out && cmake --version && autoreconf --version | head -1 && libtoolize --version | head -1 && pkg-config --exists zlib openssl libpq libcurl && echo libs ok"},
    {"name": "go", "run": "cd go && go build -o ../out/hello-go . && ../out/hello-go"},
    {"name": "rust", "run": "cd rust && cargo build --offline && cp /work/tmp/target/debug/hello-rust ../out/"},
    {"name": "pip", "run": "python3 -m venv --system-site-packages --without-pip /work/tmp/venv && /work/tmp/venv/bin/python -m pip install -q --no-index --find-links wheels --disable-pip-version-check --no-compile --no-cache-dir hello-greeting && test -f /work/tmp/venv/lib/python3*/site-packages/hello_greeting.py && /work/tmp/venv/bin/python -c 'import hello_greeting; print(hello_greeting.greet(\"pip\"))' >out/py.txt"}
  ],
  "artifacts": ["out/"]
}
EOF
c=$(pl_repo "$d")
t0=$(date +%s)
run env -C "$d" "$BUILDVM" dry-run --app toolchains --out "$T/res"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the toolchain build failed"; }
note "built in $(( $(date +%s) - t0 ))s; steps (ms): $(jq -c '[.build.steps[] | {(.name): .ms}] | add' "$T/res/record.json")"
a=$T/res/artifacts/apps/toolchains/$c/out
[ -f "$a/hello-go" ] && [ -f "$a/hello-rust" ] || { ls -lR "$T/res/artifacts"; fail "no binaries came back"; }
chmod +x "$a/hello-go" "$a/hello-rust" # artifacts are stored without modes
case $("$a/hello-go") in "hello from go go1."*) ;; *) fail "hello-go says [$("$a/hello-go")]" ;; esac
assert_eq "hello from rust" "$("$a/hello-rust")" "hello-rust"
assert_eq "hello, pip" "$(cat "$a/py.txt")" "the pip-installed package"
assert_no_leftovers
