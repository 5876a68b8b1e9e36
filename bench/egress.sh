#!/bin/bash
# bench/egress: inside one build VM, download 50 MB from a loopback upstream
# through the agent's proxy and the runner's broker, against reading the
# same 50 MB from the source tree the input disk delivered, ROUNDS times in
# the same job. Target: ratio <= 2.0. Also: the median connection set-up
# time (the runner's authorize + resolve + connect, from the job record),
# the guest's wall time per small request, and the broker's CPU per MB.
#
# The disk side reads a file the agent has just unpacked, so mostly from the
# guest's page cache: the build user cannot drop caches or read the raw
# input device. It is the fastest way a build gets those bytes.
. "$(dirname "$0")/lib.sh"
. "$ROOT/tests/lib/services.sh"
SVC_DIR=$B/svc
trap 'svc_stop_all; rm -rf "$B"' EXIT
ROUNDS=${BENCH_ROUNDS:-3}
SMALL=${BENCH_SMALL:-20}

www=$B/www app=$B/app
mkdir -p "$www" "$app" "$SVC_DIR/bench-http"
head -c $((50 << 20)) /dev/urandom >"$www/blob50"
echo small >"$www/small"
cp "$www/blob50" "$app/blob50"
port=$(svc_free_port)
(cd "$www" && exec python3 -m http.server --bind 127.0.0.1 "$port") >"$B/http.log" 2>&1 &
echo $! >"$SVC_DIR/bench-http/pid"
svc_wait_port "$port"

jq --arg p "$port" '(.Statement[] | select(.Sid == "EgressWebPorts") | .Resource) += ["net:*:\($p)"]' \
    "$ROOT/policies/boundary.json" >"$B/boundary.json"
jq -n --arg home "$BUILDVM_HOME" --arg images "$BUILDVM_IMAGES" --arg b "$B/boundary.json" --arg p "$port" \
    '{home: $home, images: {dir: $images}, policies: {boundary: $b},
      limits: {max_source_bytes: 268435456},
      egress: {allow: ["localhost:\($p)"], allow_addresses: ["127.0.0.1/32"]}}' >"$B/runner.json"

cat >"$app/bench.sh" <<SH
up () { cut -d' ' -f1 /proc/uptime | tr -d .; }   # centiseconds
unset no_proxy NO_PROXY   # localhost is the host's here, through the proxy
for i in \$(seq $ROUNDS); do
    a=\$(up); wget -q -O /dev/null http://localhost:$port/blob50 || exit 1; b=\$(up)
    cat blob50 >/dev/null; c=\$(up)
    echo "bench-round proxy_cs=\$((b - a)) disk_cs=\$((c - b))"
done
a=\$(up)
for i in \$(seq $SMALL); do wget -q -O /dev/null http://localhost:$port/small || exit 1; done
b=\$(up)
echo "bench-small total_cs=\$((b - a))"
SH
jq -n '{profile: "minimal", steps: ["sh bench.sh"]}' >"$app/buildvm.json"
(cd "$app" && git init -q -b main . && git add -A && git -c user.name=b -c user.email=b@example.invalid commit -qm bench)
commit=$(git -C "$app" rev-parse HEAD)
jq -n --arg repo "$app" --arg c "$commit" '{id: "bench-egress", app: "bench", repo: $repo, commit: $c, ref: "refs/heads/main"}' >"$B/job.json"

echo "bench/egress ($ROUNDS rounds of 50 MB, $SMALL small requests, one VM)"
"$BUILDVM" run --config "$B/runner.json" "$B/job.json" >"$B/out" 2>&1 || { cat "$B/out"; exit 1; }
"$BUILDVM" logs --config "$B/runner.json" bench-egress >"$B/log"
rec=$BUILDVM_HOME/state/jobs/bench-egress.json
med () { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
proxy_cs=$(grep -o 'proxy_cs=[0-9]*' "$B/log" | cut -d= -f2 | med)
disk_cs=$(grep -o 'disk_cs=[0-9]*' "$B/log" | cut -d= -f2 | med)
small_cs=$(grep -o 'total_cs=[0-9]*' "$B/log" | cut -d= -f2)
connect_ms=$(jq '[.egress.connections[].connect_ms] | sort | .[length / 2 | floor]' "$rec")
cpu_ms=$(jq .egress.cpu_ms "$rec")
mb=$(jq '.egress.bytes_in / 1048576' "$rec")
[ "$disk_cs" -gt 0 ] || disk_cs=1 # /proc/uptime counts in 10 ms steps
printf '  %-44s median %6d ms\n' "50 MB through the proxy" $((proxy_cs * 10))
printf '  %-44s median %6d ms\n' "50 MB from the source tree (disk)" $((disk_cs * 10))
printf '  %-44s %6s ms\n' "connection set-up in the runner (median)" "$connect_ms"
printf '  %-44s %6s ms\n' "small request through the proxy (mean)" "$(awk -v t="$small_cs" -v n="$SMALL" 'BEGIN { printf "%.0f", t * 10 / n }')"
printf '  %-44s %6s ms/MB (%s ms for %.0f MB)\n' "the broker's CPU per MB" \
    "$(awk -v c="$cpu_ms" -v m="$mb" 'BEGIN { printf "%.2f", c / m }')" "$cpu_ms" "$mb"
verdict "$(ratio "$proxy_cs" "$disk_cs")" 2.0 "ratio proxy / disk"
