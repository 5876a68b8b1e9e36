#!/bin/bash
# Mutable tags move only forwards along the ref (issue 11 items 6 and 9).
# Two pushes to main build out of order: the newer commit is tagged first,
# the older one finishes last and must not take `latest` / `main` back; its
# own `{commit}` tag is pushed and its record says which tags it left. A
# force-push (the ref's tip in the mirror) may move them backwards or
# sideways. A commit that only another branch reaches is not built as main.
. "$(dirname "$0")/lib.sh"

pl_registry
pl_config '.registry.extra_tags = ["latest", "{ref_name}"]'
src=$T/src
old=$(sv_app "$src")
git_commit () { # DIR MSG: a file MSG, committed on the checked-out branch; prints the commit
    echo "$2" >"$1/$2" && pl_commit "$1" "$2"
}
new=$(git_commit "$src" second)
label () { # TAG: the commit the image at TAG was built from
    skopeo inspect --tls-verify=false --creds "$REG_CREDS" "docker://$REG/apps/tags:$1" |
        jq -r '.Labels["dev.buildvm.commit"]'
}

# --- the newer commit finishes first
pl_job "$T/j.json" new-1 tags "$src" "$new"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the newer job failed"; }
assert_eq "$new" "$(label latest)" "latest after the newer job"
assert_eq "$new" "$(label main)" "main after the newer job"

# --- the older commit of the same ref finishes last
pl_job "$T/j.json" old-1 tags "$src" "$old"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the older job failed"; }
assert_eq "$old" "$(label "$old")" "the older job's {commit} tag"
assert_eq "$new" "$(label latest)" "latest after the older job (moved backwards)"
assert_eq "$new" "$(label main)" "main after the older job (moved backwards)"
rec=$(pl_record old-1)
assert_eq '["latest","main"]' "$(jq -c '[.image.tags_skipped[].tag]' "$rec")" "tags left, in the record"
assert_eq "[\"$old\"]" "$(jq -c .image.tags "$rec")" "tags moved, in the record"
jq -r '.image.tags_skipped[0].reason' "$rec" | grep -q "names commit $new" || fail "no reason in the record"
assert_contains "$T/out" "tag left  latest: it names commit $new"
assert_eq null "$(jq -c '.image.tags_skipped' "$(pl_record new-1)")" "nothing left by the newer job"

# --- a force-push moves main sideways: its new tip may take the tags
(cd "$src" && git reset -q --hard "$old")
side=$(git_commit "$src" sideways)
pl_job "$T/j.json" side-1 tags "$src" "$side"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the force-pushed job failed"; }
assert_eq "$side" "$(label latest)" "latest after a force-push"
assert_eq "$side" "$(label main)" "main after a force-push"
# ... and the abandoned tip, requested again, is no longer on main at all
pl_job "$T/j.json" new-2 tags "$src" "$new"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 2 "$RC" "exit status for the abandoned tip (invalid request)"
assert_contains "$T/out" "$new\` is not on \`refs/heads/main\` (its tip is \`$side\`)"
assert_eq "$side" "$(label latest)" "latest after the abandoned tip"

# --- a commit that only an unreviewed branch reaches is not built as main
(cd "$src" && git checkout -q -b unreviewed)
evil=$(git_commit "$src" evil)
(cd "$src" && git checkout -q main)
pl_job "$T/j.json" evil-1 tags "$src" "$evil"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 2 "$RC" "exit status for a commit off the ref (invalid request)"
assert_contains "$T/out" "$evil\` is not"
assert_eq invalid "$(jq -r .error.code "$(pl_record evil-1)")" "error code"
assert_eq null "$(jq -c '.phases.build' "$(pl_record evil-1)")" "a build ran"
pl_tag_exists apps/tags "$evil" && fail "the off-ref commit was pushed"
assert_eq "$side" "$(label latest)" "latest after the off-ref job"
# once the mirror has it (from a job of its own branch), still not main
jq '.ref = "refs/heads/unreviewed"' "$T/j.json" >"$T/j2.json"
jq '.id = "evil-2"' "$T/j2.json" >"$T/j.json"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the branch's own job failed"; }
pl_job "$T/j.json" evil-3 tags "$src" "$evil"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 2 "$RC" "exit status for a commit off the ref, in the mirror"
assert_contains "$T/out" "$evil\` is not on \`refs/heads/main\` (its tip is \`$side\`)"
assert_eq "$side" "$(label main)" "main after the off-ref jobs"
assert_eq "$evil" "$(label unreviewed)" "the branch's own tag"
# `latest` follows history, whichever branch built it: the branch's commit
# descends from main's, so its own job moved latest forwards
assert_eq "$evil" "$(label latest)" "latest after the branch's own job"

# --- another branch's older tip never takes a tag back
(cd "$src" && git branch feature "$old")
jq -n --arg repo "$src" --arg commit "$old" \
    '{id: "feature-1", app: "tags", repo: $repo, commit: $commit, ref: "refs/heads/feature"}' >"$T/j.json"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" = 0 ] || { cat "$T/out" "$T/err"; fail "the feature job failed"; }
assert_eq "$old" "$(label feature)" "a new {ref_name} tag"
assert_eq "$evil" "$(label latest)" "latest after an older tip of another branch"
assert_eq '["latest"]' "$(jq -c '[.image.tags_skipped[].tag]' "$(pl_record feature-1)")" "tags left by the feature job"
