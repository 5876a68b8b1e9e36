/* opts.c - command-line options declared as a table (see opts.h) */
#include "opts.h"

#include "util.h"

#include <getopt.h>
#include <string.h>

/* getopt_long's `val` for the table's i-th option: its letter when it has
 * one, else a value no letter takes */
#define LONG_ONLY_BASE 256

static int
number_problem (const struct opt *o, const char *arg, bvm_error_t *err)
{
  uint64_t type_max = o->type == OPT_T_U32 ? UINT32_MAX : UINT64_MAX;
  uint64_t v = 0;
  uint32_t v32 = 0;
  int ret;

  if (o->type == OPT_T_U32)
    {
      ret = parse_u32 (arg, &v32);
      v = v32;
    }
  else
    ret = parse_u64 (arg, &v);
  if (ret == 0 && v >= o->min && v <= o->max)
    {
      if (o->type == OPT_T_U32)
        *(uint32_t *) o->dst = v32;
      else
        *(uint64_t *) o->dst = v;
      return 0;
    }
  if (o->max >= type_max)
    return bvm_error_code (err, BVM_E_USAGE, 0, "--%s needs a whole number of at least %llu%s%s%s",
                           o->name, (unsigned long long) o->min, o->unit ? " (" : "",
                           o->unit ? o->unit : "", o->unit ? ")" : "");
  return bvm_error_code (err, BVM_E_USAGE, 0, "--%s needs a whole number from %llu to %llu%s%s%s",
                         o->name, (unsigned long long) o->min, (unsigned long long) o->max,
                         o->unit ? " (" : "", o->unit ? o->unit : "", o->unit ? ")" : "");
}

static int
take (const struct opt *o, char *arg, bvm_error_t *err)
{
  switch (o->type)
    {
    case OPT_T_FLAG: *(bool *) o->dst = true; return 0;
    case OPT_T_STR: *(const char **) o->dst = arg; return 0;
    case OPT_T_U32:
    case OPT_T_U64: return number_problem (o, arg, err);
    case OPT_T_FN:
      if (o->fn (o->dst, arg, err) < 0)
        return bvm_error_wrap (err, "--%s", o->name);
      return 0;
    }
  return bvm_error_code (err, BVM_E_INTERNAL, 0, "option `--%s`: unknown type", o->name);
}

int
opts_parse (int argc, char **argv, const struct opt *table, unsigned flags, bvm_error_t *err)
{
  struct option longs[OPTS_MAX + 2];
  /* "+:" then a letter and maybe ':' per option, then "h" */
  char shorts[2 + 2 * OPTS_MAX + 2];
  size_t n = 0, ns = 0;
  int c;

  if (flags & OPTS_IN_ORDER)
    shorts[ns++] = '+'; /* else permute, GNU's default */
  shorts[ns++] = ':';   /* a missing value is ':', not '?' */
  for (n = 0; table[n].name != NULL; n++)
    {
      const struct opt *o = &table[n];
      bool has_arg = o->type != OPT_T_FLAG;
      if (n == OPTS_MAX)
        return bvm_error_code (err, BVM_E_INTERNAL, 0, "more than %d options", OPTS_MAX);
      longs[n] = (struct option){ o->name, has_arg ? required_argument : no_argument, NULL,
                                  o->short_name ? o->short_name : LONG_ONLY_BASE + (int) n };
      if (o->short_name)
        {
          shorts[ns++] = (char) o->short_name;
          if (has_arg)
            shorts[ns++] = ':';
        }
    }
  longs[n] = (struct option){ "help", no_argument, NULL, 'h' };
  longs[n + 1] = (struct option){ NULL, 0, NULL, 0 };
  shorts[ns++] = 'h';
  shorts[ns] = '\0';

  optind = 0; /* 0, not 1: glibc re-reads the ordering flags only then */
  opterr = 0;
  while ((c = getopt_long (argc, argv, shorts, longs, NULL)) != -1)
    {
      const struct opt *o = NULL;
      const char *bad = argv[optind - 1];

      if (c == 'h')
        return 0;
      if (c == '?' || c == ':')
        {
          char letter[3] = { '-', (char) optopt, '\0' };
          /* a short option's letter may sit inside a cluster like -vx */
          if (optopt != 0 && optopt < LONG_ONLY_BASE && strncmp (bad, "--", 2) != 0)
            bad = letter;
          return bvm_error_code (err, BVM_E_USAGE, 0,
                                 c == ':' ? "`%s` needs a value" : "unknown option `%s`", bad);
        }
      for (size_t i = 0; i < n && o == NULL; i++)
        if ((table[i].short_name ? table[i].short_name : LONG_ONLY_BASE + (int) i) == c)
          o = &table[i];
      if (o == NULL)
        return bvm_error_code (err, BVM_E_INTERNAL, 0, "getopt returned %d", c);
      if (take (o, optarg, err) < 0)
        return -1;
    }
  return optind;
}
