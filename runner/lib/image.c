/* image.c - build VM image manifests, see image.h */
#include "image.h"
#include "digest.h"
#include "fs.h"
#include "jsonx.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MANIFEST_MAX (1u << 20)

const char *
image_profile_problem (const char *p)
{
  static const char why[] = "must match ^[a-z0-9][a-z0-9-]{0,31}$";
  size_t n = p ? strlen (p) : 0;
  if (n == 0 || n > 32)
    return why;
  for (size_t i = 0; i < n; i++)
    {
      char c = p[i];
      bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
      if (!ok)
        return why;
    }
  return NULL;
}

int
image_default_dir (char **out, bvm_error_t *err)
{
  const char *env = getenv ("BUILDVM_IMAGES");
  cleanup_free char *exe = NULL;
  int ret;

  if (env != NULL && *env != '\0')
    {
      *out = strdup (env);
      return *out ? 0 : bvm_error (err, ENOMEM, "images dir");
    }
  ret = fs_exe_dir (&exe, err);
  if (ret < 0)
    return ret;
  if (asprintf (out, "%s/images", exe) < 0)
    return bvm_error (err, ENOMEM, "images dir");
  return 0;
}

/* A manifest path is relative to the manifest's directory and stays in it. */
static int
resolve (char **out, const char *dir, const char *rel, const char *field, bvm_error_t *err)
{
  if (rel[0] == '/' || strstr (rel, "..") != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0,
                           "image manifest field `%s` must be a relative "
                           "path inside the image directory",
                           field);
  if (asprintf (out, "%s/%s", dir, rel) < 0)
    return bvm_error (err, ENOMEM, "image path");
  return 0;
}

static int
dupstr (char **out, const char *s, bvm_error_t *err)
{
  *out = strdup (s);
  return *out ? 0 : bvm_error (err, ENOMEM, "image manifest");
}

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

int
image_list (char ***out, size_t *n, const char *dir, bvm_error_t *err)
{
  char **v = calloc (IMAGE_LIST_MAX + 1, sizeof *v);
  struct dirent *de;
  size_t k = 0;
  DIR *d;

  if (v == NULL)
    return bvm_error (err, ENOMEM, "image list");
  d = opendir (dir);
  if (d == NULL && errno != ENOENT)
    {
      free (v);
      return bvm_error (err, errno, "open the image directory `%s`", dir);
    }
  while (d != NULL && k < IMAGE_LIST_MAX && (de = fs_readdir (d)) != NULL)
    {
      size_t len = strlen (de->d_name);
      char name[40];
      if (len <= 5 || len - 5 >= sizeof name || strcmp (de->d_name + len - 5, ".json") != 0)
        continue;
      snprintf (name, sizeof name, "%.*s", (int) (len - 5), de->d_name);
      if (image_profile_problem (name) != NULL)
        continue;
      if ((v[k] = strdup (name)) == NULL)
        {
          closedir (d);
          strv_free (v);
          return bvm_error (err, ENOMEM, "image list");
        }
      k++;
    }
  if (d != NULL)
    closedir (d);
  qsort (v, k, sizeof *v, cmp_str);
  *out = v;
  *n = k;
  return 0;
}

/* No <dir>/<profile>.json. A profile buildvm ships a recipe for is the
 * host's to build (the hint says how); any other name is the caller's
 * mistake, and the message names the profiles there are. */
