#!/bin/bash
# with-services.sh CMD [ARGS...]: run CMD with a real registry and a real redis
# on 127.0.0.1, started here and stopped afterwards. CMD sees:
#   BUILDVM_TEST_REGISTRY        host:port of a registry with htpasswd auth
#   BUILDVM_TEST_REGISTRY_USER / _PASS   its credentials
#   BUILDVM_TEST_REGISTRY_OPEN   host:port of a registry without auth
#   BUILDVM_TEST_REDIS           host:port of redis-server
#   BUILDVM_TEST_S3_DIR          a Ceph RADOS Gateway (S3 + STS) starting in the
#                                background: svc_ceph_rgw_wait (lib/services.sh)
#                                waits for it. Started for the whole integration
#                                suite, for a named test t_s3*, or
#                                with BUILDVM_TEST_S3=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/services.sh"
trap svc_stop_all EXIT INT TERM

svc_registry auth buildvm-test "test-$$-pass"
svc_registry open
svc_redis main
export BUILDVM_TEST_REGISTRY=$REG_auth_ADDR
export BUILDVM_TEST_REGISTRY_USER=buildvm-test
export BUILDVM_TEST_REGISTRY_PASS=test-$$-pass
export BUILDVM_TEST_REGISTRY_OPEN=$REG_open_ADDR
export BUILDVM_TEST_REDIS=$REDIS_main_ADDR
want_s3=${BUILDVM_TEST_S3:-}
if [ -z "$want_s3" ]; then
    case "$*" in
        *t_s3*) want_s3=1 ;;
        */integration/run.sh | */integration/run.sh\ -j\ [0-9]*) want_s3=1 ;;
    esac
fi
[ "$want_s3" != 1 ] || svc_ceph_rgw_start
"$@"
