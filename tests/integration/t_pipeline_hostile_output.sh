#!/bin/bash
# Hostile output tars. The real agent never writes these, so the guest here is
# a compromised one: a test image whose init, instead of the agent, writes a
# crafted tar and a "status ok" header onto the output disk. Every case must
# be refused with a clear error, with nothing pushed, nothing committed to the
# artifact store, and nothing written outside the job's own directories.
. "$(dirname "$0")/lib.sh"

pl_registry

# --- the compromised image: the real kernel, a busybox rootfs with evil init
python3 "$ROOT/tests/data/ingest/gen.py" "$T/cases" >/dev/null
stage=$T/stage
mkdir -p "$stage"/{bin,proc,sys,dev,tmp,evil,work}
cp /bin/busybox "$stage/bin/busybox"
for a in sh mount cat dd stat printf tar reboot echo sleep sync; do ln -s busybox "$stage/bin/$a"; done
cp "$T/cases"/*.tar "$stage/evil/"
cat >"$stage/init" <<'SH'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
echo "buildvm-agent: ready" >/dev/hvc0
for d in /sys/block/vd*; do
  case "$(cat "$d/serial")" in
    input) in=/dev/${d##*/} ;;
    output) out=/dev/${d##*/} ;;
    scratch) scratch=/dev/${d##*/} ;;
  esac
done
mount -t ext4 -o ro "$scratch" /work
case=$(cat /work/src/case.txt)
size=$(stat -c %s "/evil/$case.tar")
echo "evil guest: writing $case ($size bytes)" >/dev/hvc0
dd if="/evil/$case.tar" of="$out" bs=4096 seek=1 conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/hdr bs=4096 count=1 2>/dev/null
printf 'buildvm-output 1\nstatus ok\nstep 1\nexit 0\nsignal 0\nsteps 1\nentries 1\ntar_bytes %s\nduration_ms 1\nend\n' "$size" | dd of=/tmp/hdr conv=notrunc 2>/dev/null
dd if=/tmp/hdr of="$out" bs=4096 count=1 conv=notrunc 2>/dev/null
sync
reboot -f
SH
chmod 755 "$stage/init"
img=$T/images
mkdir -p "$img/rootfs"
ln -s "$BUILDVM_IMAGES/kernel" "$img/kernel"
mkfs.ext4 -q -d "$stage" "$img/rootfs/evil.ext4" 64M
jq --arg size "$(stat -c %s "$img/rootfs/evil.ext4")" '
    .profile = "evil" | .rootfs.path = "rootfs/evil.ext4" | .rootfs.size = ($size | tonumber)
    | .kernel.cmdline |= sub("init=/buildvm/agent"; "init=/init")' \
    "$BUILDVM_IMAGES/minimal.json" >"$img/evil.json"
export BUILDVM_IMAGES=$img
pl_config

# --- one app, one commit per case (the case name travels in the source tree)
app=$T/app
mkdir -p "$app"
printf '{"profile": "evil", "steps": ["true"], "image": {"from": "dist"}, "artifacts": ["out"]}\n' >"$app/buildvm.json"
git init -q -b main "$app"
# where an escaping path would land: above the job's directories, and the
# usual system places (other tests' own temporary directories excluded, and
# /var/lib/containers: the skopeo the tests running beside this one use keeps
# its blob cache there; buildvm never runs skopeo)
touch "$T/ref"
changed () {
    find /etc /usr /opt /var/lib -maxdepth 3 -xdev -newer "$T/ref" 2>/dev/null \
        | grep -v -e '^/var/lib/buildvm' -e '^/var/lib/containers' | sort || true
    # the job's home is $T/home: an escape by `..` lands next to it, in $T
    ls -A "$T" | grep -v -x -e home -e svc -e cases -e stage -e images -e app -e ref \
        -e out -e err -e j.json -e runner.json -e registry-creds.json | sed "s|^|$T/|" || true
}

n=0
for case in valid abs_path dotdot pax_path_override gnu_longname_dotdot symlink_abs symlink_escape \
            symlink_chain below_symlink dup_swap_symlink hardlink_abs hardlink_dotdot \
            hardlink_other_root chardev blockdev fifo setuid setgid sticky sparse_huge \
            pax_over_cap gzip truncated_data missing_marker whiteout ctrl_char outside_roots; do
    n=$((n + 1))
    echo "$case" >"$app/case.txt"
    c=$(cd "$app" && git add -A && git -c user.name=t -c user.email=t@x commit -qm "$case" && git rev-parse HEAD)
    pl_job "$T/j.json" "out-$n" evilapp "$app" "$c"
    run "$BUILDVM" run --config "$CONFIG" --verbose "$T/j.json"
    if [ "$case" = valid ]; then
        # the control: a well-formed tar from the same compromised guest goes through
        [ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the valid control case failed"; }
        pl_tag_exists apps/evilapp "$c" || fail "the valid control case was not pushed"
        continue
    fi
    [ "$RC" != 0 ] || fail "$case: accepted"
    grep -q "outputs were refused" "$T/out" || { cat "$T/out"; fail "$case: unclear error"; }
    pl_tag_exists apps/evilapp "$c" && fail "$case: pushed"
    [ ! -e "$BUILDVM_HOME/artifacts/apps/evilapp/$c" ] || fail "$case: artifacts committed"
    assert_no_leftovers
    note "$case: $(grep -o 'refused: .*' "$T/out" | head -1 | cut -c1-100)"
done

# nothing outside this test's own directories was written
new=$(changed)
[ -z "$new" ] || fail "files written outside the job's directories: $(echo "$new" | head -5)"
# and inside the test's home, only the control case's artifacts exist
assert_eq 1 "$(ls "$BUILDVM_HOME/artifacts/apps/evilapp" | wc -l)" "artifact prefixes"
