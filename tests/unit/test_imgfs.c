/* test_imgfs.c - an image's layers as a file tree, and whether it can start
 *
 * The ELF headers here are built byte by byte from the ELF64 layout (not
 * with <elf.h>'s structs), and one test reads the interpreter of the real
 * /bin/sh of this machine, as the kernel would.
 */
#include "support.h"

#include "imgfs.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A minimal ELF64 little-endian header with one PT_INTERP program header
 * naming `interp` (NULL: a static binary, PT_LOAD only). */
static size_t
elf64 (unsigned char *out, size_t size, const char *interp)
{
  size_t ilen = interp ? strlen (interp) + 1 : 0;
  assert_true (size >= 0x100 + ilen);
  memset (out, 0, 0x100 + ilen);
  memcpy (out, "\177ELF", 4);
  out[4] = 2; /* ELFCLASS64 */
  out[5] = 1; /* little-endian */
  out[6] = 1;
  out[16] = 2;              /* ET_EXEC */
  out[18] = 0x3e;           /* x86-64 */
  out[32] = 64;             /* e_phoff */
  out[54] = 56;             /* e_phentsize */
  out[56] = 1;              /* e_phnum */
  out[64] = interp ? 3 : 1; /* p_type: PT_INTERP or PT_LOAD */
  out[64 + 8] = 0x00;       /* p_offset = 0x100 */
  out[64 + 9] = 0x01;
  out[64 + 32] = (unsigned char) ilen; /* p_filesz */
  if (interp)
    memcpy (out + 0x100, interp, ilen);
  return 0x100 + ilen;
}

