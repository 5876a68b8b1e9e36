/* protocol.h - the host/guest contract, shared by the guest agent and the
 * runner (runner/lib/guest.c, which includes this file by path)
 *
 * docs/architecture.md describes the contract; this header is the one place
 * its sizes, names and keys are spelled, so the two sides cannot drift:
 *
 * - The input disk is a tar stream: the control file PROTO_CONTROL_PATH
 *   (NUL-separated records: a key, then its values), the source tree under
 *   PROTO_SOURCE_DIR, secrets under PROTO_SECRETS_DIR.
 * - The agent prints PROTO_READY_LINE on its console once it is up.
 * - The output disk starts with a PROTO_HEADER_SIZE-byte result header:
 *   PROTO_HEADER_MAGIC, then "key value" lines, then "end", NUL-padded;
 *   the output tar follows it.
 *
 * Plain C with no includes: the agent is built static, with no libraries.
 */
#ifndef BUILDVM_AGENT_PROTOCOL_H
#define BUILDVM_AGENT_PROTOCOL_H

#define PROTO_HEADER_SIZE 4096
#define PROTO_MAX_STEPS 64
#define PROTO_MAX_CONTROL (8u << 20)
#define PROTO_READY_LINE "buildvm-agent: ready"

/* A pool VM (booted before its job) has a virtio-serial port of this name;
 * the agent waits on it, after its ready line, for PROTO_GO: the runner has
 * written the job's input into the input disk. A VM without the port is a
 * cold boot, whose input is there from the start. */
#define PROTO_CONTROL_PORT "buildvm.control"
#define PROTO_GO "go\n"
/* The egress channel's virtio-serial port (docs/architecture.md, "Egress"). */
#define PROTO_EGRESS_PORT "buildvm.egress"

/* input disk */
#define PROTO_CONTROL_PATH ".buildvm/job"
#define PROTO_SECRETS_DIR ".buildvm/secrets"
#define PROTO_SOURCE_DIR "src"

/* control file records */
#define PROTO_CONTROL_VERSION "1"
#define PROTO_CTL_VERSION "version"
#define PROTO_CTL_TIMEOUT "timeout"
#define PROTO_CTL_LOG_MAX "log_max"
#define PROTO_CTL_OUTPUT_MAX "output_max"
#define PROTO_CTL_ENV "env"
#define PROTO_CTL_STEP "step" /* timeout, name, command */
#define PROTO_CTL_IMAGE "image"
#define PROTO_CTL_ARTIFACT "artifact"
#define PROTO_CTL_SECRET_ENV "secret_env" /* variable, secret name */

/* result header */
#define PROTO_HEADER_MAGIC "buildvm-output 1\n"
#define PROTO_HDR_STATUS "status"
#define PROTO_HDR_STEP "step"
#define PROTO_HDR_EXIT "exit"
#define PROTO_HDR_SIGNAL "signal"
#define PROTO_HDR_STEPS "steps"
#define PROTO_HDR_ENTRIES "entries"
#define PROTO_HDR_TAR_BYTES "tar_bytes"
#define PROTO_HDR_DURATION_MS "duration_ms"
#define PROTO_HDR_STEP_MS "step_ms" /* step number, milliseconds */
#define PROTO_HDR_MESSAGE "message"
#define PROTO_HDR_END "end"

/* values of PROTO_HDR_STATUS */
#define PROTO_STATUS_OK "ok"
#define PROTO_STATUS_STEP_FAILED "step-failed"
#define PROTO_STATUS_TIMEOUT "timeout"
#define PROTO_STATUS_OUTPUT_ERROR "output-error"
#define PROTO_STATUS_AGENT_ERROR "agent-error"

#endif
