/* caps.h - internal caps that are not a field's own grammar
 *
 * A JSON string whose grammar bounds it (an app id, a ref, a path) is read
 * with a looser cap first, so that an over-long value gets the grammar's
 * reason ("must match ^...$") instead of a bare "longer than": these name
 * those read caps instead of literals at each call site. The grammars' own
 * bounds stay with their owners (JOB_ID_MAX in job.h, SECRETS_NAME_MAX in
 * secrets.h, SPEC_PATH_MAX in spec.h, ...).
 *
 * Not called limits.h: with -Irunner/lib that name would shadow the
 * system's <limits.h>.
 */
#ifndef BUILDVM_CAPS_H
#define BUILDVM_CAPS_H

/* a name, id, ref, time or short value, read before its grammar checks it */
#define CAP_FIELD_READ 4096
/* a URL, path or free text, read before its own check */
#define CAP_TEXT_READ 65536

#endif
