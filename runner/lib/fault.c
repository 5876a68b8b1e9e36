/* fault.c - labelled crash points, see fault.h */
#include "fault.h"
#include "log.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef BUILDVM_FAULT_INJECTION
static pid_t partner;

void
fault_set_partner (pid_t pid)
{
  partner = pid;
}

void
fault_point (const char *name)
{
  const char *want = getenv ("BUILDVM_FAULT");
  if (want == NULL || strcmp (want, name) != 0)
    return;
  log_warn ("event=fault.injected point=%s pid=%d", name, (int) getpid ());
  if (partner > 0)
    kill (partner, SIGKILL);
  raise (SIGKILL);
  _exit (137);
}
#endif
