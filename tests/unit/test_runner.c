/* test_runner.c - the small modules around the pipeline and the daemon:
 * image manifests, digests, metrics, fault points, record paths and summaries */
#include "support.h"

#include "buf.h"
#include "config.h"
#include "digest.h"
#include "fault.h"
#include "image.h"
#include "metrics.h"
#include "pipeline.h"
#include "serve.h"
#include "spec.h"
#include "fs.h"

#include <glob.h>
#include "util.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void
test_digest (void **state)
{
  char d[DIGEST_STR_LEN + 1];
  bvm_error_t err = NULL;
  (void) state;
  assert_ok (digest_buffer (d, "abc", 3, &err), &err);
  assert_string_equal (d,
                       "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  assert_null (digest_problem (d));
  assert_non_null (
      digest_problem ("sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
  assert_non_null (digest_problem ("sha256:abc"));
  assert_non_null (
      digest_problem ("md5:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
}

static void
write_manifest (const char *dir, const char *extra_kernel, const char *rootfs_size)
{
  char path[512], body[2048];
  snprintf (path, sizeof path, "%s/minimal.json", dir);
  snprintf (body, sizeof body,
            "{\"schema\": 1, \"profile\": \"minimal\","
            " \"kernel\": {\"path\": \"%s\", \"sha256\": \"sha256:%064d\","
            " \"config_fragment_sha256\": \"sha256:%064d\", \"cmdline\": \"console=ttyS0\"},"
            " \"rootfs\": {\"path\": \"rootfs.ext4\", \"sha256\": \"sha256:%064d\","
            " \"format\": \"ext4\", \"size\": %s},"
            " \"agent_sha256\": \"sha256:%064d\", \"packages\": []}",
            extra_kernel, 0, 0, 0, rootfs_size, 0);
  t_write (path, body);
}

static void
test_image_manifest (void **state)
{
  char *d = t_tmpdir ();
  char p[512];
  struct vm_image *img = NULL;
  bvm_error_t err = NULL;
  (void) state;

  assert_fails_with (image_load (&img, d, "minimal", &err), &err, "make images");
  assert_fails_with (image_load (&img, d, "../etc", &err), &err, "not a valid image profile");
  /* the one profile grammar, also the spec's and the config's (union of
   * the cases of spec.c's former copy) */
  assert_null (image_profile_problem ("debian"));
  assert_null (image_profile_problem ("a-1"));
  assert_null (image_profile_problem ("abcdefghij0123456789abcdefghij01"));
  assert_non_null (image_profile_problem ("abcdefghij0123456789abcdefghij012"));
  assert_non_null (image_profile_problem ("-debian"));
  assert_non_null (image_profile_problem ("Debian"));
  assert_non_null (image_profile_problem ("a_b"));
  assert_non_null (image_profile_problem (""));
  assert_non_null (image_profile_problem (NULL));
  snprintf (p, sizeof p, "%s/vmlinux", d);
  t_write (p, "kernel");
  snprintf (p, sizeof p, "%s/rootfs.ext4", d);
  t_write (p, "rootfs!");
  write_manifest (d, "vmlinux", "7");
  assert_ok (image_load (&img, d, "minimal", &err), &err);
  assert_non_null (strstr (img->kernel, "/vmlinux"));
  /* the recorded digests are checked only by verify: these are zeros */
  assert_fails_with (image_verify (img, &err), &err, "manifest says");
  image_free (img);
  write_manifest (d, "vmlinux", "8");
  assert_fails_with (image_load (&img, d, "minimal", &err), &err, "rebuild the image");
  write_manifest (d, "../../etc/passwd", "7");
  assert_fails_with (image_load (&img, d, "minimal", &err), &err, "relative path inside");
  write_manifest (d, "missing", "7");
  assert_fails_with (image_load (&img, d, "minimal", &err), &err, "No such file");
  t_tmpdir_free (d);
}

static void
test_metrics_render (void **state)
{
  struct metrics *m = NULL;
  struct buf b = BUF_INIT (1 << 20);
  bvm_error_t err = NULL;
  (void) state;

  assert_ok (metrics_new (&m, &err), &err);
  metrics_job (m, "succeeded");
  metrics_job (m, "succeeded");
  metrics_job (m, "no-such-outcome");
  metrics_phase (m, "build", 1.5);
  metrics_phase (m, "build", 0.2);
  metrics_set_depth (m, 4, 1);
  metrics_set_vms (m, 1, 2);
  {
    json_t *eg = json_pack ("{s:[{s:s, s:i, s:i}, {s:s, s:i, s:i}, {s:s, s:i, s:i}]}",
                            "connections", "decision", "allow", "bytes_out", 10, "bytes_in", 2000,
                            "decision", "deny", "bytes_out", 0, "bytes_in", 0, "decision", "allow",
                            "bytes_out", 5, "bytes_in", 1);
    metrics_egress (m, eg);
    metrics_egress (m, NULL);
    json_decref (eg);
  }
  assert_int_equal (metrics_render (m, &b), 0);
  assert_non_null (strstr (b.ptr, "buildvm_egress_connections_total{decision=\"allow\"} 2\n"));
  assert_non_null (strstr (b.ptr, "buildvm_egress_connections_total{decision=\"deny\"} 1\n"));
  assert_non_null (
      strstr (b.ptr, "buildvm_egress_bytes_total{decision=\"allow\",direction=\"in\"} 2001\n"));
  assert_non_null (
      strstr (b.ptr, "buildvm_egress_bytes_total{decision=\"allow\",direction=\"out\"} 15\n"));
  assert_non_null (strstr (b.ptr, "buildvm_jobs_total{outcome=\"succeeded\"} 2\n"));
  assert_non_null (strstr (b.ptr, "buildvm_jobs_total{outcome=\"crashed\"} 0\n"));
  assert_non_null (
      strstr (b.ptr, "buildvm_phase_duration_seconds_bucket{phase=\"build\",le=\"0.25\"} 1\n"));
  assert_non_null (
      strstr (b.ptr, "buildvm_phase_duration_seconds_bucket{phase=\"build\",le=\"2.5\"} 2\n"));
  assert_non_null (
      strstr (b.ptr, "buildvm_phase_duration_seconds_bucket{phase=\"build\",le=\"+Inf\"} 2\n"));
  assert_non_null (strstr (b.ptr, "buildvm_phase_duration_seconds_count{phase=\"build\"} 2\n"));
  assert_non_null (
      strstr (b.ptr, "buildvm_phase_duration_seconds_sum{phase=\"build\"} 1.700000\n"));
  assert_non_null (strstr (b.ptr, "buildvm_queue_depth{state=\"queued\"} 4\n"));
  assert_non_null (strstr (b.ptr, "buildvm_workers_max 2\n"));
  /* the pool: its shapes' gauges, hits, misses, lease to first step */
  assert_null (strstr (b.ptr, "buildvm_pool_vms{"));
  buf_reset (&b);
  metrics_set_pool (m, 0, "minimal/1/1024", 1, 2);
  metrics_set_pool (m, 99, "ignored", 1, 1);
  metrics_pool_hit (m);
  metrics_pool_miss (m, "empty");
  metrics_pool_miss (m, "shape");
  metrics_pool_miss (m, "shape");
  metrics_pool_miss (m, "no-such-reason");
  metrics_first_step (m, true, 0.04);
  metrics_first_step (m, false, 1.2);
  metrics_early_vm (m, true);
  metrics_early_vm (m, true);
  metrics_early_vm (m, false);
  assert_int_equal (metrics_render (m, &b), 0);
  assert_non_null (strstr (b.ptr, "buildvm_early_vms_total{used=\"true\"} 2\n"));
  assert_non_null (strstr (b.ptr, "buildvm_early_vms_total{used=\"false\"} 1\n"));
  assert_non_null (
      strstr (b.ptr, "buildvm_pool_vms{shape=\"minimal/1/1024\",state=\"booting\"} 1\n"));
  assert_non_null (
      strstr (b.ptr, "buildvm_pool_vms{shape=\"minimal/1/1024\",state=\"ready\"} 2\n"));
  assert_null (strstr (b.ptr, "ignored"));
  assert_non_null (strstr (b.ptr, "buildvm_pool_hits_total 1\n"));
  assert_non_null (strstr (b.ptr, "buildvm_pool_misses_total{reason=\"empty\"} 1\n"));
  assert_non_null (strstr (b.ptr, "buildvm_pool_misses_total{reason=\"shape\"} 2\n"));
  assert_non_null (
      strstr (b.ptr, "buildvm_lease_to_first_step_seconds_bucket{vm=\"pool\",le=\"0.025\"} 0\n"));
  assert_non_null (
      strstr (b.ptr, "buildvm_lease_to_first_step_seconds_bucket{vm=\"pool\",le=\"0.1\"} 1\n"));
  assert_non_null (
      strstr (b.ptr, "buildvm_lease_to_first_step_seconds_bucket{vm=\"cold\",le=\"1\"} 0\n"));
  assert_non_null (
      strstr (b.ptr, "buildvm_lease_to_first_step_seconds_bucket{vm=\"cold\",le=\"2.5\"} 1\n"));
  assert_non_null (strstr (b.ptr, "buildvm_lease_to_first_step_seconds_count{vm=\"pool\"} 1\n"));
  assert_non_null (strstr (b.ptr, "# TYPE buildvm_lease_to_first_step_seconds histogram\n"));
  /* every series has its TYPE line before it */
  assert_non_null (strstr (b.ptr, "# TYPE buildvm_phase_duration_seconds histogram\n"));
  buf_dispose (&b);
  assert_fails_with (metrics_listen (m, "localhost:80", &err), &err, "IPv4-ADDRESS:PORT");
  assert_fails_with (metrics_listen (m, "127.0.0.1", &err), &err, "HOST:PORT");
  metrics_free (m);
}

static void
test_fault_points (void **state)
{
  pid_t pid;
  int st;
  (void) state;

  unsetenv ("BUILDVM_FAULT");
  fault_point ("checkout"); /* not armed: nothing happens */
  pid = fork ();
  if (pid == 0)
    {
      setenv ("BUILDVM_FAULT", "after-tag", 1);
      fault_point ("checkout");
      fault_point ("after-tag");
      _exit (0);
    }
  assert_int_equal (waitpid (pid, &st, 0), pid);
  assert_true (WIFSIGNALED (st));
  assert_int_equal (WTERMSIG (st), SIGKILL);
}

static void
test_record_path_and_summary (void **state)
{
  struct runner_config *cfg = NULL;
  bvm_error_t err = NULL;
  char *path = NULL;
  char *out = NULL;
  size_t len = 0;
  FILE *f;
  json_t *rec;
  (void) state;

  setenv ("BUILDVM_HOME", "/tmp/buildvm-test-home", 1);
  assert_ok (config_load (&cfg, NULL, &err), &err);
  /* records are kept per app: ids are unique per app only */
  assert_ok (pipeline_record_path (&path, cfg, "web", "job-1", &err), &err);
  assert_string_equal (path, "/tmp/buildvm-test-home/state/jobs/web/job-1.json");
  free (path);
  assert_fails_with (pipeline_record_path (&path, cfg, "web", "../x", &err), &err,
                     "invalid job id");
  assert_fails_with (pipeline_record_path (&path, cfg, "../web", "x", &err), &err,
                     "invalid job id");
  assert_true (serve_default_concurrency (cfg) >= 1);
  config_free (cfg);
  unsetenv ("BUILDVM_HOME");

  rec = json_pack ("{s:s, s:s, s:s, s:s, s:I, s:{s:s, s:s}, s:{s:{s:I}}}", "id", "j", "app", "a",
                   "commit", "0123456789abcdef0123456789abcdef01234567", "status", "failed",
                   "duration_ms", (json_int_t) 1500, "error", "code", "build", "message",
                   "build step 2 (`test`) failed with exit status 1", "phases", "build", "ms",
                   (json_int_t) 1200);
  f = open_memstream (&out, &len);
  pipeline_print_summary (f, rec);
  fclose (f);
  assert_non_null (strstr (out, "job j (a @ 0123456789ab) failed in 1.5s"));
  assert_non_null (strstr (out, "error     build step 2 (`test`) failed with exit status 1"));
  assert_non_null (strstr (out, "build=1200ms"));
  free (out);
  json_decref (rec);
}

/* every example and hostile app's buildvm.json is a valid spec */
static void
test_example_specs (void **state)
{
  glob_t g;
  size_t n = 0;
  (void) state;

  assert_int_equal (glob ("examples/apps/*/buildvm.json", 0, NULL, &g), 0);
  assert_int_equal (glob ("examples/hostile/*/buildvm.json", GLOB_APPEND, NULL, &g), 0);
  for (size_t i = 0; i < g.gl_pathc; i++)
    {
      char *text = NULL;
      size_t len = 0;
      struct build_spec *spec = NULL;
      bvm_error_t err = NULL;
      assert_ok (fs_read_file (&text, &len, g.gl_pathv[i], 1 << 20, &err), &err);
      if (spec_parse (&spec, text, len, &err) < 0)
        fail_msg ("%s: %s", g.gl_pathv[i], bvm_error_msg (&err));
      spec_free (spec);
      free (text);
      n++;
    }
  globfree (&g);
  assert_true (n >= 11);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_digest),
    cmocka_unit_test (test_image_manifest),
    cmocka_unit_test (test_metrics_render),
    cmocka_unit_test (test_fault_points),
    cmocka_unit_test (test_record_path_and_summary),
    cmocka_unit_test (test_example_specs),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
