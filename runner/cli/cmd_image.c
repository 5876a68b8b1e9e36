/* cmd_image.c - `buildvm image list|show|verify [PROFILE]` */
#include "cli.h"
#include "config.h"
#include "image.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm image list [--config FILE | --images DIR]\n"
                "       buildvm image show [--config FILE | --images DIR] [PROFILE]\n"
                "       buildvm image verify [--config FILE | --images DIR] [PROFILE]\n"
                "\n"
                "list:   the build VM images (profiles) this host has, with their toolchains\n"
                "show:   print the image manifest's digests (default profile: minimal)\n"
                "verify: hash the kernel and rootfs and compare with the manifest\n"
                "\n"
                "  --config FILE runner configuration: its `images.dir`\n"
                "  --images DIR  the image directory (default: $BUILDVM_IMAGES, else next to\n"
                "                the executable)\n");
}

/* One line per profile: its name, rootfs digest and toolchains. An image
 * whose manifest does not load is listed with the reason, and makes the
 * exit status 1. */
static int
list (const char *images)
{
  char **names = NULL;
  size_t n = 0;
  bvm_error_t err = NULL;
  int status = 0;

  if (image_list (&names, &n, images, &err) < 0)
    return cli_fail ("image", &err, 1);
  if (n == 0)
    {
      fprintf (stderr,
               "buildvm image: no build VM images in `%s`: `make images image-debian` in the "
               "buildvm source tree builds them\n",
               images);
      strv_free (names);
      return 1;
    }
  printf ("%-12s %-21s %s\n", "PROFILE", "ROOTFS", "TOOLCHAINS");
  for (size_t i = 0; i < n; i++)
    {
      struct vm_image *img = NULL;
      char tools[1024];
      if (image_load (&img, images, names[i], &err) < 0)
        {
          printf ("%-12s %-21s (unusable: %s)\n", names[i], "-", bvm_error_msg (&err));
          bvm_error_free (&err);
          status = 1;
          continue;
        }
      image_toolchains (tools, sizeof tools, img);
      printf ("%-12s %.19s... %s\n", names[i], img->rootfs_sha256, tools[0] ? tools : "-");
      image_free (img);
    }
  printf ("(in %s; `buildvm image show PROFILE` prints one's digests and packages)\n", images);
  strv_free (names);
  return status;
}

int
cmd_image (int argc, char **argv)
{
  cleanup_free char *images = NULL;
  const char *sub, *profile = "minimal", *images_opt = NULL, *config_path = NULL;
  struct vm_image *img = NULL;
  bvm_error_t err = NULL;
  json_t *j;
  int c;

  if (argc < 2)
    {
      usage (stderr);
      return 2;
    }
  sub = argv[1];
  if (strcmp (sub, "--help") == 0 || strcmp (sub, "-h") == 0)
    {
      usage (stdout);
      return 0;
    }
  const struct opt opts[] = {
    OPT_STR ("images", 0, &images_opt),
    OPT_STR ("config", 0, &config_path),
    OPT_END,
  };
  if (cli_parse (argc - 1, argv + 1, "image", opts, 0, 1, usage, &c))
    return c;
  argc--;
  argv++;
  if (images_opt != NULL)
    images = xstrdup (images_opt);
  if (optind < argc)
    profile = argv[optind];
  if (strcmp (sub, "show") != 0 && strcmp (sub, "verify") != 0 && strcmp (sub, "list") != 0)
    return cli_usage ("image", "unknown subcommand `%s`", sub);
  if (images != NULL && config_path != NULL)
    return cli_usage ("image", "--config and --images name the directory twice: give one");
  if (images == NULL)
    {
      /* the config's images.dir, which applies $BUILDVM_IMAGES and the
       * built-in default itself */
      struct runner_config *cfg = NULL;
      if (config_load (&cfg, config_path, &err) < 0)
        return cli_fail ("image", &err, 2);
      images = xstrdup (cfg->images.dir);
      config_free (cfg);
    }
  if (strcmp (sub, "list") == 0)
    return list (images);
  if (image_load (&img, images, profile, &err) < 0)
    return cli_fail ("image", &err, cli_status_for (&err));
  if (strcmp (sub, "verify") == 0 && image_verify (img, &err) < 0)
    {
      image_free (img);
      return cli_fail ("image", &err, 1);
    }
  j = image_to_json (img);
  if (strcmp (sub, "show") == 0)
    json_object_set (j, "packages", img->packages);
  json_dumpf (j, stdout, JSON_INDENT (2) | JSON_SORT_KEYS);
  printf ("\n");
  if (strcmp (sub, "verify") == 0)
    fprintf (stderr, "image `%s`: kernel and rootfs match the manifest\n", profile);
  json_decref (j);
  image_free (img);
  return 0;
}
