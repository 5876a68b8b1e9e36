#!/bin/bash
# Hostile repositories: trees the git CLI would never check out are written
# straight into the object database, and every one is refused before a VM
# boots, with the offending path named and nothing pushed. Symlinks are kept
# as symlinks and resolved inside the VM, never on the host.
. "$(dirname "$0")/lib.sh"

pl_registry
pl_config '.limits.max_source_entries = 50'

repo=$T/repo
git init -q -b main "$repo"
export GIT_DIR=$repo/.git GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@x GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@x
spec=$(printf '{"profile": "minimal", "steps": ["cat link; ls -la"], "image": {"from": "."}}' | git hash-object -w --stdin)
blob=$(echo "payload" | git hash-object -w --stdin)
hooks=$(printf '100644 blob %s\tpost-checkout\n' "$blob" | git mktree)

# commit_with ENTRY-LINE...: a root tree of buildvm.json plus the given mktree lines
commit_with () {
    local tree
    tree=$( { printf '100644 blob %s\tbuildvm.json\n' "$spec"; printf '%s\n' "$@"; } | git mktree)
    git commit-tree "$tree" -m hostile
}
# raw_tree_with NAME: a tree whose one extra entry has a name mktree refuses
raw_commit_with () {
    local tree
    tree=$(python3 - "$1" "$spec" "$blob" <<'PY' | git hash-object -t tree -w --literally --stdin
import sys
name, spec, blob = sys.argv[1].encode(), sys.argv[2], sys.argv[3]
entries = sorted([(b"buildvm.json", spec), (name, blob)])
sys.stdout.buffer.write(b"".join(b"100644 " + n + b"\0" + bytes.fromhex(s) for n, s in entries))
PY
)
    git commit-tree "$tree" -m hostile
}

n=0
expect_refused () { # COMMIT WHAT NEEDLE
    n=$((n + 1))
    git update-ref refs/heads/main "$1"
    pl_job "$T/j.json" "hostile-$n" hostile "$repo" "$1"
    run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
    [ "$RC" != 0 ] || fail "$2: accepted"
    grep -qF -- "$3" "$T/out" || { cat "$T/out"; fail "$2: the error does not name [$3]"; }
    jq -e '.phases.build == null' "$(pl_record "hostile-$n")" >/dev/null || fail "$2: a VM was booted"
    pl_tag_exists apps/hostile "$1" && fail "$2: pushed"
    assert_no_leftovers
}

expect_refused "$(commit_with "040000 tree $hooks	.git")" ".git directory" ".git"
expect_refused "$(commit_with "040000 tree $hooks	.GIT")" ".GIT directory" ".GIT"
expect_refused "$(commit_with "040000 tree $hooks	.git.")" ".git. directory" ".git."
expect_refused "$(commit_with "040000 tree $hooks	.git ")" "trailing space" ".git "
expect_refused "$(commit_with "040000 tree $hooks	GIT~1")" "8.3 short name" "GIT~1"
expect_refused "$(commit_with "100644 blob $blob	..")" "dot-dot" ".."
expect_refused "$(raw_commit_with "a/b")" "slash in a name" "a/b"
expect_refused "$(raw_commit_with "$(printf '.g\xe2\x80\x8cit')")" "HFS+ ignorable" "git"
many=$(for i in $(seq 60); do printf '100644 blob %s\tf%02d\n' "$blob" "$i"; done)
expect_refused "$(commit_with "$many")" "too many entries" "more than 50 entries"

# symlinks stay symlinks: the host never follows them; the guest resolves
# them against its own file system
link=$(printf '/etc/hostname' | git hash-object -w --stdin)
spec=$(printf '{"profile": "minimal", "steps": ["cat link; ls -la"]}' | git hash-object -w --stdin)
ok=$(commit_with "120000 blob $link	link")
git update-ref refs/heads/main "$ok"
pl_job "$T/j.json" symlink-1 hostile "$repo" "$ok"
run "$BUILDVM" run --config "$CONFIG" --verbose "$T/j.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "a repository with a symlink failed"; }
# the line after the step header is the guest's /etc/hostname, never the host's
assert_eq buildvm "$(grep -A1 '^==> step 1/1' "$T/err" | sed -n 2p)" "what the symlink resolved to"
assert_contains "$T/err" "link -> /etc/hostname"
assert_no_leftovers

# ... and an absolute symlink among the image's outputs is refused on the way
# back: the image would point outside itself
spec=$(printf '{"profile": "minimal", "steps": ["true"], "image": {"from": "."}}' | git hash-object -w --stdin)
bad=$(commit_with "120000 blob $link	link")
git update-ref refs/heads/main "$bad"
pl_job "$T/j.json" symlink-2 hostile "$repo" "$bad"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" != 0 ] || fail "an absolute symlink in the image was accepted"
assert_contains "$T/out" "absolute symlink"
pl_tag_exists apps/hostile "$bad" && fail "pushed an image with an absolute symlink"
assert_no_leftovers
