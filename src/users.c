/*
 * users.c - other processes that have a file open (the hold: hold.c).
 *
 * Proxmox builds QEMU (and its qemu-img) with image locking off, so our
 * lock bytes never see a running Proxmox VM. Before a file is changed or
 * replaced we therefore also look at the open descriptors of every other
 * process (/proc/PID/fd, one pass for all the files an operation touches)
 * and refuse, naming the process. The hold keeps those files write-locked
 * (QEMU's bytes) from before that look until the operation is durable, so
 * a QEMU that does take locks cannot start in between, and a process that
 * opened the file just before our lock is seen by the look after it.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static void comm_of(int pid, char *buf, size_t n)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/%d/comm", pid);
    snprintf(buf, n, "?");
    FILE *f = fopen(p, "re");
    if (!f)
        return;
    if (fgets(buf, (int)n, f))
        buf[strcspn(buf, "\n")] = 0;
    fclose(f);
}

/* Is any of the open descriptors in /proc/PID/fd (path p) one of the files? */
static int scan_fds(const char *p, const struct stat *files, size_t n, size_t *which)
{
    DIR *d = opendir(p);
    if (!d)
        return 0;
    struct dirent *de;
    int hit = 0;
    while (!hit && (de = readdir(d))) {
        /* the identity of what the descriptor refers to, from cached
         * attributes: never a round trip to an NFS server */
        struct statx sx;
        if (de->d_name[0] == '.')
            continue;
        if (statx(dirfd(d), de->d_name, AT_STATX_DONT_SYNC | AT_NO_AUTOMOUNT, STATX_INO, &sx) < 0) {
            if (errno == EACCES)
                break; /* the access check is per process: none of its descriptors can be seen */
            continue;
        }
        dev_t dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
        for (size_t i = 0; i < n && !hit; i++)
            if (dev == files[i].st_dev && sx.stx_ino == files[i].st_ino) {
                *which = i;
                hit = 1;
            }
    }
    closedir(d);
    return hit;
}

int qc_users_posix(void *u, const struct stat *files, size_t n, qc_user *found)
{
    (void)u;
    DIR *proc = opendir("/proc");
    if (!proc)
        return 0; /* no /proc: nothing can be known */
    int self = (int)getpid(), hit = 0;
    struct dirent *de;
    while (!hit && (de = readdir(proc))) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 0 || pid == self)
            continue;
        char p[64];
        snprintf(p, sizeof(p), "/proc/%ld/fd", pid);
        if (scan_fds(p, files, n, &found->file)) {
            found->pid = (int)pid;
            comm_of(found->pid, found->comm, sizeof(found->comm));
            hit = 1;
        }
    }
    closedir(proc);
    return hit;
}

int qc_users_check(qc_ctx *ctx, const struct stat *files, const char *const *names, size_t n)
{
    qc_user u;
    memset(&u, 0, sizeof(u));
    if (!n || !ctx->io->users || ctx->io->users(ctx->io_user, files, n, &u) <= 0 || u.file >= n)
        return 0;
    char cb[160];
    return qc_fail(ctx, QC_ERR_LOCKED, EBUSY, names[u.file], "in use",
                   "'%s' is in use by process %d (%s); not changing it while another process has it open",
                   names[u.file], u.pid, qc_printable(u.comm, cb, sizeof(cb)));
}

bool qc_held(const qc_ctx *ctx, dev_t dev, ino_t ino)
{
    for (size_t i = 0; i < ctx->nheld; i++)
        if (ctx->held[i].dev == dev && ctx->held[i].ino == ino)
            return true;
    return false;
}

