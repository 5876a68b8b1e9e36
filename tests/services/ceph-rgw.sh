#!/bin/bash
# ceph-rgw.sh start DIR | stop DIR: a single-node Ceph cluster (one monitor, one
# memstore OSD, no manager) with a RADOS Gateway on 127.0.0.1, for the tests.
#
#   start DIR  creates the cluster under DIR (a fresh, empty directory) and
#              writes DIR/env: RGW_ENDPOINT, RGW_REGION, RGW_BUCKET,
#              RGW_OWNER_KEY/_SECRET (owns the bucket, full S3 access),
#              RGW_RUNNER_KEY/_SECRET (may only call sts:AssumeRole),
#              RGW_ROLE_ARN (the role the runner assumes per job),
#              RGW_OWNER_ID (the bucket owner's canonical id), RGW_S3CFG (an
#              s3cmd config with the owner's key), RGW_CEPH_CONF (for rados).
#   stop DIR   stops every daemon started under DIR.
#
# cephx is off (auth none): the cluster listens on 127.0.0.1 only and lives
# as long as the test run. S3 authentication (SigV4, STS) is RGW's own and
# is fully on. RGW 16 has no SSE-S3 (it ignores `x-amz-server-side-encryption:
# AES256`) and SSE-KMS needs a KMS: the gateway encrypts every object at rest
# with `rgw crypt default encryption key` instead (a fixed key in ceph.conf,
# which RGW documents as for testing), so a test can check the bytes in RADOS. The start takes
# about 20 s on two cores (mon + OSD ~6 s, radosgw creating its pools ~8 s,
# users, role and bucket ~4 s). CEPH_RGW_BUDGET (seconds, default 90) bounds the start.
set -euo pipefail

cmd=${1:?usage: ceph-rgw.sh start|stop DIR}
dir=${2:?usage: ceph-rgw.sh start|stop DIR}

