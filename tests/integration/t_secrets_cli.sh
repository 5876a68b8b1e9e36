#!/bin/bash
# t_secrets_cli.sh: `buildvm secrets` end to end against the real binary: the
# master key's life cycle, set/list/rm, limits, and that a value never shows
# up in the output, in an error, or in any file of the store.
. "$(dirname "$0")/lib.sh"
[ -x "$BUILDVM" ] || fail "$BUILDVM is not built (make build/buildvm)"

SEC=$BUILDVM_HOME/secrets
KEY=$SEC/master.key
VALUE='tok_Zq8v-3xR7pL2s9Kd'
bvm () { "$BUILDVM" secrets "$@"; }

# expect_fail STATUS STDERR-SUBSTRING CMD...
expect_fail () {
    local want_rc=$1 want=$2
    shift 2
    run "$@"
    [ "$RC" -eq "$want_rc" ] || { cat "$T/err"; fail "$*: exit $RC, expected $want_rc"; }
    assert_contains "$T/err" "$want"
}
no_value_anywhere () {
    assert_not_contains "$T/out" "$VALUE"
    assert_not_contains "$T/err" "$VALUE"
    if grep -r -a -q -F -- "$VALUE" "$BUILDVM_HOME"; then fail "the value is stored in clear"; fi
}

note "--help and usage errors"
run bvm --help
assert_eq 0 "$RC" "secrets --help"
assert_contains "$T/out" "init-master-key"
expect_fail 2 "unknown command \`frob\`" bvm frob
expect_fail 2 "\`set\` takes 2 arguments" bvm set web
expect_fail 2 "--json is for \`list\`" bvm rm --json web X

note "nothing works before the master key exists"
expect_fail 2 "create one with \`buildvm secrets init-master-key\`" bash -c "printf %s '$VALUE' | $BUILDVM secrets set web NPM_TOKEN"
[ ! -e "$SEC/apps" ] || fail "the store was created without a master key"

note "init-master-key: 32 bytes, 0600, never overwritten"
run bvm init-master-key
assert_eq 0 "$RC" "init-master-key"
assert_contains "$T/out" "created master key \`$KEY\`"
assert_eq 32 "$(stat -c %s "$KEY")" "key size"
assert_eq 600 "$(stat -c %a "$KEY")" "key mode"
before=$(sha256sum "$KEY")
expect_fail 2 "already exists: refusing to overwrite it" bvm init-master-key
assert_eq "$before" "$(sha256sum "$KEY")" "key unchanged"

note "set, versions, list"
run bash -c "printf %s '$VALUE' | $BUILDVM secrets set web NPM_TOKEN"
assert_eq 0 "$RC" "set"
assert_contains "$T/out" "secret \`NPM_TOKEN\` of app \`web\`: version 1"
no_value_anywhere
run bash -c "printf %s '$VALUE-2' | $BUILDVM secrets set web NPM_TOKEN"
assert_contains "$T/out" "version 2"
run bash -c "printf %s 'other' | $BUILDVM secrets set web API.KEY"
run bvm list web
assert_eq 0 "$RC" "list"
assert_eq "NAME       VERSION  UPDATED" "$(sed -n 1p "$T/out")" "list header"
grep -qE '^API\.KEY +1 +[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$' "$T/out" || fail "list: $(cat "$T/out")"
grep -qE '^NPM_TOKEN +2 ' "$T/out" || fail "list: $(cat "$T/out")"
no_value_anywhere
run bvm list --json web
assert_eq '["API.KEY",1]["NPM_TOKEN",2]' "$(jq -c '.[] | [.name, .version]' "$T/out" | tr -d '\n')" "list --json"
run bvm list nobody
assert_eq 0 "$RC" "list of an app without secrets"
assert_eq 1 "$(wc -l <"$T/out")" "only the header"
assert_eq 700 "$(stat -c %a "$SEC/apps/web")" "app dir mode"
assert_eq 600 "$(stat -c %a "$SEC/apps/web/NPM_TOKEN.secret")" "secret file mode"

