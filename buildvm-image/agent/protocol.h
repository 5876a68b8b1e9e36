/* protocol.h - the host/guest contract, shared by the guest agent and the
 * runner (runner/lib/guest.c, which includes this file by path)
 *
 * docs/architecture.md describes the contract; this header is the one place
 * its sizes, names and keys are spelled, so the two sides cannot drift:
 *
 * - The input disk is a tar stream: the control file PROTO_CONTROL_PATH
 *   (NUL-separated records: a key, then its values), secrets under
 *   PROTO_SECRETS_DIR.
 * - The scratch disk is an ext4 the runner made, with the source tree in
 *   its directory PROTO_SOURCE_DIR (mounted on /work: /work/src).
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
 * written the job's input into the input disk and its scratch disk (the
 * source in it) into the scratch disk. A VM without the port is a
 * cold boot, whose input is there from the start. */
#define PROTO_CONTROL_PORT "buildvm.control"
#define PROTO_GO "go\n"
/* The egress channel's virtio-serial port (docs/architecture.md, "Egress"). */
#define PROTO_EGRESS_PORT "buildvm.egress"

/* input disk */
#define PROTO_CONTROL_PATH ".buildvm/job"
#define PROTO_SECRETS_DIR ".buildvm/secrets"

/* scratch disk */
#define PROTO_SOURCE_DIR "src"
/* A Dockerfile job (issue 17): the base images its FROM lines resolved to,
 * pulled by the runner, as an OCI image layout (mounted on /work: /work/bases),
 * each manifest named in index.json by its `org.opencontainers.image.ref.name`
 * annotation (the `base` record's first value). */
#define PROTO_BASES_DIR "bases"

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
/* A Dockerfile job has no `step` records but one `dockerfile` record: the
 * agent builds with buildah, as root in the guest, and reports the three
 * steps below in the result header. Paths are relative to the source
 * directory; target "" builds the last stage. */
#define PROTO_CTL_DOCKERFILE "dockerfile" /* path, context, target */
#define PROTO_CTL_BUILD_ARG "build_arg"   /* name, value */
#define PROTO_CTL_BASE "base" /* ref name in bases/index.json, image name to tag it as */

/* a Dockerfile job's steps, numbered as in the result header */
#define PROTO_DF_STEPS 3
#define PROTO_DF_STEP_1 "load the base images"
#define PROTO_DF_STEP_2 "buildah build"
#define PROTO_DF_STEP_3 "export the image"

/* output tar roots: `image/` (a build's image directory), `artifacts/`, and
 * `oci/` for a Dockerfile job: the built image as an OCI image layout
 * (oci-layout, index.json naming one manifest, blobs/sha256/<hex>), its
 * layers uncompressed tars (the runner compresses what it pushes) */
#define PROTO_OUT_OCI "oci"

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