static int
not_found (bvm_error_t *err, const char *dir, const char *profile)
{
  static const char *const shipped[][2] = { { "minimal", "images" },
                                            { "debian", "image-debian" } };
  char have[512] = "";
  char **names = NULL;
  size_t n = 0, used = 0;

  if (image_list (&names, &n, dir, err) < 0)
    bvm_error_free (err); /* the message says "none" */
  for (size_t i = 0; i < n && used < sizeof have; i++)
    {
      int w = snprintf (have + used, sizeof have - used, "%s`%s`", i ? ", " : "", names[i]);
      if (w < 0)
        break;
      used += (size_t) w;
    }
  strv_free (names);
  for (size_t i = 0; i < ARRAY_SIZE (shipped); i++)
    if (strcmp (profile, shipped[i][0]) == 0)
      return bvm_error_code (err, BVM_E_IO, 0,
                             "build VM image `%s` not found in `%s` (this host has %s): build "
                             "it with `make %s` in the buildvm source tree, or point "
                             "`images.dir` at a directory that has it",
                             profile, dir, n ? have : "none", shipped[i][1]);
  return bvm_error_code (err, BVM_E_INVALID, 0,
                         "no build VM image `%s` on this host: it has %s (`buildvm image list` "
                         "shows what each provides)",
                         profile, n ? have : "none");
}

bool
image_present (const char *dir, const char *profile)
{
  char path[PATH_MAX];
  struct stat st;
  return image_profile_problem (profile) == NULL
         && snprintf_checked (path, sizeof path, "%s/%s.json", dir, profile) >= 0
         && stat (path, &st) == 0;
}

void
image_upstream_version (char *out, size_t size, const char *v)
{
  const char *colon = strchr (v, ':'), *end;
  size_t n;

  if (colon != NULL)
    v = colon + 1;
  end = strrchr (v, '-');
  n = end ? (size_t) (end - v) : strlen (v);
  n = strcspn (v, "+~") < n ? strcspn (v, "+~") : n;
  snprintf (out, size, "%.*s", (int) n, v);
}

/* The version of the package `name` in the image, or NULL. */
static const char *
package_version (const struct vm_image *img, const char *name)
{
  size_t i;
  json_t *p;

  json_array_foreach (img->packages, i, p)
    {
      const char *n = json_string_value (json_object_get (p, "name"));
      if (n != NULL && strcmp (n, name) == 0)
        return json_string_value (json_object_get (p, "version"));
    }
  return NULL;
}

void
image_toolchains (char *out, size_t size, const struct vm_image *img)
{
  /* Debian package -> what people call it; in the order they are shown */
  static const char *const known[][2] = {
    { "gcc", "gcc" },
    { "clang", "clang" },
    { "make", "make" },
    { "cmake", "cmake" },
    { "autoconf", "autoconf" },
    { "automake", "automake" },
    { "libtool", "libtool" },
    { "nodejs", "node" },
    { "npm", "npm" },
    { "python3", "python3" },
    { "python3-pip", "pip" },
    { "python3-venv", "venv" },
    { "golang-go", "go" },
    { "rustc", "rustc" },
    { "cargo", "cargo" },
    { "default-jdk-headless", "java" },
    { "maven", "maven" },
    { "git", "git" },
    { "busybox-static", "busybox" },
  };
  size_t used = 0;

  if (size == 0)
    return;
  out[0] = '\0';
  for (size_t k = 0; k < ARRAY_SIZE (known); k++)
    {
      size_t i;
      json_t *p;
      json_array_foreach (img->packages, i, p)
        {
          const char *name = json_string_value (json_object_get (p, "name"));
          const char *ver = json_string_value (json_object_get (p, "version"));
          char up[64];
          int w;
          if (name == NULL || ver == NULL || strcmp (name, known[k][0]) != 0)
            continue;
          image_upstream_version (up, sizeof up, ver);
          if (strcmp (known[k][0], "golang-go") == 0)
            {
              /* 2:1.19~1 names the Go line; golang-1.19-go has the release */
              char line[96];
              const char *rel;
              snprintf (line, sizeof line, "golang-%s-go", up);
              if ((rel = package_version (img, line)) != NULL)
                image_upstream_version (up, sizeof up, rel);
            }
          if (strcmp (known[k][0], "default-jdk-headless") == 0)
            {
              /* 2:1.17-74: the JDK's major version */
              const char *dot = strchr (up, '.');
              memmove (up, dot ? dot + 1 : up, strlen (dot ? dot + 1 : up) + 1);
            }
          w = snprintf (out + used, size - used, "%s%s %s", used ? ", " : "", known[k][1], up);
          if (w < 0 || (size_t) w >= size - used)
            {
              out[used] = '\0'; /* whole entries only */
              return;
            }
          used += (size_t) w;
          break;
        }
    }
}

