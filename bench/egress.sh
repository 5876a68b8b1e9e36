#!/bin/bash
# bench/egress: inside one build VM, download 50 MB from a loopback upstream
# through the agent's proxy and the runner's broker, against reading the
# same 50 MB from the VM's disk, ROUNDS times in the same job. Target: ratio
# <= 2.0. Also: the same download from a web server inside the VM (the
# client and the guest's TCP without the channel), the connection set-up
# time (the runner's authorize + resolve + connect from the job record, and
# CONNECT to 200 as a client in the guest sees it), the guest's wall time
# per small request, and the broker's CPU per MB. BENCH_LOG=FILE keeps the
# job log. docs/performance.md has the numbers and where the time goes.
#
# The disk side reads the same 50 MB that came in on the VM's input disk,
# from the file the agent unpacked it to on the VM's disk (virtio-blk, as
# the input disk), with O_DIRECT: the build user can neither read the raw
# input device nor drop the guest's page cache, and a cached read would
# compare the proxy with a memcpy. The cached read is shown beside it.
. "$(dirname "$0")/lib.sh"
. "$ROOT/tests/lib/services.sh"
SVC_DIR=$B/svc
trap 'svc_stop_all; rm -rf "$B"' EXIT
ROUNDS=${BENCH_ROUNDS:-5}
SMALL=${BENCH_SMALL:-20}

www=$B/www app=$B/app
mkdir -p "$www" "$app" "$SVC_DIR/bench-http"
head -c $((50 << 20)) /dev/urandom >"$www/blob50"
echo small >"$www/small"
cp "$www/blob50" "$app/blob50"
cc -static -O2 -o "$app/egress-flood" "$ROOT/tests/lib/egress-flood.c"
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
# the same client and file from a web server inside the VM, over the guest's
# own loopback: what the download costs without the channel
httpd -p 127.0.0.1:8080 -h . || exit 1
for i in \$(seq $ROUNDS); do
    a=\$(up); wget -q -O /dev/null http://localhost:$port/blob50 || exit 1; b=\$(up)
    dd if=blob50 of=/dev/null bs=1M iflag=direct 2>/dev/null || exit 1; c=\$(up)
    cat blob50 >/dev/null; d=\$(up)
    wget -q -Y off -O /dev/null http://127.0.0.1:8080/blob50 || exit 1; e=\$(up)
    echo "bench-round proxy_cs=\$((b - a)) disk_cs=\$((c - b)) cached_cs=\$((d - c)) local_cs=\$((e - d))"
done
a=\$(up)
for i in \$(seq $SMALL); do wget -q -O /dev/null http://localhost:$port/small || exit 1; done
b=\$(up)
echo "bench-small total_cs=\$((b - a))"
# CONNECT to 200 as a client sees it, 5 x SMALL times: the runner's authorize,
# resolve and connect plus two trips over the channel
./egress-flood $((SMALL * 5)) localhost:$port
SH
jq -n '{profile: "minimal", steps: ["sh bench.sh"]}' >"$app/buildvm.json"
(cd "$app" && git init -q -b main . && git add -A && git -c user.name=b -c user.email=b@example.invalid commit -qm bench)
commit=$(git -C "$app" rev-parse HEAD)
jq -n --arg repo "$app" --arg c "$commit" '{id: "bench-egress", app: "bench", repo: $repo, commit: $c, ref: "refs/heads/main"}' >"$B/job.json"

echo "bench/egress ($ROUNDS rounds of 50 MB, $SMALL small requests, one VM)"
"$BUILDVM" run --config "$B/runner.json" "$B/job.json" >"$B/out" 2>&1 || { cat "$B/out"; exit 1; }
"$BUILDVM" logs --config "$B/runner.json" bench-egress >"$B/log"
[ -z "${BENCH_LOG:-}" ] || cp "$B/log" "$BENCH_LOG" # the job log, kept for a closer look
rec=$BUILDVM_HOME/state/jobs/bench/bench-egress.json
med () { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
proxy_cs=$(grep -o 'proxy_cs=[0-9]*' "$B/log" | cut -d= -f2 | med)
disk_cs=$(grep -o 'disk_cs=[0-9]*' "$B/log" | cut -d= -f2 | med)
cached_cs=$(grep -o 'cached_cs=[0-9]*' "$B/log" | cut -d= -f2 | med)
local_cs=$(grep -o 'local_cs=[0-9]*' "$B/log" | cut -d= -f2 | med)
small_cs=$(grep -o 'total_cs=[0-9]*' "$B/log" | cut -d= -f2)
setup_us=$(grep -o 'setup_us_mean=[0-9]*' "$B/log" | cut -d= -f2)
connect_ms=$(jq '[.egress.connections[].connect_ms] | sort | .[length / 2 | floor]' "$rec")
cpu_ms=$(jq .egress.cpu_ms "$rec")
mb=$(jq '.egress.bytes_in / 1048576' "$rec")
[ "$disk_cs" -gt 0 ] || disk_cs=1 # /proc/uptime counts in 10 ms steps
printf '  %-44s median %6d ms\n' "50 MB through the proxy" $((proxy_cs * 10))
printf '  %-44s median %6d ms\n' "50 MB from the VM's disk (O_DIRECT)" $((disk_cs * 10))
printf '  %-44s median %6d ms\n' "50 MB from the guest's page cache" $((cached_cs * 10))
printf '  %-44s median %6d ms\n' "50 MB by wget from a server in the VM" $((local_cs * 10))
printf '  %-44s %6s ms\n' "connection set-up in the runner (median)" "$connect_ms"
printf '  %-44s %6s ms\n' "connection set-up in the guest (mean)" "$(awk -v u="$setup_us" 'BEGIN { printf "%.1f", u / 1000 }')"
printf '  %-44s %6s ms\n' "small request through the proxy (mean)" "$(awk -v t="$small_cs" -v n="$SMALL" 'BEGIN { printf "%.0f", t * 10 / n }')"
printf '  %-44s %6s ms/MB (%s ms for %.0f MB)\n' "the broker's CPU per MB" \
    "$(awk -v c="$cpu_ms" -v m="$mb" 'BEGIN { printf "%.2f", c / m }')" "$cpu_ms" "$mb"
[ "$local_cs" -gt 0 ] || local_cs=1
printf '  %-44s %6s (the channel alone, not a target)\n' "ratio proxy / server in the VM" "$(ratio "$proxy_cs" "$local_cs")"
verdict "$(ratio "$proxy_cs" "$disk_cs")" 2.0 "ratio proxy / disk"
