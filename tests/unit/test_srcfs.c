/* test_srcfs.c - the source tree written into the scratch disk's ext4
 *
 * A real repository exported through gitsrc into a real image, then checked
 * with e2fsprogs' own tools: `e2fsck -fn` (the writer left a consistent file
 * system) and `debugfs` (names, types, modes, owners, bytes).
 */
#include "support.h"

#include "gitsrc.h"
#include "srcfs.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GITENV "GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent git -c user.name=t -c user.email=t@x "

static void
export_repo (const char *repo, const char *img, uint64_t mib, bvm_error_t *err, int *ret)
{
  struct gitsrc_repo *r = NULL;
  struct srcfs *fs = NULL;
  char commit[GITSRC_OID_HEX + 1];

  assert_ok (gitsrc_head (commit, repo, err), err);
  assert_ok (gitsrc_open_local (&r, repo, err), err);
  *ret = srcfs_create (&fs, img, mib, err);
  if (*ret == 0)
    *ret = gitsrc_export_to (srcfs_sink (fs), r, commit, "src/", NULL, NULL, err);
  if (*ret == 0)
    *ret = srcfs_finish (fs, err);
  srcfs_free (fs);
  gitsrc_repo_free (r);
}

static void
test_tree (void **state)
{
  char *d = t_tmpdir ();
  char repo[512], img[512];
  bvm_error_t err = NULL;
  char *out;
  int ret;
  (void) state;

  snprintf (repo, sizeof repo, "%s/repo", d);
  snprintf (img, sizeof img, "%s/scratch.img", d);
  /* nested directories, an executable, an empty file, a file over one
   * block, fast and slow symlinks, and 400 long names in one directory
   * (more than one directory block: the directory must grow) */
  assert_int_equal (
      t_sh (GITENV
            "init -q -b main %s && cd %s && mkdir -p a/b/c many && echo hi > a/b/c/f && "
            "printf '#!/bin/sh\\n' > run.sh && chmod +x run.sh && : > empty && "
            "head -c 100000 /dev/urandom > big && ln -s a/b/c/f short && "
            "ln -s $(printf 'x%%.0s' $(seq 200)) long && "
            "for i in $(seq 400); do echo $i > many/file-with-a-long-name-number-$i; done && "
            "git add -A && git commit -qm t",
            repo, repo),
      0);
  export_repo (repo, img, 64, &err, &ret);
  assert_ok (ret, &err);

  assert_int_equal (t_sh ("e2fsck -fn '%s' >/dev/null 2>&1", img), 0);
  out = t_sh_out ("debugfs -R 'cat src/a/b/c/f' '%s' 2>/dev/null", img);
  assert_string_equal (out, "hi");
  free (out);
  out = t_sh_out ("debugfs -R 'dump src/big %s/big.out' '%s' >/dev/null 2>&1 && "
                  "cmp %s/big %s/big.out && echo same",
                  d, img, repo, d);
  assert_string_equal (out, "same");
  free (out);
  out = t_sh_out ("debugfs -R 'cat src/many/file-with-a-long-name-number-400' '%s' 2>/dev/null",
                  img);
  assert_string_equal (out, "400");
  free (out);
  out = t_sh_out ("debugfs -R 'ls -l src/many' '%s' 2>/dev/null | grep -c file-with", img);
  assert_string_equal (out, "400");
  free (out);
  /* modes and the build user as owner */
  out = t_sh_out ("debugfs -R 'stat src/run.sh' '%s' 2>/dev/null | grep -o 'Mode:  *[0-7]*'", img);
  assert_string_equal (out, "Mode:  0755");
  free (out);
  out = t_sh_out ("debugfs -R 'stat src/a/b/c/f' '%s' 2>/dev/null | grep -o 'User: *[0-9]*'", img);
  assert_string_equal (out, "User:  1000");
  free (out);
  out = t_sh_out ("debugfs -R 'stat src/a' '%s' 2>/dev/null | grep -o 'Group: *[0-9]*'", img);
  assert_string_equal (out, "Group:  1000");
  free (out);
  out = t_sh_out ("debugfs -R 'stat src/short' '%s' 2>/dev/null | grep -o 'Fast link dest:.*'",
                  img);
  assert_string_equal (out, "Fast link dest: \"a/b/c/f\"");
  free (out);
  out = t_sh_out ("debugfs -R 'stat src/long' '%s' 2>/dev/null | grep -c 'Type: symlink'", img);
  assert_string_equal (out, "1");
  free (out);
  t_tmpdir_free (d);
}

/* A source bigger than the job's disk is the job's error, named as such. */
static void
test_too_big (void **state)
{
  char *d = t_tmpdir ();
  char repo[512], img[512];
  bvm_error_t err = NULL;
  int ret;
  (void) state;

  snprintf (repo, sizeof repo, "%s/repo", d);
  snprintf (img, sizeof img, "%s/scratch.img", d);
  assert_int_equal (t_sh (GITENV "init -q -b main %s && cd %s && "
                                 "head -c 12000000 /dev/urandom > big && git add -A && "
                                 "git commit -qm t",
                          repo, repo),
                    0);
  export_repo (repo, img, 8, &err, &ret);
  assert_true (ret < 0);
  assert_int_equal (bvm_error_get_code (&err), BVM_E_LIMIT);
  assert_non_null (strstr (bvm_error_msg (&err), "does not fit the job's disk_mib"));
  bvm_error_free (&err);
  t_tmpdir_free (d);
}