int
image_load (struct vm_image **out, const char *dir, const char *profile, bvm_error_t *err)
{
  static const char *const top_keys[] = { "schema",       "profile",  "kernel", "rootfs",
                                          "agent_sha256", "packages", NULL };
  static const char *const kernel_keys[] = { "path", "sha256", "config_fragment_sha256", "cmdline",
                                             NULL };
  static const char *const rootfs_keys[] = { "path", "sha256", "format", "size", NULL };
  cleanup_json json_t *doc = NULL;
  json_t *kernel = NULL, *rootfs = NULL, *packages = NULL;
  const char *s = NULL, *kpath = NULL, *rpath = NULL, *format = NULL;
  struct vm_image *img;
  struct stat st;
  uint64_t schema = 0;
  int ret;

  if (image_profile_problem (profile) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "`%.40s` is not a valid image profile name",
                           profile);
  img = calloc (1, sizeof *img);
  if (img == NULL)
    return bvm_error (err, ENOMEM, "image");
  if (asprintf (&img->manifest_path, "%s/%s.json", dir, profile) < 0)
    {
      free (img);
      return bvm_error (err, ENOMEM, "image");
    }
  if (stat (img->manifest_path, &st) < 0 && errno == ENOENT)
    {
      ret = not_found (err, dir, profile);
      goto fail;
    }
  ret = jsonx_parse_file (&doc, img->manifest_path, MANIFEST_MAX, err);
  if (ret < 0)
    goto fail;
  if ((ret = jsonx_check_keys (doc, top_keys, "", err)) < 0
      || (ret = jsonx_get_u64 (&schema, doc, "schema", true, 1, 1, "", err)) < 0
      || (ret = jsonx_get_str (&s, doc, "profile", true, 64, "", err)) < 0
      || (ret = jsonx_get_typed (&kernel, doc, "kernel", JSON_OBJECT, true, "", err)) < 0
      || (ret = jsonx_get_typed (&rootfs, doc, "rootfs", JSON_OBJECT, true, "", err)) < 0
      || (ret = jsonx_get_typed (&packages, doc, "packages", JSON_ARRAY, true, "", err)) < 0
      || (ret = jsonx_check_keys (kernel, kernel_keys, "kernel", err)) < 0
      || (ret = jsonx_check_keys (rootfs, rootfs_keys, "rootfs", err)) < 0)
    goto wrap;
  if (strcmp (s, profile) != 0)
    {
      ret = bvm_error_code (err, BVM_E_INVALID, 0, "manifest is for profile `%.40s`", s);
      goto wrap;
    }
  if ((ret = dupstr (&img->profile, profile, err)) < 0
      || (ret = jsonx_get_str (&kpath, kernel, "path", true, PATH_MAX, "kernel", err)) < 0
      || (ret = resolve (&img->kernel, dir, kpath, "kernel.path", err)) < 0
      || (ret = jsonx_get_str (&s, kernel, "sha256", true, 80, "kernel", err)) < 0
      || (ret = dupstr (&img->kernel_sha256, s, err)) < 0
      || (ret = jsonx_get_str (&s, kernel, "config_fragment_sha256", true, 80, "kernel", err)) < 0
      || (ret = dupstr (&img->fragment_sha256, s, err)) < 0
      || (ret = jsonx_get_str (&s, kernel, "cmdline", true, 1024, "kernel", err)) < 0
      || (ret = dupstr (&img->cmdline, s, err)) < 0
      || (ret = jsonx_get_str (&rpath, rootfs, "path", true, PATH_MAX, "rootfs", err)) < 0
      || (ret = resolve (&img->rootfs, dir, rpath, "rootfs.path", err)) < 0
      || (ret = jsonx_get_str (&s, rootfs, "sha256", true, 80, "rootfs", err)) < 0
      || (ret = dupstr (&img->rootfs_sha256, s, err)) < 0
      || (ret = jsonx_get_str (&format, rootfs, "format", true, 16, "rootfs", err)) < 0
      || (ret = jsonx_get_u64 (&img->rootfs_size, rootfs, "size", true, 1, UINT64_MAX >> 1,
                               "rootfs", err))
             < 0
      || (ret = jsonx_get_str (&s, doc, "agent_sha256", true, 80, "", err)) < 0
      || (ret = dupstr (&img->agent_sha256, s, err)) < 0)
    goto wrap;
  if (digest_problem (img->kernel_sha256) != NULL || digest_problem (img->rootfs_sha256) != NULL
      || digest_problem (img->agent_sha256) != NULL)
    {
      ret = bvm_error_code (err, BVM_E_INVALID, 0, "a digest is not of the form sha256:<hex>");
      goto wrap;
    }
  if (strcmp (format, "ext4") != 0)
    {
      ret = bvm_error_code (err, BVM_E_INVALID, 0, "unsupported rootfs format `%.16s`", format);
      goto wrap;
    }
  img->packages = json_incref (packages);
  if (stat (img->kernel, &st) < 0)
    {
      ret = bvm_error (err, errno, "kernel `%s`", img->kernel);
      goto wrap;
    }
  if (stat (img->rootfs, &st) < 0)
    {
      ret = bvm_error (err, errno, "rootfs `%s`", img->rootfs);
      goto wrap;
    }
  if ((uint64_t) st.st_size != img->rootfs_size)
    {
      ret = bvm_error_code (err, BVM_E_INVALID, 0,
                            "rootfs `%s` is %lld bytes but the manifest says %llu: rebuild the "
                            "image",
                            img->rootfs, (long long) st.st_size,
                            (unsigned long long) img->rootfs_size);
      goto wrap;
    }
  *out = img;
  return 0;

wrap:
  bvm_error_wrap (err, "image manifest `%s`", img->manifest_path);
fail:
  image_free (img);
  return ret;
}

