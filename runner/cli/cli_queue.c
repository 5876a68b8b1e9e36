/* cli_queue.c - what the queue verbs (jobs, status, cancel) share */
#include "cli.h"
#include "config.h"
#include "queue.h"

#include <getopt.h>
#include <stdio.h>

int
cli_open_queue (struct queue **q, struct runner_config **cfg, const char *config_path,
                bvm_error_t *err)
{
  if (config_load (cfg, config_path, err) < 0)
    return -1;
  return queue_open (q, (*cfg)->queue, NULL, err);
}

int
cli_parse_queue_opts (int argc, char **argv, const char *verb, const char **config_path,
                      bool *as_json, void (*usage) (FILE *))
{
  static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
                                        { "json", no_argument, NULL, 'j' },
                                        { "help", no_argument, NULL, 'h' },
                                        { NULL, 0, NULL, 0 } };
  int c;
  optind = 1;
  while ((c = getopt_long (argc, argv, "h", opts, NULL)) != -1)
    switch (c)
      {
      case 'c': *config_path = optarg; break;
      case 'j': *as_json = true; break;
      case 'h': usage (stdout); return 1;
      default: return cli_usage (verb, "unknown option");
      }
  return 0;
}