static struct imgfs *
debian_like (void)
{
  struct imgfs *fs = NULL;
  bvm_error_t err = NULL;
  unsigned char elf[512];
  size_t n;

  assert_ok (imgfs_new (&fs, &err), &err);
  imgfs_next_layer (fs);
  /* merged /usr: /bin and /lib64 are symlinks */
  assert_ok (imgfs_add (fs, "./", S_IFDIR, 0755, NULL, NULL, 0, &err), &err);
  assert_ok (imgfs_add (fs, "./bin", S_IFLNK, 0777, "usr/bin", NULL, 0, &err), &err);
  assert_ok (imgfs_add (fs, "./lib64", S_IFLNK, 0777, "usr/lib64", NULL, 0, &err), &err);
  assert_ok (imgfs_add (fs, "./usr/lib64/ld-linux-x86-64.so.2", S_IFLNK, 0777,
                        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", NULL, 0, &err),
             &err);
  assert_ok (imgfs_add (fs, "./lib", S_IFLNK, 0777, "usr/lib", NULL, 0, &err), &err);
  n = elf64 (elf, sizeof elf, NULL);
  assert_ok (imgfs_add (fs, "./usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", S_IFREG, 0755, NULL,
                        elf, n, &err),
             &err);
  n = elf64 (elf, sizeof elf, "/lib64/ld-linux-x86-64.so.2");
  assert_ok (imgfs_add (fs, "./usr/bin/dash", S_IFREG, 0755, NULL, elf, n, &err), &err);
  assert_ok (imgfs_add (fs, "./usr/bin/sh", S_IFLNK, 0777, "dash", NULL, 0, &err), &err);
  assert_ok (imgfs_add (fs, "usr/bin/node", S_IFREG, 0755, NULL, elf, n, &err), &err);
  assert_ok (imgfs_add (fs, "usr/bin/nodejs", 0, 0755, "usr/bin/node", NULL, 0, &err), &err);
  assert_ok (imgfs_add (fs, "usr/share/doc/README", S_IFREG, 0644, NULL, NULL, 0, &err), &err);
  assert_ok (imgfs_add (fs, "etc/loop", S_IFLNK, 0777, "loop", NULL, 0, &err), &err);
  return fs;
}

#define START(fs, argv0, path, wd) imgfs_check_start (fs, argv0, path, wd, why, sizeof why, &fix)

static void
test_resolves (void **state)
{
  struct imgfs *fs = debian_like ();
  char why[1024];
  const char *fix;
  (void) state;

  assert_int_equal (START (fs, "/bin/sh", NULL, NULL), 0); /* two links, then dash's ld.so */
  assert_int_equal (START (fs, "sh", NULL, NULL), 0);      /* through the default PATH */
  assert_int_equal (START (fs, "node", "/usr/bin", NULL), 0);
  assert_int_equal (START (fs, "nodejs", "/usr/bin", NULL), 0); /* a hard link */
  assert_int_equal (START (fs, "../bin/node", NULL, "/usr/share"), 0);
  assert_int_equal (START (fs, "/../../usr/./bin//node", NULL, NULL), 0);

  assert_int_equal (START (fs, "python3", NULL, NULL), 1);
  assert_string_equal (why, "`python3` is in none of the image's PATH directories "
                            "(/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)");
  assert_string_equal (fix, "put it in the app's layer (`image.from`) or build on a base image "
                            "that has it (`image.base`)");
  assert_int_equal (START (fs, "node", "/opt/bin:", "/"), 1); /* "" is the working directory */
  assert_int_equal (START (fs, "/bin/httpd", NULL, NULL), 1);
  assert_string_equal (why, "`/bin/httpd` is not in the image: `/usr/bin/httpd` does not exist");
  assert_int_equal (START (fs, "/usr/share/doc/README", NULL, NULL), 1);
  assert_string_equal (why, "`/usr/share/doc/README` is not executable (mode 0644)");
  assert_string_equal (fix, "make it executable in the build (`chmod +x`)");
  assert_int_equal (START (fs, "/usr/bin", NULL, NULL), 1);
  assert_string_equal (why, "`/usr/bin` is a directory");
  assert_int_equal (START (fs, "/usr/bin/node/x", NULL, NULL), 1);
  assert_string_equal (why, "`/usr/bin/node/x` is not in the image: `/usr/bin/node` is not a "
                            "directory");
  assert_int_equal (START (fs, "/etc/loop", NULL, NULL), 1);
  assert_string_equal (why, "`/etc/loop` is not in the image: `/etc/loop` is a symlink loop");
  assert_int_equal (START (fs, "", NULL, NULL), 1);
  imgfs_free (fs);
}

static void
test_interpreters (void **state)
{
  struct imgfs *fs = NULL;
  bvm_error_t err = NULL;
  unsigned char elf[512];
  char why[1024];
  const char *fix;
  size_t n;
  (void) state;

  /* a busybox-like base: static, no C library */
  assert_ok (imgfs_new (&fs, &err), &err);
  imgfs_next_layer (fs);
  n = elf64 (elf, sizeof elf, NULL);
  assert_ok (imgfs_add (fs, "bin/busybox", S_IFREG, 0755, NULL, elf, n, &err), &err);
  assert_ok (imgfs_add (fs, "bin/sh", S_IFLNK, 0777, "busybox", NULL, 0, &err), &err);
  imgfs_next_layer (fs); /* the app's layer */
  n = elf64 (elf, sizeof elf, "/lib64/ld-linux-x86-64.so.2");
  assert_ok (imgfs_add (fs, "app/darkhttpd", S_IFREG, 0755, NULL, elf, n, &err), &err);
  assert_ok (imgfs_add (fs, "app/run.sh", S_IFREG, 0755, NULL, "#!/bin/sh -e\necho\n", 18, &err),
             &err);
  assert_ok (imgfs_add (fs, "app/run.bash", S_IFREG, 0755, NULL, "#! /bin/bash\n", 13, &err),
             &err);
  assert_ok (imgfs_add (fs, "app/chain", S_IFREG, 0755, NULL, "#!/app/run.sh\n", 14, &err), &err);
  assert_ok (imgfs_add (fs, "app/nolf", S_IFREG, 0755, NULL, "#!", 2, &err), &err);

  assert_int_equal (START (fs, "/app/darkhttpd", NULL, NULL), 1);
  assert_string_equal (why, "`/app/darkhttpd` is dynamically linked, and its interpreter "
                            "`/lib64/ld-linux-x86-64.so.2` is not in the image: `/lib64` does "
                            "not exist");
  assert_non_null (strstr (fix, "link it statically"));
  assert_int_equal (START (fs, "/app/run.sh", NULL, NULL), 0);
  assert_int_equal (START (fs, "/app/chain", NULL, NULL), 0);
  assert_int_equal (START (fs, "/app/run.bash", NULL, NULL), 1);
  assert_string_equal (why, "`/app/run.bash` starts with `#!/bin/bash`, which is not in the "
                            "image: `/bin/bash` does not exist");
  assert_int_equal (START (fs, "/app/nolf", NULL, NULL), 0); /* the kernel's ENOEXEC: not ours */
  imgfs_free (fs);
}

static void
test_whiteouts (void **state)
{
  struct imgfs *fs = debian_like ();
  bvm_error_t err = NULL;
  char why[1024];
  const char *fix;
  (void) state;

  imgfs_next_layer (fs);
  assert_ok (imgfs_add (fs, "usr/bin/.wh.node", S_IFREG, 0644, NULL, NULL, 0, &err), &err);
  assert_int_equal (START (fs, "/usr/bin/node", NULL, NULL), 1);
  assert_int_equal (START (fs, "/usr/bin/dash", NULL, NULL), 0);
  /* an opaque directory hides the lower layers' contents, not its own */
  assert_ok (imgfs_add (fs, "usr/bin/tool", S_IFREG, 0755, NULL, NULL, 0, &err), &err);
  assert_ok (imgfs_add (fs, "usr/bin/.wh..wh..opq", S_IFREG, 0644, NULL, NULL, 0, &err), &err);
  assert_int_equal (START (fs, "/usr/bin/dash", NULL, NULL), 1);
  assert_int_equal (START (fs, "/usr/bin/tool", NULL, NULL), 0);
  /* a file above a directory replaces it and what it held */
  imgfs_next_layer (fs);
  assert_ok (imgfs_add (fs, "usr/lib", S_IFREG, 0755, NULL, NULL, 0, &err), &err);
  assert_int_equal (START (fs, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", NULL, NULL), 1);
  assert_string_equal (why, "`/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2` is not in the "
                            "image: `/usr/lib` is not a directory");
  /* the whole tree hidden at the root, then a file again */
  imgfs_next_layer (fs);
  assert_ok (imgfs_add (fs, ".wh..wh..opq", S_IFREG, 0644, NULL, NULL, 0, &err), &err);
  assert_int_equal (START (fs, "/usr/bin/tool", NULL, NULL), 1);
  assert_ok (imgfs_add (fs, "x", S_IFREG, 0755, NULL, NULL, 0, &err), &err);
  assert_int_equal (START (fs, "x", "/", NULL), 0);
  /* `..` out of the image is refused */
  assert_fails_with (imgfs_add (fs, "a/../../etc/passwd", S_IFREG, 0644, NULL, NULL, 0, &err),
                     &err, "leaves the image");
  imgfs_free (fs);
}

static void
test_elf_headers (void **state)
{
  unsigned char elf[512];
  char out[256], *sh;
  size_t n;
  (void) state;

  n = elf64 (elf, sizeof elf, "/lib/ld-musl-x86_64.so.1");
  assert_int_equal (imgfs_elf_interp (out, sizeof out, elf, n), 1);
  assert_string_equal (out, "/lib/ld-musl-x86_64.so.1");
  assert_int_equal (imgfs_elf_interp (out, sizeof out, elf, 0x100), -1); /* past the bytes read */
  assert_int_equal (imgfs_elf_interp (out, 8, elf, n), -1);              /* longer than out */
  n = elf64 (elf, sizeof elf, NULL);
  assert_int_equal (imgfs_elf_interp (out, sizeof out, elf, n), 0);
  assert_int_equal (imgfs_elf_interp (out, sizeof out, "#!/bin/sh", 9), 0);
  elf[56] = 0xff; /* e_phnum past the end */
  assert_int_equal (imgfs_elf_interp (out, sizeof out, elf, n), -1);
  assert_int_equal (imgfs_elf_interp (out, sizeof out, elf, 20), -1);

  assert_int_equal (imgfs_shebang (out, sizeof out, "#!/usr/bin/env node\n", 20), 1);
  assert_string_equal (out, "/usr/bin/env");
  assert_int_equal (imgfs_shebang (out, sizeof out, "#!\t/bin/sh", 10), 1);
  assert_string_equal (out, "/bin/sh");
  assert_int_equal (imgfs_shebang (out, sizeof out, "#! \n", 4), 0);
  assert_int_equal (imgfs_shebang (out, sizeof out, "echo", 4), 0);

  /* this machine's /bin/sh, as the kernel reads it */
  sh = t_sh_out ("head -c 65536 /bin/sh | od -An -v -tx1 | tr -d ' \\n'");
  {
    size_t hex = strlen (sh), len = hex / 2;
    unsigned char *head = malloc (len);
    char *want = t_sh_out ("readelf -l /bin/sh | sed -n 's/.*Requesting program interpreter: "
                           "\\(.*\\)]/\\1/p'");
    for (size_t i = 0; i < len; i++)
      sscanf (sh + 2 * i, "%2hhx", &head[i]);
    if (want[0] == '\0')
      assert_int_equal (imgfs_elf_interp (out, sizeof out, head, len), 0);
    else
      {
        assert_int_equal (imgfs_elf_interp (out, sizeof out, head, len), 1);
        assert_string_equal (out, want);
      }
    free (head);
    free (want);
  }
  free (sh);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_resolves),
    cmocka_unit_test (test_interpreters),
    cmocka_unit_test (test_whiteouts),
    cmocka_unit_test (test_elf_headers),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