int
image_verify (const struct vm_image *img, bvm_error_t *err)
{
  char d[DIGEST_STR_LEN + 1];
  int ret;

  ret = digest_file (d, NULL, img->kernel, err);
  if (ret < 0)
    return ret;
  if (strcmp (d, img->kernel_sha256) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "kernel `%s` has digest %s, manifest says %s",
                           img->kernel, d, img->kernel_sha256);
  ret = digest_file (d, NULL, img->rootfs, err);
  if (ret < 0)
    return ret;
  if (strcmp (d, img->rootfs_sha256) != 0)
    return bvm_error_code (err, BVM_E_INVALID, 0, "rootfs `%s` has digest %s, manifest says %s",
                           img->rootfs, d, img->rootfs_sha256);
  return 0;
}

json_t *
image_to_json (const struct vm_image *img)
{
  return json_pack ("{s:s, s:{s:s, s:s}, s:{s:s}, s:s}", "profile", img->profile, "kernel",
                    "sha256", img->kernel_sha256, "config_fragment_sha256", img->fragment_sha256,
                    "rootfs", "sha256", img->rootfs_sha256, "agent_sha256", img->agent_sha256);
}

void
image_free (struct vm_image *img)
{
  if (img == NULL)
    return;
  free (img->profile);
  free (img->manifest_path);
  free (img->kernel);
  free (img->kernel_sha256);
  free (img->cmdline);
  free (img->fragment_sha256);
  free (img->rootfs);
  free (img->rootfs_sha256);
  free (img->agent_sha256);
  if (img->packages)
    json_decref (img->packages);
  free (img);
}
