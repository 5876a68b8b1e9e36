/* jail_seccomp.c - the seccomp filter the jail loads before exec. See
 * jail_int.h and docs/security.md. */
#include "jail_int.h"
#include "util.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Refused with EPERM. None of these is needed by QEMU (nor by anything it
 * links) to run a VM, and each either changes the system, reaches other
 * processes or opens a large kernel attack surface. */
static const char *const denied_syscalls[] = {
  /* mounts and namespaces: the jail's view of the world stays as built */
  "mount",
  "umount",
  "umount2",
  "pivot_root",
  "chroot",
  "move_mount",
  "open_tree",
  "fsopen",
  "fsconfig",
  "fsmount",
  "fspick",
  "mount_setattr",
  "unshare",
  "setns",
  /* other processes */
  "ptrace",
  "process_vm_readv",
  "process_vm_writev",
  "kcmp",
  "pidfd_getfd",
  /* the kernel itself */
  "kexec_load",
  "kexec_file_load",
  "reboot",
  "init_module",
  "finit_module",
  "delete_module",
  "bpf",
  "perf_event_open",
  "userfaultfd",
  "keyctl",
  "add_key",
  "request_key",
  "swapon",
  "swapoff",
  "acct",
  "quotactl",
  "quotactl_fd",
  "open_by_handle_at",
  "name_to_handle_at",
  "iopl",
  "ioperm",
  "syslog",
  "settimeofday",
  "clock_settime",
  "clock_adjtime",
  "adjtimex",
  "sethostname",
  "setdomainname",
  "lookup_dcookie",
  "nfsservctl",
  "uselib",
  "ustat",
  "sysfs",
  "_sysctl",
  "vhangup",
  "fanotify_init",
  /* io_uring: a history of kernel bugs; QEMU falls back to ppoll and threads */
  "io_uring_setup",
  "io_uring_enter",
  "io_uring_register",
};

int
jail__filter_build (struct jail *j, bvm_error_t *err)
{
  static const unsigned long ns_flags[] = { CLONE_NEWNS,    CLONE_NEWUTS, CLONE_NEWIPC,
                                            CLONE_NEWUSER,  CLONE_NEWPID, CLONE_NEWNET,
                                            CLONE_NEWCGROUP };
  scmp_filter_ctx ctx = seccomp_init (SCMP_ACT_ALLOW);
  cleanup_close int fd = -1;
  struct stat st;
  int r = 0;

  if (ctx == NULL)
    return bvm_error (err, ENOMEM, "seccomp_init");
  /* the child sets no_new_privs itself, before loading */
  r = seccomp_attr_set (ctx, SCMP_FLTATR_CTL_NNP, 0);
  /* x32 and i386 system calls would bypass a filter written for x86_64
   * numbers: kill the process that tries */
  if (r == 0)
    r = seccomp_attr_set (ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  j->n_denied = 0;
  for (size_t i = 0; r == 0 && i < ARRAY_SIZE (denied_syscalls); i++)
    {
      int nr = seccomp_syscall_resolve_name (denied_syscalls[i]);
      if (nr < 0)
        continue; /* not on this architecture */
      r = seccomp_rule_add (ctx, SCMP_ACT_ERRNO (EPERM), nr, 0);
      j->n_denied++;
    }
  /* New namespaces through clone(): CLONE_NEWUSER needs no privilege and
   * would hand the jail a user namespace in which it is root. Threads
   * (QEMU's, glibc's) use none of these flags. */
  for (size_t i = 0; r == 0 && i < ARRAY_SIZE (ns_flags); i++)
    r = seccomp_rule_add (ctx, SCMP_ACT_ERRNO (EPERM), SCMP_SYS (clone), 1,
                          SCMP_A0 (SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i]));
  /* clone3 passes its flags in memory, where a filter cannot look: ENOSYS
   * makes glibc fall back to clone(), whose flags are checked above */
  if (r == 0)
    r = seccomp_rule_add (ctx, SCMP_ACT_ERRNO (ENOSYS), SCMP_SYS (clone3), 0);
  if (r < 0)
    {
      seccomp_release (ctx);
      return bvm_error (err, -r, "building the jail's seccomp filter");
    }
  fd = memfd_create ("buildvm-jail-seccomp", MFD_CLOEXEC);
  if (fd < 0)
    {
      seccomp_release (ctx);
      return bvm_error (err, errno, "memfd_create");
    }
  r = seccomp_export_bpf (ctx, fd);
  seccomp_release (ctx);
  if (r < 0)
    return bvm_error (err, -r, "exporting the jail's seccomp filter");
  if (fstat (fd, &st) < 0)
    return bvm_error (err, errno, "fstat");
  if (st.st_size <= 0 || st.st_size % (off_t) sizeof (struct sock_filter) != 0
      || st.st_size / (off_t) sizeof (struct sock_filter) > BPF_MAXINSNS)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "the jail's seccomp filter has %lld bytes",
                           (long long) st.st_size);
  j->bpf = malloc ((size_t) st.st_size);
  if (j->bpf == NULL)
    return bvm_error (err, ENOMEM, "jail");
  if (pread (fd, j->bpf, (size_t) st.st_size, 0) != (ssize_t) st.st_size)
    return bvm_error (err, errno ? errno : EIO, "reading the jail's seccomp filter");
  j->bpf_len = (unsigned short) (st.st_size / (off_t) sizeof (struct sock_filter));
  return 0;
}
