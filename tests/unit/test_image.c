/* test_image.c - build VM image manifests: the profiles a directory has,
 * what a missing one says, and the toolchain summary of `image list` */
#include "support.h"

#include "image.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
test_upstream_version (void **state)
{
  static const char *const cases[][2] = {
    { "1:2.39.5-0+deb12u3", "2.39.5" },
    { "18.20.4+dfsg-1~deb12u2", "18.20.4" },
    { "9.2.0~ds1-1", "9.2.0" },
    { "4:12.2.0-3", "12.2.0" },
    { "3.11.2-1+b1", "3.11.2" },
    { "1:1.35.0-4+deb12u1+b1", "1.35.0" },
    { "2:1.17-74", "1.17" },
    { "4.3-4.1", "4.3" },
    { "1.0", "1.0" },           /* native: no revision */
    { "1.2-rc1-3", "1.2-rc1" }, /* the last hyphen starts the revision */
    { "", "" },
  };
  char out[64];
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    {
      image_upstream_version (out, sizeof out, cases[i][0]);
      assert_string_equal (out, cases[i][1]);
    }
  image_upstream_version (out, 4, "12.2.0-3");
  assert_string_equal (out, "12.");
}

static void
test_list (void **state)
{
  char *d = t_tmpdir ();
  char **names = NULL;
  size_t n = 99;
  bvm_error_t err = NULL;
  char path[512];
  (void) state;

  snprintf (path, sizeof path, "%s/missing", d);
  assert_ok (image_list (&names, &n, path, &err), &err);
  assert_int_equal (n, 0);
  assert_null (names[0]);
  strv_free (names);

  /* sorted; not a manifest name, not a profile name, not .json: left out */
  for (const char *const *f = (const char *const[]){ "zeta.json", "debian.json", "minimal.json",
                                                     "Bad.json", ".json", "x.json.tmp", "notes",
                                                     NULL };
       *f; f++)
    {
      snprintf (path, sizeof path, "%s/%s", d, *f);
      t_write (path, "{}");
    }
  assert_ok (image_list (&names, &n, d, &err), &err);
  assert_int_equal (n, 3);
  assert_string_equal (names[0], "debian");
  assert_string_equal (names[1], "minimal");
  assert_string_equal (names[2], "zeta");
  assert_null (names[3]);
  strv_free (names);
  assert_true (image_present (d, "zeta"));
  assert_false (image_present (d, "nosuch"));
  assert_false (image_present (d, "../x"));
  t_tmpdir_free (d);
}

/* An unknown profile is the caller's mistake and names those there are; a
 * shipped one that is not built says how to build it. */
static void
test_not_found (void **state)
{
  char *d = t_tmpdir ();
  struct vm_image *img = NULL;
  bvm_error_t err = NULL;
  char path[512];
  (void) state;

  assert_int_equal (image_load (&img, d, "debain", &err) < 0, 1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
  assert_string_equal (bvm_error_msg (&err), "no build VM image `debain` on this host: it has "
                                             "none (`buildvm image list` shows what each "
                                             "provides)");
  bvm_error_free (&err);
  snprintf (path, sizeof path, "%s/minimal.json", d);
  t_write (path, "{}");
  snprintf (path, sizeof path, "%s/go.json", d);
  t_write (path, "{}");
  assert_int_equal (image_load (&img, d, "debain", &err) < 0, 1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_INVALID);
  assert_string_equal (bvm_error_msg (&err), "no build VM image `debain` on this host: it has "
                                             "`go`, `minimal` (`buildvm image list` shows what "
                                             "each provides)");
  bvm_error_free (&err);
  assert_int_equal (image_load (&img, d, "debian", &err) < 0, 1);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_IO);
  assert_non_null (strstr (bvm_error_msg (&err), "(this host has `go`, `minimal`): build it with "
                                                 "`make image-debian`"));
  bvm_error_free (&err);
  t_tmpdir_free (d);
}

static void
test_toolchains (void **state)
{
  struct vm_image img = { 0 };
  char out[256];
  (void) state;

  img.packages = json_loads ("[{\"name\": \"zlib1g\", \"version\": \"1:1.2.13\"},"
                             " {\"name\": \"nodejs\", \"version\": \"18.20.4+dfsg-1~deb12u2\"},"
                             " {\"name\": \"gcc\", \"version\": \"4:12.2.0-3\"},"
                             " {\"name\": \"default-jdk-headless\", \"version\": \"2:1.17-74\"},"
                             " {\"name\": \"golang-go\", \"version\": \"2:1.19~1\"},"
                             " {\"name\": 5}, {\"version\": \"1\"}]",
                             0, NULL);
  assert_non_null (img.packages);
  image_toolchains (out, sizeof out, &img);
  assert_string_equal (out, "gcc 12.2.0, node 18.20.4, go 1.19, java 17");
  image_toolchains (out, 12, &img); /* cut at a whole entry */
  assert_string_equal (out, "gcc 12.2.0");
  /* Go's release from the package of its line */
  json_array_append_new (img.packages, json_pack ("{s:s, s:s}", "name", "golang-1.19-go",
                                                  "version", "1.19.8-2"));
  image_toolchains (out, sizeof out, &img);
  assert_string_equal (out, "gcc 12.2.0, node 18.20.4, go 1.19.8, java 17");
  json_decref (img.packages);
  img.packages = json_array ();
  image_toolchains (out, sizeof out, &img);
  assert_string_equal (out, "");
  json_decref (img.packages);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_upstream_version),
    cmocka_unit_test (test_list),
    cmocka_unit_test (test_not_found),
    cmocka_unit_test (test_toolchains),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
