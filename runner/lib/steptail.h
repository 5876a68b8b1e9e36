/* steptail.h - the last lines of a build step's output, for a failed job
 *
 * A failed step's error says which step and which status; the reason is
 * usually in the step's last lines, in a log the user has to go and read.
 * The pipeline feeds every console line (already redacted) here; the tail
 * keeps the last STEPTAIL_LINES lines of the step that ran last, each cut
 * at STEPTAIL_LINE_MAX bytes, and they go into the job record and summary.
 *
 * Steps are told apart by the agent's markers: `==> step K/N: NAME` starts
 * step K, `==> step K (NAME) exited with status S after T` and `... timed
 * out after T` end it (lines after that - the agent's own - are not the
 * step's). The build can print a marker itself; then the tail starts there,
 * which misleads only the build's own error report.
 */
#ifndef BUILDVM_STEPTAIL_H
#define BUILDVM_STEPTAIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define STEPTAIL_LINES 20
#define STEPTAIL_LINE_MAX 240 /* bytes of one line kept; a longer one ends in "..." */

struct steptail
{
  char lines[STEPTAIL_LINES][STEPTAIL_LINE_MAX + 4];
  size_t first, n;          /* a ring: the oldest line, how many */
  unsigned long long total; /* lines of the current step, kept or not */
  unsigned step;            /* the step whose lines these are (1-based), 0: none yet */
  bool open;                /* between a step's start and end markers */
};

void steptail_init (struct steptail *t);
/* One console line, without its newline. */
void steptail_line (struct steptail *t, const char *line, size_t len);
/* The kept lines of step `step`, oldest first ([] when the tail is of
 * another step). */
json_t *steptail_to_json (const struct steptail *t, unsigned step);

/* A one-line hint when the kept lines show a name lookup failing (the build
 * VM has no network and no DNS), NULL otherwise. `egress`: the job had an
 * egress proxy (then the tool went around it). */
const char *steptail_hint (const struct steptail *t, bool egress);

#endif
