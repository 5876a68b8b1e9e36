/* cli.h - the `buildvm` front-end: one small file per verb
 *
 * Each verb is `int cmd_<verb> (int argc, char **argv)` in cmd_<verb>.c,
 * returning the process exit status, and one line of main.c's commands[]
 * (name, handler, one-line help).
 */
#ifndef BUILDVM_CLI_H
#define BUILDVM_CLI_H

#include "error.h"
#include "job.h"
#include "opts.h"

#include <stdbool.h>
#include <stdio.h>

/* The verbs, one per file. */
int cmd_run (int argc, char **argv);
int cmd_vm (int argc, char **argv);
int cmd_image (int argc, char **argv);
int cmd_policy (int argc, char **argv);
int cmd_logs (int argc, char **argv);
int cmd_enqueue (int argc, char **argv);
int cmd_serve (int argc, char **argv);
int cmd_jobs (int argc, char **argv);
int cmd_status (int argc, char **argv);
int cmd_cancel (int argc, char **argv);
int cmd_webhook (int argc, char **argv);
int cmd_token_server (int argc, char **argv);
int cmd_dry_run (int argc, char **argv);
int cmd_secrets (int argc, char **argv);
int cmd_doctor (int argc, char **argv);
int cmd_artifacts (int argc, char **argv);
int cmd_verify (int argc, char **argv);

/* Print "buildvm: <verb>: <message>" for an error and return `status`. */
int cli_fail (const char *verb, bvm_error_t *err, int status);
/* Print a usage error and return 2. */
int cli_usage (const char *verb, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
/* For a verb with subcommands: print the usage to stderr and return 2 when
 * argv names none, to stdout and return 0 when it asks for help; else -1. */
int cli_help_or_missing (int argc, char **argv, void (*usage) (FILE *));
/* Parse a verb's options from its table (opts.h) and refuse more than
 * `max_operands` operands (-1: any number). 0 to go on, with optind at the
 * first operand; else 1 with *status the exit status: 0 after --help (the
 * usage printed to stdout), 2 after a usage error (explained on stderr). */
int cli_parse (int argc, char **argv, const char *verb, const struct opt *table, unsigned flags,
               int max_operands, void (*usage) (FILE *), int *status);

/* For the queue verbs (cli_queue.c): load the config and open its queue;
 * parse [--config FILE] [--json] as cli_parse does. */
struct queue;
struct runner_config;
int cli_open_queue (struct queue **q, struct runner_config **cfg, const char *config_path,
                    bvm_error_t *err);
int cli_parse_queue_opts (int argc, char **argv, const char *verb, const char **config_path,
                          bool *as_json, void (*usage) (FILE *), int *status);
/* A job named `APP/ID` (or its key `APP+ID`), or by its id alone when only
 * one app has a job of that id, in the queue or among the records. 0 with
 * `key` set, 1 when no app has it, -1 (a message printed) when the argument
 * is invalid or ambiguous. */
int cli_resolve_job (char key[JOB_KEY_MAX + 1], struct queue *q, const struct runner_config *cfg,
                     const char *arg, const char *verb);

/* Exit status for an error: 2 usage/invalid input, 3 denied by policy,
 * 4 build failed, 5 timeout, 1 anything else. */
int cli_status_for (const bvm_error_t *err);


#include <signal.h>

/* Set by SIGINT/SIGTERM (installed by cli_install_cancel); library loops poll
 * it and wind down cleanly: the VM is killed, files removed, leases released. */
extern volatile sig_atomic_t cli_cancel_requested;
void cli_install_cancel (void);

/* Quote one word for a POSIX shell into `out` (appending). */
struct buf;
int cli_shell_quote (struct buf *out, const char *word);
#endif
