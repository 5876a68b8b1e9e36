/* cli.h - the `buildvm` front-end: one small file per verb
 *
 * Each verb is `int cmd_<verb> (int argc, char **argv)` in cmd_<verb>.c,
 * returning the process exit status. Verbs are declared weak in main.c, so a
 * verb exists exactly when its file is linked in.
 */
#ifndef BUILDVM_CLI_H
#define BUILDVM_CLI_H

#include "error.h"

/* Print "buildvm: <verb>: <message>" for an error and return `status`. */
int cli_fail (const char *verb, bvm_error_t *err, int status);
/* Print a usage error and return 2. */
int cli_usage (const char *verb, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

/* Exit status for an error: 2 usage/invalid input, 3 denied by policy,
 * 4 build failed, 5 timeout, 1 anything else. */
int cli_status_for (const bvm_error_t *err);

#endif