note "bytes are kept exactly; --strip-newline drops one newline"
run bash -c "printf %s 'abcdefgh' | $BUILDVM secrets set web EXACT1"
run bash -c "echo 'abcdefgh' | $BUILDVM secrets set --strip-newline web EXACT2"
assert_eq "" "$(cat "$T/err")" "no warning with --strip-newline"
run bash -c "echo 'abcdefgh' | $BUILDVM secrets set web EXACT3"
assert_contains "$T/err" "the value ends with a newline, which is stored too"
s1=$(stat -c %s "$SEC/apps/web/EXACT1.secret")
s2=$(stat -c %s "$SEC/apps/web/EXACT2.secret")
s3=$(stat -c %s "$SEC/apps/web/EXACT3.secret")
assert_eq "$s1" "$s2" "stripped value has the same length"
assert_eq $((s1 + 1)) "$s3" "unstripped value keeps its newline"
run bash -c "printf 'ab' | $BUILDVM secrets set web SHORT"
assert_eq 0 "$RC" "a short value is stored"
assert_contains "$T/err" "values shorter than 4 bytes are not masked in build logs"

note "limits and names"
run bash -c "head -c 65536 /dev/zero | tr '\\0' x | $BUILDVM secrets set web BIG"
assert_eq 0 "$RC" "64 KiB value"
expect_fail 1 "larger than 65536 bytes" bash -c "head -c 65537 /dev/zero | tr '\\0' x | $BUILDVM secrets set web BIG"
expect_fail 2 "the value on standard input is empty" bash -c "$BUILDVM secrets set web EMPTY </dev/null"
expect_fail 2 "invalid secret name" bash -c "printf x | $BUILDVM secrets set web ../x"
expect_fail 2 "invalid app id" bash -c "printf x | $BUILDVM secrets set Web X"
expect_fail 2 "invalid app id" bvm list ../web

note "damage is reported, never the value"
cp "$SEC/apps/web/NPM_TOKEN.secret" "$T/saved"
printf 'BVMSEC' >"$SEC/apps/web/NPM_TOKEN.secret"
expect_fail 2 "secret \`NPM_TOKEN\` of app \`web\`: the file is corrupt or was tampered with" bvm list web
expect_fail 2 "buildvm secrets rm web NPM_TOKEN" bash -c "printf %s '$VALUE' | $BUILDVM secrets set web NPM_TOKEN"
no_value_anywhere
cp "$T/saved" "$SEC/apps/web/NPM_TOKEN.secret"

note "the master key's permissions"
chmod 644 "$KEY"
expect_fail 2 "is accessible by group or others (mode 0644): chmod 600 it" bvm list web
chmod 600 "$KEY"
chmod 755 "$SEC"
expect_fail 2 "chmod 700 it" bvm list web
chmod 700 "$SEC"

note "rm"
run bvm rm web API.KEY
assert_eq 0 "$RC" "rm"
expect_fail 2 "app \`web\` has no secret \`API.KEY\`" bvm rm web API.KEY
run bvm list web
assert_not_contains "$T/out" "API.KEY"

note "rotate-master-key"
old_id=$(sha256sum "$KEY")
run bvm rotate-master-key
assert_eq 0 "$RC" "rotate"
assert_contains "$T/out" "re-wrapped the keys of 1 app(s)"
[ "$old_id" != "$(sha256sum "$KEY")" ] || fail "the key did not change"
assert_eq "$old_id" "$(sha256sum "$KEY.old" | sed "s|$KEY.old|$KEY|")" "old key kept"
assert_eq 600 "$(stat -c %a "$KEY")" "new key mode"
run bvm list web
assert_eq 0 "$RC" "list with the new key"
run bash -c "printf %s 'after' | $BUILDVM secrets set web NPM_TOKEN"
assert_contains "$T/out" "version 3"
expect_fail 2 "exists from an earlier rotation: remove it first" bvm rotate-master-key
# the old key opens nothing any more
cp "$KEY.old" "$T/old.key"
cat >"$T/runner-old.json" <<JSON
{"secrets": {"dir": "$SEC", "master_key": "$T/old.key"}}
JSON
expect_fail 2 "wrong master key" bash -c "printf x | $BUILDVM secrets --config $T/runner-old.json set web NEW"

note "--config chooses the store"
cat >"$T/runner.json" <<JSON
{"secrets": {"dir": "$T/other-store", "master_key": "$T/keys/other.key"}}
JSON
run bvm --config "$T/runner.json" init-master-key
assert_eq 0 "$RC" "init with --config"
[ -f "$T/keys/other.key" ] || fail "no key at the configured path"
run bash -c "printf %s '$VALUE' | $BUILDVM secrets --config $T/runner.json set app2 TOKEN"
assert_eq 0 "$RC" "set with --config"
[ -f "$T/other-store/apps/app2/TOKEN.secret" ] || fail "not in the configured store"
run bvm list app2
assert_eq 1 "$(wc -l <"$T/out")" "the default store does not have it"
no_value_anywhere

echo "PASS"
