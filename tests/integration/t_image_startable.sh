#!/bin/bash
# An image that cannot start is refused before anything is pushed, with one
# line naming the missing path: a `cmd` whose program is on no PATH of the
# image (node on a busybox base), an entrypoint that is not there, a
# dynamically linked binary on a base without its interpreter (the host's
# own /usr/bin/true on busybox), a script whose `#!` interpreter is missing;
# dry-run says the same. The same binary on base/debian:12 - through its
# merged-/usr symlinks to ld.so - starts and is pushed.
. "$(dirname "$0")/lib.sh"

pl_registry
pl_config
svc_base_images "$REG" "$REG_CREDS" base/busybox:1.35 base/debian:12 >"$T/push" 2>&1 \
    || { cat "$T/push"; fail "pushing the base images failed"; }

# app DIR IMAGE-JSON: a minimal-profile app whose layer is out/ (the host's
# dynamically linked `true` and a bash script in it); prints its commit
app () {
    mkdir -p "$1/bin"
    cp /usr/bin/true "$1/bin/true"
    printf '#!/bin/bash\necho hi\n' >"$1/bin/hi.sh"
    chmod +x "$1/bin/hi.sh"
    jq -n --argjson image "$2" '{profile: "minimal",
        steps: [{name: "build", run: "mkdir -p out && cp bin/true bin/hi.sh out/"}],
        image: ({base: "base/busybox:1.35", from: "out", to: "/app"} + $image)}' >"$1/buildvm.json"
    pl_repo "$1"
}

# refused JOB IMAGE-JSON LINE: `buildvm run` fails with exit 2 and LINE,
# pushes nothing, and the record has LINE as its error
refused () {
    local c
    c=$(app "$T/$1" "$2")
    pl_job "$T/$1.json" "$1" "$1" "$T/$1" "$c"
    run "$BUILDVM" run --config "$CONFIG" "$T/$1.json"
    assert_eq 2 "$RC" "$1: exit status of an image that cannot start"
    assert_contains "$T/out" "  error     $3"
    assert_eq "$3" "$(jq -r .error.message "$(pl_record "$1")")" "$1: the record's error"
    assert_not_contains "$T/out" " push="
    ! pl_tag_exists "apps/$1" "$c" || fail "$1: an image that cannot start was pushed"
}

missing="put it in the app's layer (\`image.from\`) or build on a base image that has it (\`image.base\`)"
refused nonode '{"cmd": ["node", "/app/server.js"]}' \
    "the image cannot start: \`node\` is in none of the image's PATH directories (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin) (image.cmd[0]): $missing"
refused dynamic '{"entrypoint": ["/app/true"]}' \
    "the image cannot start: \`/app/true\` is dynamically linked, and its interpreter \`/lib64/ld-linux-x86-64.so.2\` is not in the image: \`/lib64\` does not exist (image.entrypoint[0]): link it statically, or build on a base image with the C library it was linked against (\`image.base\`, such as \`base/debian:12\`)"
refused script '{"entrypoint": ["hi.sh"], "env": {"PATH": "/app:/bin"}}' \
    "the image cannot start: \`/app/hi.sh\` starts with \`#!/bin/bash\`, which is not in the image: \`/bin/bash\` does not exist (image.entrypoint[0]): $missing"

# dry-run: the same line, exit 2
d=$T/dry
c=$(app "$d" '{"entrypoint": ["/bin/httpd"]}')
run env -C "$d" "$BUILDVM" dry-run --config "$CONFIG" --out "$T/out-dry"
assert_eq 2 "$RC" "dry-run of an image that cannot start"
assert_contains "$T/out" "  error     the image cannot start: \`/bin/httpd\` is not in the image: \`/bin/httpd\` does not exist (image.entrypoint[0]): $missing"
[ ! -e "$T/out-dry/image/index.json" ] || fail "dry-run wrote the layout of an image that cannot start"

# the same binary on a base with the C library: it starts, and is pushed
c=$(app "$T/ok" '{"base": "base/debian:12", "entrypoint": ["/app/true"]}')
pl_job "$T/ok.json" ok ok "$T/ok" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/ok.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "an image that can start was refused"; }
"$BUILDVM" logs ok >"$T/log" 2>&1
assert_contains "$T/log" "[buildvm] image: \`/app/true\` (image.entrypoint[0]) resolves in the image"
pl_tag_exists apps/ok "$c" || fail "the image that can start was not pushed"
assert_no_leftovers
