/* opts.h - command-line options declared as a table
 *
 * Every verb of the CLI declares its options once, as data, the way git's
 * parse-options and curl's option table do; one parser (getopt_long
 * underneath, so `--opt=VALUE`, `--opt VALUE`, unambiguous abbreviations
 * and `--` all work the same for every verb) owns the grammar: the value
 * types, their ranges and the messages for a bad one.
 */
#ifndef BUILDVM_OPTS_H
#define BUILDVM_OPTS_H

#include "error.h"

#include <stdbool.h>
#include <stdint.h>

enum opt_type
{
  OPT_T_FLAG, /* bool *: set to true */
  OPT_T_STR,  /* const char **: the argument, as given */
  OPT_T_U32,  /* uint32_t *: a whole number within [min, max] */
  OPT_T_U64,  /* uint64_t *: likewise */
  OPT_T_FN,   /* fn (dst, argument, err): the verb's own grammar */
};

struct opt
{
  const char *name; /* the long name, without "--"; NULL ends a table */
  int short_name;   /* a letter, or 0 for a long option only */
  enum opt_type type;
  void *dst;
  uint64_t min, max; /* OPT_T_U32, OPT_T_U64 */
  const char *unit;  /* shown in the range message: "seconds", "MiB" */
  int (*fn) (void *dst, char *arg, bvm_error_t *err); /* argv is the verb's to modify */
};

#define OPT_FLAG(name, sh, dst)                                                                   \
  {                                                                                               \
    (name), (sh), OPT_T_FLAG, (dst), 0, 0, NULL, NULL                                             \
  }
#define OPT_STR(name, sh, dst)                                                                    \
  {                                                                                               \
    (name), (sh), OPT_T_STR, (dst), 0, 0, NULL, NULL                                              \
  }
#define OPT_U32(name, dst, lo, hi, unit)                                                          \
  {                                                                                               \
    (name), 0, OPT_T_U32, (dst), (lo), (hi), (unit), NULL                                         \
  }
#define OPT_U64(name, dst, lo, hi, unit)                                                          \
  {                                                                                               \
    (name), 0, OPT_T_U64, (dst), (lo), (hi), (unit), NULL                                         \
  }
#define OPT_FN(name, dst, fn)                                                                     \
  {                                                                                               \
    (name), 0, OPT_T_FN, (dst), 0, 0, NULL, (fn)                                                  \
  }
#define OPT_END                                                                                   \
  {                                                                                               \
    NULL, 0, OPT_T_FLAG, NULL, 0, 0, NULL, NULL                                                   \
  }

/* The most options one table may declare (beside the built-in --help). */
#define OPTS_MAX 24

enum
{
  OPTS_IN_ORDER = 1 << 0, /* stop at the first operand (a command line follows) */
};

/* Parse argv[1..argc) by `table`; -h and --help are built in. Returns the
 * index of the first operand, 0 when help was asked for (nothing else is
 * looked at after it), or -1 with `err` (BVM_E_USAGE) for an unknown or
 * ambiguous option, a missing value or one out of its grammar. */
int opts_parse (int argc, char **argv, const struct opt *table, unsigned flags, bvm_error_t *err);

#endif
