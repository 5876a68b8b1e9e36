#!/bin/bash
# A build that fails, a missing or invalid spec, an invalid deploy request:
# clear errors, the right exit status, nothing pushed, the record says why.
. "$(dirname "$0")/lib.sh"

pl_registry
pl_config

mkapp () { # DIR SPEC-JSON: a minimal-profile app with the given buildvm.json
    mkdir -p "$1"
    printf '%s\n' "$2" >"$1/buildvm.json"
    echo "hello" >"$1/README"
    pl_repo "$1"
}

# --- a build step fails: no push, the record names the step, the log has its output
# the summary and the record carry the failed step's last lines (20 of them),
# without the agent's own marker lines
c=$(mkapp "$T/fails" '{"profile": "minimal",
  "steps": [{"name": "ok", "run": "echo step one ran"},
            {"name": "compile", "run": "seq 1 30; echo compiler says no >&2; exit 3"},
            {"name": "never", "run": "echo must not run"}],
  "image": {"from": "."}}')
pl_job "$T/j.json" fail-1 failing "$T/fails" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 4 "$RC" "exit status of a failed build"
assert_contains "$T/out" "build step 2 (\`compile\`) failed with exit status 3"
assert_eq "  output    the last 20 of 31 lines of step 2 (\`compile\`), all in the log:
            | 12" "$(grep -A1 '^  output' "$T/out")" "the summary's output lines"
assert_eq "            | compiler says no" "$(grep -A20 '^  output' "$T/out" | tail -1)" "the last line"
assert_not_contains "$T/out" "  hint "
rec=$(pl_record fail-1)
assert_eq failed "$(jq -r .status "$rec")" "status"
assert_eq build "$(jq -r .error.code "$rec")" "error code"
assert_eq '{"exit_code":3,"index":2,"name":"compile","output_lines":31}' \
    "$(jq -c -S '.failed_step | del(.output_tail)' "$rec")" "failed step"
assert_eq "$(seq 12 30 | jq -R . | jq -s -c '. + ["compiler says no"]')" \
    "$(jq -c .failed_step.output_tail "$rec")" "the record's tail"
"$BUILDVM" logs fail-1 >"$T/log" 2>&1
assert_contains "$T/log" "step one ran"
assert_contains "$T/log" "compiler says no"
assert_not_contains "$T/log" "must not run"
pl_tag_exists apps/failing "$c" && fail "a failed build was pushed"
[ ! -e "$BUILDVM_HOME/artifacts/apps/failing" ] || fail "a failed build stored artifacts"
assert_no_leftovers

# --- refs/heads/main asked of a repository that has only master: said
# plainly, before any VM (a spec error: exit 2, never retried)
c=$(mkapp "$T/master" '{"profile": "minimal", "steps": ["true"]}')
git -C "$T/master" branch -m main master
pl_job "$T/j.json" master-1 master "$T/master" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 2 "$RC" "exit status of a ref the repository does not have"
assert_contains "$T/out" "has no branch \`main\`, only \`master\`: ask for \`refs/heads/master\`"
assert_eq invalid "$(jq -r .error.code "$(pl_record master-1)")" "error code"

# --- a step that runs past its timeout
c=$(mkapp "$T/slow" '{"profile": "minimal", "steps": [{"name": "hang", "run": "sleep 600", "timeout": 2}]}')
pl_job "$T/j.json" slow-1 slow "$T/slow" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 5 "$RC" "exit status of a timeout"
assert_eq timeout "$(jq -r .error.code "$(pl_record slow-1)")" "error code"
assert_eq hang "$(jq -r .failed_step.name "$(pl_record slow-1)")" "timed-out step"
assert_contains "$T/out" "  output    step 1 (\`hang\`) printed nothing"

# --- a step that needs the network: the tail shows the failed lookup, the
# hint says there is no network and how to ask for egress
c=$(mkapp "$T/net" '{"profile": "minimal", "steps": [{"name": "fetch", "run": "wget -q -O- http://registry.npmjs.org/"}]}')
pl_job "$T/j.json" net-1 net "$T/net" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 4 "$RC" "exit status of a build without network"
assert_eq "  output    step 1 (\`fetch\`) printed:
            | wget: bad address 'registry.npmjs.org'" "$(grep -A1 '^  output' "$T/out")" "the failed lookup"
hint="the build VM has no network: a step reaches other hosts only through the egress proxy, and only those its role allows: ask for them in buildvm.json (\`\"egress\": [\"registry.npmjs.org:443\"]\`) or in runner.json's \`egress.allow\` (docs/getting-started.md, \"A build that needs the network\")"
assert_contains "$T/out" "  hint      $hint"
assert_eq "$hint" "$(jq -r .failed_step.hint "$(pl_record net-1)")" "the record's hint"
"$BUILDVM" logs net-1 >"$T/log" 2>&1
assert_contains "$T/log" "[buildvm] hint: $hint"
assert_no_leftovers

# --- no buildvm.json in the commit
mkdir -p "$T/nospec" && echo x >"$T/nospec/file"
c=$(pl_repo "$T/nospec")
pl_job "$T/j.json" nospec-1 nospec "$T/nospec" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 2 "$RC" "exit status without a spec"
assert_contains "$T/out" "has no \`buildvm.json\` at its root"
assert_eq failed "$(jq -r .status "$(pl_record nospec-1)")" "status"
assert_no_leftovers

# --- an invalid spec: the message names the field
c=$(mkapp "$T/badspec" '{"profile": "minimal", "steps": ["true"], "resources": {"memory_mib": "lots"}}')
pl_job "$T/j.json" badspec-1 badspec "$T/badspec" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 2 "$RC" "exit status with an invalid spec"
assert_contains "$T/out" "resources.memory_mib"
c=$(mkapp "$T/greedy" '{"profile": "minimal", "steps": ["true"], "resources": {"memory_mib": 1000000}}')
pl_job "$T/j.json" greedy-1 greedy "$T/greedy" "$c"
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
assert_eq 2 "$RC" "exit status of a spec over the limits"
assert_contains "$T/out" "exceeds the runner limit"
assert_no_leftovers

# --- invalid deploy requests never start anything
for bad in '{"id":"x","app":"Bad_App","repo":"/r","commit":"'"$c"'","ref":"refs/heads/main"}' \
           '{"id":"x","app":"ok","repo":"/r","commit":"main","ref":"refs/heads/main"}' \
           '{"id":"x","app":"ok","repo":"/r","commit":"'"$c"'","ref":"refs/heads/main","app":"dup"}' \
           '{"id":"x","app":"ok","repo":"ssh://h/r","commit":"'"$c"'","ref":"refs/heads/main"}'; do
    printf '%s' "$bad" >"$T/bad.json"
    run "$BUILDVM" run --config "$CONFIG" "$T/bad.json"
    assert_eq 2 "$RC" "exit status of an invalid request"
    assert_contains "$T/err" "deploy request"
done
[ -z "$(ls "$BUILDVM_HOME"/state/jobs/*/x.json 2>/dev/null)" ] || fail "an invalid request left a record"

# --- a commit that is not in the repository
pl_job "$T/j.json" missing-1 greedy "$T/greedy" 0123456789012345678901234567890123456789
run "$BUILDVM" run --config "$CONFIG" "$T/j.json"
[ "$RC" != 0 ] || fail "a missing commit succeeded"
assert_contains "$T/out" "0123456789012345678901234567890123456789"
assert_no_leftovers