free_port () {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

stop () {
    local p
    for p in "$dir"/run/*.pid; do
        [ -f "$p" ] || continue
        kill "$(cat "$p")" 2>/dev/null || true
    done
    sleep 0.2
    for p in "$dir"/run/*.pid; do
        [ -f "$p" ] || continue
        kill -9 "$(cat "$p")" 2>/dev/null || true
        rm -f "$p"
    done
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "ceph-rgw.sh: unknown command $cmd" >&2; exit 2; }

budget=${CEPH_RGW_BUDGET:-90}
t0=$(date +%s)
deadline=$(( t0 + budget ))
left () { echo $(( deadline - $(date +%s) )); }
fail () {
    echo "ceph-rgw: $*" >&2
    for f in "$dir"/log/*.log; do
        [ -f "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
    done
    stop
    exit 1
}
trap 'fail "start failed (line $LINENO)"' ERR

mkdir -p "$dir"/{mon,osd,run,log}
mon_port=$(free_port)
rgw_port=$(free_port)
fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
conf=$dir/ceph.conf
sts_key=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
kms_key=$(head -c 32 /dev/urandom | base64 -w0)

cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
mon initial members = a
public network = 127.0.0.1/32
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
run dir = $dir/run
admin socket = $dir/run/\$cluster-\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
debug ms = 0
ms bind ipv6 = false
ms bind msgr2 = false
err to stderr = false
log to stderr = false

[mon]
mon data = $dir/mon/\$name
mon cluster log file = $dir/log/cluster.log

[osd]
osd data = $dir/osd/\$name
osd objectstore = memstore
memstore device bytes = 2147483648
osd max object name len = 460
osd max object namespace len = 64

[client]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
rgw dns name = 127.0.0.1
rgw sts key = $sts_key
rgw s3 auth use sts = true
rgw enable usage log = false
rgw crypt require ssl = false
rgw crypt default encryption key = $kms_key
rgw max chunk size = 4194304
rgw thread pool size = 64
rgw gc processor period = 3600
rgw lc debug interval = 0
CONF
export CEPH_CONF=$conf

ceph() { command ceph -c "$conf" --connect-timeout "$(left)" "$@"; }

# monitor
monmaptool --create --clobber --fsid "$fsid" --addv a "[v1:127.0.0.1:$mon_port]" \
    "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" >/dev/null 2>&1 || fail "ceph-mon --mkfs"
ceph-mon -c "$conf" -i a
ceph osd set-require-min-compat-client luminous >/dev/null 2>&1 || true

# one memstore OSD
uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
id=$(ceph osd new "$uuid")
mkdir -p "$dir/osd/osd.$id"
ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$uuid" >/dev/null 2>&1 || fail "ceph-osd --mkfs"
ceph-osd -c "$conf" -i "$id"
until ceph osd dump 2>/dev/null | grep -q "^osd.$id up"; do
    [ "$(left)" -gt 0 ] || fail "osd.$id did not come up in ${budget}s"
    sleep 0.2
done
echo "ceph-rgw: mon+osd up in $(( $(date +%s) - t0 ))s" >&2

# the gateway (it creates its pools on first start)
mkdir -p "$dir/rgw"
radosgw -c "$conf" -n client.rgw.a
until curl -sf -o /dev/null "http://127.0.0.1:$rgw_port/"; do
    [ "$(left)" -gt 0 ] || fail "radosgw did not answer on 127.0.0.1:$rgw_port in ${budget}s"
    sleep 0.1
done
echo "ceph-rgw: radosgw up in $(( $(date +%s) - t0 ))s" >&2

rgwadmin () { radosgw-admin -c "$conf" -n client.admin "$@" >/dev/null 2>>"$dir/log/radosgw-admin.log"; }
rand () { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
owner_key=OWNER$(rand 8 | tr a-f A-F); owner_secret=$(rand 20)
runner_key=RUNNER$(rand 7 | tr a-f A-F); runner_secret=$(rand 20)
bucket=buildvm-artifacts
role=buildvm-job
# the bucket's owner: what an operator (and the tests' independent checks) use
rgwadmin user create --uid=owner --display-name=owner --access-key="$owner_key" --secret-key="$owner_secret"
# the runner: it may only call STS (roles=* lets it read the role to assume)
rgwadmin user create --uid=buildvm-runner --display-name=buildvm-runner \
    --access-key="$runner_key" --secret-key="$runner_secret" --caps="roles=*"
rgwadmin role create --role-name="$role" --assume-role-policy-doc="$(cat <<JSON
{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam:::user/buildvm-runner"]},"Action":["sts:AssumeRole"]}]}
JSON
)"
rgwadmin role-policy put --role-name="$role" --policy-name=artifacts --policy-doc="$(cat <<JSON
{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:PutObject","s3:GetObject","s3:AbortMultipartUpload"],"Resource":["arn:aws:s3:::$bucket/*"]}]}
JSON
)"
cat >"$dir/s3cfg" <<S3CFG
[default]
access_key = $owner_key
secret_key = $owner_secret
host_base = 127.0.0.1:$rgw_port
host_bucket = 127.0.0.1:$rgw_port
use_https = False
signature_v2 = False
S3CFG
s3cmd -c "$dir/s3cfg" mb "s3://$bucket" >/dev/null
{
    echo "RGW_ENDPOINT=http://127.0.0.1:$rgw_port"
    echo "RGW_REGION=default"
    echo "RGW_BUCKET=$bucket"
    echo "RGW_OWNER_KEY=$owner_key"
    echo "RGW_OWNER_SECRET=$owner_secret"
    echo "RGW_OWNER_ID=owner"
    echo "RGW_RUNNER_KEY=$runner_key"
    echo "RGW_RUNNER_SECRET=$runner_secret"
    echo "RGW_ROLE_ARN=arn:aws:iam:::role/$role"
    echo "RGW_CEPH_CONF=$conf"
    echo "RGW_S3CFG=$dir/s3cfg"
} >"$dir/env.tmp"
mv "$dir/env.tmp" "$dir/env"
echo "ceph-rgw: ready in $(( $(date +%s) - t0 ))s on 127.0.0.1:$rgw_port" >&2
