/* cmd_image.c - `buildvm image show|verify [PROFILE]` */
#include "cli.h"
#include "image.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
usage (FILE *out)
{
  fprintf (out, "usage: buildvm image show [--images DIR] [PROFILE]\n"
                "       buildvm image verify [--images DIR] [PROFILE]\n"
                "\n"
                "show:   print the image manifest's digests (default profile: minimal)\n"
                "verify: hash the kernel and rootfs and compare with the manifest\n");
}

int
cmd_image (int argc, char **argv)
{
  cleanup_free char *images = NULL;
  const char *sub, *profile = "minimal", *images_opt = NULL;
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
  if (images == NULL && image_default_dir (&images, &err) < 0)
    return cli_fail ("image", &err, 1);
  if (strcmp (sub, "show") != 0 && strcmp (sub, "verify") != 0)
    return cli_usage ("image", "unknown subcommand `%s`", sub);
  if (image_load (&img, images, profile, &err) < 0)
    return cli_fail ("image", &err, 1);
  if (strcmp (sub, "verify") == 0 && image_verify (img, &err) < 0)
    {
      image_free (img);
      return cli_fail ("image", &err, 1);
    }
  j = image_to_json (img);
  json_dumpf (j, stdout, JSON_INDENT (2) | JSON_SORT_KEYS);
  printf ("\n");
  if (strcmp (sub, "verify") == 0)
    fprintf (stderr, "image `%s`: kernel and rootfs match the manifest\n", profile);
  json_decref (j);
  image_free (img);
  return 0;
}
