#!/bin/bash
# The job's role at every write: a destination outside the app's own prefix
# is denied before anything is sent, the error names the action, the resource
# and the deciding statement, and nothing is written.
. "$(dirname "$0")/lib.sh"

pl_registry
svc_base_images "$REG" "$REG_CREDS" base/busybox:1.35 >/dev/null
app=$T/src
mkdir -p "$app"
cp -r "$ROOT/examples/apps/hello-shell/." "$app/"
commit=$(pl_repo "$app")

# --- the operator's repository template puts the image outside apps/<app>
pl_config '.registry.repository = "shared/{app}"'
pl_job "$T/j.json" pol-1 hello-shell "$app" "$commit"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 3 "$RC" "exit status of a denied job"
assert_contains "$T/out" "denies \`registry:PushImage\` on \`registry:shared/hello-shell:$commit\`"
assert_contains "$T/out" "implicit deny"
assert_eq denied "$(jq -r .error.code "$(pl_record pol-1)")" "error code"
jq -e '.phases.build == null' "$(pl_record pol-1)" >/dev/null || fail "a VM booted for a denied job"
pl_tag_exists shared/hello-shell "$commit" && fail "pushed outside the app's prefix"
[ ! -e "$BUILDVM_HOME/artifacts/apps/hello-shell/$commit" ] || fail "artifacts written"
assert_no_leftovers

# --- the app's spec asks for another app's image as its base
pl_config
jq '.image.base = "apps/other-app:latest"' "$app/buildvm.json" >"$T/s" && mv "$T/s" "$app/buildvm.json"
commit2=$(cd "$app" && git commit -qam "steal a base" && git rev-parse HEAD)
pl_job "$T/j.json" pol-2 hello-shell "$app" "$commit2"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 3 "$RC" "exit status of a denied base pull"
assert_contains "$T/out" "denies \`registry:PullImage\` on \`registry:apps/other-app:latest\`"
pl_tag_exists apps/hello-shell "$commit2" && fail "pushed after a denied pull"
assert_no_leftovers

# --- an operator's tighter role template: artifacts only under reports/
cat >"$T/role.json" <<'JSON'
{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "Push", "Effect": "Allow", "Action": "registry:PushImage", "Resource": "registry:apps/${job:App}:*"},
    {"Sid": "Base", "Effect": "Allow", "Action": "registry:PullImage", "Resource": "registry:base/*"},
    {"Sid": "Reports", "Effect": "Allow", "Action": "artifacts:PutObject", "Resource": "artifacts:apps/${job:App}/${job:Commit}/reports/*"},
    {"Sid": "Logs", "Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "logs:apps/${job:App}/${job:Id}"}
  ]
}
JSON
git -C "$app" checkout -q "$commit"
pl_config ".policies.role = \"$T/role.json\""
pl_job "$T/j.json" pol-3 hello-shell "$app" "$commit"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 3 "$RC" "exit status of a denied artifact"
assert_contains "$T/out" "denies \`artifacts:PutObject\` on \`artifacts:apps/hello-shell/$commit/dist/www/index.html\`"
[ ! -e "$BUILDVM_HOME/artifacts/apps/hello-shell/$commit" ] || fail "artifacts committed after a denial"
pl_tag_exists apps/hello-shell "$commit" && fail "the image was pushed although the job failed"
assert_no_leftovers

# --- an explicit Deny wins, and names its statement
jq '.Statement += [{"Sid": "NoHtml", "Effect": "Deny", "Action": "artifacts:PutObject", "Resource": "artifacts:*.html"}]
    | .Statement[2].Resource = "artifacts:apps/${job:App}/${job:Commit}/*"' "$T/role.json" >"$T/role2.json"
pl_config ".policies.role = \"$T/role2.json\""
pl_job "$T/j.json" pol-4 hello-shell "$app" "$commit"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 3 "$RC" "exit status of an explicit deny"
assert_contains "$T/out" "NoHtml"

# --- with the built-in role the same job goes through
pl_config
pl_job "$T/j.json" pol-5 hello-shell "$app" "$commit"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" = 0 ] || { cat "$T/out"; fail "the built-in role denied a correct job"; }
assert_eq "$(jq -r .role.id "$(pl_record pol-5)" | cut -c1-5)" "role-" "role recorded"
assert_no_leftovers