/* Names ext4 cannot hold are refused by the writer, and a parent that is
 * not a directory is never looked through. */
static void
test_names (void **state)
{
  char *d = t_tmpdir ();
  char img[512], name[300];
  struct srcfs *fs = NULL;
  const struct gitsrc_sink *sk;
  bvm_error_t err = NULL;
  (void) state;

  snprintf (img, sizeof img, "%s/scratch.img", d);
  assert_ok (srcfs_create (&fs, img, 16, &err), &err);
  sk = srcfs_sink (fs);
  assert_ok (sk->ops->entry (sk->ctx, "src", S_IFDIR, 0755, 0, NULL, 0, &err), &err);
  assert_ok (sk->ops->entry (sk->ctx, "src/l", S_IFLNK, 0777, 0, "/etc", 0, &err), &err);
  assert_fails_with (sk->ops->entry (sk->ctx, "src/l/passwd", S_IFREG, 0644, 1, NULL, 0, &err),
                     &err, "is not a directory");
  memset (name, 'n', sizeof name);
  memcpy (name, "src/", 4);
  name[4 + 256] = '\0';
  assert_fails_with (sk->ops->entry (sk->ctx, name, S_IFREG, 0644, 0, NULL, 0, &err), &err,
                     "longer than 255 bytes");
  assert_ok (srcfs_finish (fs, &err), &err);
  srcfs_free (fs);
  assert_int_equal (t_sh ("e2fsck -fn '%s' >/dev/null 2>&1", img), 0);
  t_tmpdir_free (d);
}

/* What the runner adds beside the tree (a Dockerfile job's bases/): root's
 * directories and files, from a buffer and from an fd, read back intact. */
static void
test_add (void **state)
{
  char *d = t_tmpdir ();
  char img[512], blob[512], cmd[1200];
  struct srcfs *fs = NULL;
  bvm_error_t err = NULL;
  char *out;
  int fd;
  (void) state;

  snprintf (img, sizeof img, "%s/scratch.img", d);
  snprintf (blob, sizeof blob, "%s/blob", d);
  assert_int_equal (t_sh ("head -c 3000000 /dev/urandom > '%s'", blob), 0);
  assert_ok (srcfs_create (&fs, img, 64, &err), &err);
  assert_ok (srcfs_add_dir (fs, "bases", 0755, &err), &err);
  assert_ok (srcfs_add_dir (fs, "bases/blobs", 0755, &err), &err);
  assert_ok (srcfs_add_file (fs, "bases/oci-layout", "{}", 2, 0644, &err), &err);
  assert_ok (srcfs_add_file (fs, "bases/empty", "", 0, 0644, &err), &err);
  fd = open (blob, O_RDONLY);
  assert_true (fd >= 0);
  assert_ok (srcfs_add_file_from_fd (fs, "bases/blobs/b", fd, 3000000, 0644, &err), &err);
  /* an fd shorter than it is said to be */
  lseek (fd, 0, SEEK_SET);
  assert_fails_with (srcfs_add_file_from_fd (fs, "bases/blobs/c", fd, 3000001, 0644, &err), &err,
                     "is shorter than 3000001 bytes");
  close (fd);
  srcfs_free (fs);

  /* again, finished this time */
  fs = NULL;
  unlink (img);
  assert_ok (srcfs_create (&fs, img, 64, &err), &err);
  assert_ok (srcfs_add_dir (fs, "bases", 0755, &err), &err);
  assert_ok (srcfs_add_file (fs, "bases/oci-layout", "{}", 2, 0644, &err), &err);
  fd = open (blob, O_RDONLY);
  assert_ok (srcfs_add_file_from_fd (fs, "bases/b", fd, 3000000, 0644, &err), &err);
  close (fd);
  /* a parent that does not exist */
  assert_fails_with (srcfs_add_file (fs, "nope/x", "a", 1, 0644, &err), &err, "nope");
  assert_ok (srcfs_finish (fs, &err), &err);
  srcfs_free (fs);
  assert_int_equal (t_sh ("e2fsck -fn '%s' >/dev/null 2>&1", img), 0);
  out = t_sh_out ("debugfs -R 'cat bases/oci-layout' '%s' 2>/dev/null", img);
  assert_string_equal (out, "{}");
  free (out);
  snprintf (
      cmd, sizeof cmd,
      "debugfs -R 'dump bases/b %s/b.out' '%s' >/dev/null 2>&1 && cmp %s/b.out '%s' && echo same",
      d, img, d, blob);
  out = t_sh_out ("%s", cmd);
  assert_string_equal (out, "same");
  free (out);
  out = t_sh_out ("debugfs -R 'stat bases/b' '%s' 2>/dev/null | grep -o 'User: *[0-9]*'", img);
  assert_string_equal (out, "User:     0");
  free (out);
  out = t_sh_out ("debugfs -R 'stat bases' '%s' 2>/dev/null | grep -o 'Mode: *[0-7]*'", img);
  assert_string_equal (out, "Mode:  0755");
  free (out);
  t_tmpdir_free (d);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_tree),
    cmocka_unit_test (test_too_big),
    cmocka_unit_test (test_names),
    cmocka_unit_test (test_add),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
