/*
 * io_fault.c - fault injection over the POSIX I/O table, for tests.
 *
 * Counts mutating calls (owner and mode changes too). ERROR mode fails call number nth once. CRASH mode
 * fails call nth and everything after it, and first undoes the writes that
 * no fsync made durable (all of them, or a seeded random subset), which is
 * what a power cut may do.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct undo {
    char *path;
    dev_t dev;
    ino_t ino;
    uint64_t off;
    uint64_t len;      /* bytes of old data (0 for a size-only record) */
    uint8_t *old;
    uint64_t old_size; /* file size before the call */
} undo;

typedef struct fdpath {
    int fd;
    char *path;
} fdpath;

struct qc_fault {
    int mode;
    uint64_t nth;
    int err;
    uint64_t seed;
    uint64_t count;
    uint64_t writebacks;
    bool fired;
    bool crashed;
    undo *log;
    size_t nlog;
    fdpath *fds;
    size_t nfds;
};

static const qc_io *P(void) { return qc_io_posix(); }

qc_fault *qc_fault_new(int mode, uint64_t nth, int err, uint64_t seed)
{
    qc_fault *f = calloc(1, sizeof(*f));
    if (f) {
        f->mode = mode;
        f->nth = nth;
        f->err = err ? err : EIO;
        f->seed = seed;
    }
    return f;
}

static void drop_undo(undo *u)
{
    free(u->path);
    free(u->old);
}

void qc_fault_free(qc_fault *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nlog; i++)
        drop_undo(&f->log[i]);
    for (size_t i = 0; i < f->nfds; i++)
        free(f->fds[i].path);
    free(f->log);
    free(f->fds);
    free(f);
}

uint64_t qc_fault_count(const qc_fault *f) { return f->count; }
bool qc_fault_fired(const qc_fault *f) { return f->fired; }
uint64_t qc_fault_writebacks(const qc_fault *f) { return f->writebacks; }

static const char *fd_path(qc_fault *f, int fd)
{
    for (size_t i = 0; i < f->nfds; i++)
        if (f->fds[i].fd == fd)
            return f->fds[i].path;
    return NULL;
}

static uint64_t rnd(qc_fault *f)
{
    f->seed ^= f->seed << 13;
    f->seed ^= f->seed >> 7;
    f->seed ^= f->seed << 17;
    return f->seed;
}

/* Power cut: undo unsynced changes, newest first. */
static void crash(qc_fault *f)
{
    f->crashed = true;
    for (size_t i = f->nlog; i-- > 0;) {
        undo *u = &f->log[i];
        if (f->seed && (rnd(f) & 1))
            continue; /* this write happened to reach the disk */
        int fd = open(u->path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && st.st_dev == u->dev && st.st_ino == u->ino) {
            if (u->len && pwrite(fd, u->old, u->len, (off_t)u->off) < 0)
                (void)0;
            if (!f->seed && (uint64_t)st.st_size > u->old_size && ftruncate(fd, (off_t)u->old_size) < 0)
                (void)0;
        }
        close(fd);
    }
}

/* Count a mutating call; non-zero return = fail it with that -errno. */
static int tick(qc_fault *f)
{
    if (f->crashed)
        return -EIO;
    f->count++;
    if (f->mode == QC_FAULT_NONE || f->count != f->nth)
        return 0;
    f->fired = true;
    if (f->mode == QC_FAULT_CRASH) {
        crash(f);
        return -EIO;
    }
    return -f->err;
}

/* Remember what [off, off+n) of fd held, to undo it at a crash. */
static void record(qc_fault *f, int fd, uint64_t off, uint64_t n)
{
    if (f->mode != QC_FAULT_CRASH)
        return;
    struct stat st;
    const char *path = fd_path(f, fd);
    if (!path || fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
        return;
    undo u = {0};
    u.dev = st.st_dev;
    u.ino = st.st_ino;
    u.old_size = (uint64_t)st.st_size;
    if (S_ISBLK(st.st_mode) && P()->devsize(NULL, fd, &u.old_size) < 0)
        return;
    u.off = off;
    u.len = off < u.old_size ? qc_min(n, u.old_size - off) : 0;
    /* Bytes past the old end read back as zeros once undone. */
    uint64_t total = n;
    u.old = calloc(1, total ? total : 1);
    u.path = strdup(path);
    if (!u.old || !u.path) {
        drop_undo(&u);
        return;
    }
    if (u.len && pread(fd, u.old, u.len, (off_t)off) < 0)
        memset(u.old, 0, u.len);
    u.len = total;
    undo *nl = realloc(f->log, (f->nlog + 1) * sizeof(*nl));
    if (!nl) {
        drop_undo(&u);
        return;
    }
    f->log = nl;
    f->log[f->nlog++] = u;
}

static int f_open(void *v, const char *path, int flags, mode_t mode)
{
    qc_fault *f = v;
    if (f->crashed)
        return -EIO;
    int fd = P()->open(NULL, path, flags, mode);
    if (fd >= 0) {
        fdpath *n = realloc(f->fds, (f->nfds + 1) * sizeof(*n));
        if (n) {
            f->fds = n;
            f->fds[f->nfds].fd = fd;
            f->fds[f->nfds].path = strdup(path);
            f->nfds++;
        }
    }
    return fd;
}

static int f_close(void *v, int fd)
{
    qc_fault *f = v;
    for (size_t i = 0; i < f->nfds; i++)
        if (f->fds[i].fd == fd) {
            free(f->fds[i].path);
            f->fds[i] = f->fds[--f->nfds];
            break;
        }
    return P()->close(NULL, fd);
}

static ssize_t f_pread(void *v, int fd, void *buf, size_t n, uint64_t off)
{
    qc_fault *f = v;
    if (f->crashed)
        return -EIO;
    return P()->pread(NULL, fd, buf, n, off);
}

static ssize_t f_pwrite(void *v, int fd, const void *buf, size_t n, uint64_t off)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r)
        return r;
    record(f, fd, off, n);
    if (f->mode == QC_FAULT_SHORT && n > 1)
        n /= 2;
    return P()->pwrite(NULL, fd, buf, n, off);
}

static int f_fsync(void *v, int fd)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r)
        return r;
    struct stat st;
    if (fstat(fd, &st) == 0) {
        size_t o = 0;
        for (size_t i = 0; i < f->nlog; i++) {
            if (f->log[i].dev == st.st_dev && f->log[i].ino == st.st_ino)
                drop_undo(&f->log[i]);
            else
                f->log[o++] = f->log[i];
        }
        f->nlog = o;
    }
    return P()->fsync(NULL, fd);
}

static int f_ftruncate(void *v, int fd, uint64_t len)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r)
        return r;
    struct stat st;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size > len)
        record(f, fd, len, (uint64_t)st.st_size - len);
    else
        record(f, fd, len, 0);
    return P()->ftruncate(NULL, fd, len);
}

static int f_fstat(void *v, int fd, struct stat *st)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : P()->fstat(NULL, fd, st);
}

static int f_stat(void *v, const char *path, struct stat *st)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : P()->stat(NULL, path, st);
}

static void repath(qc_fault *f, const char *from, const char *to)
{
    for (size_t i = 0; i < f->nlog; i++)
        if (!strcmp(f->log[i].path, from)) {
            char *n = strdup(to);
            if (n) {
                free(f->log[i].path);
                f->log[i].path = n;
            }
        }
    for (size_t i = 0; i < f->nfds; i++)
        if (f->fds[i].path && !strcmp(f->fds[i].path, from)) {
            char *n = strdup(to);
            if (n) {
                free(f->fds[i].path);
                f->fds[i].path = n;
            }
        }
}

static int f_rename(void *v, const char *from, const char *to, unsigned flags)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r)
        return r;
    r = P()->rename(NULL, from, to, flags);
    if (r == 0)
        repath(f, from, to);
    return r;
}

static int f_unlink(void *v, const char *path)
{
    qc_fault *f = v;
    int r = tick(f);
    return r ? r : P()->unlink(NULL, path);
}

static ssize_t f_copy_range(void *v, int in, uint64_t in_off, int out, uint64_t out_off, size_t n)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r)
        return r;
    record(f, out, out_off, n);
    if (f->mode == QC_FAULT_SHORT && n > 1)
        n /= 2;
    return P()->copy_range(NULL, in, in_off, out, out_off, n);
}

static int f_lock(void *v, int fd, int cmd, struct flock *fl)
{
    qc_fault *f = v;
    if (f->crashed && cmd != F_OFD_GETLK && fl->l_type != F_UNLCK)
        return -EIO;
    return P()->lock(NULL, fd, cmd, fl);
}

static int64_t f_seek(void *v, int fd, int64_t off, int whence)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : P()->seek(NULL, fd, off, whence);
}

static int f_fallocate(void *v, int fd, int mode, uint64_t off, uint64_t len)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r)
        return r;
    record(f, fd, off, len);
    return P()->fallocate(NULL, fd, mode, off, len);
}

static int f_link(void *v, const char *from, const char *to)
{
    qc_fault *f = v;
    int r = tick(f);
    return r ? r : P()->link(NULL, from, to);
}

/* Dates are cosmetic: not counted as steps, but nothing works after a crash. */
static ssize_t f_getxattr(void *v, const char *path, const char *name, void *buf, size_t n)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : P()->getxattr(NULL, path, name, buf, n);
}

static int f_setxattr(void *v, const char *path, const char *name, const void *buf, size_t n)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : P()->setxattr(NULL, path, name, buf, n);
}

/* Not a step either: starting writeback makes nothing durable. */
static int f_writeback(void *v, int fd)
{
    qc_fault *f = v;
    if (f->crashed)
        return -EIO;
    f->writebacks++;
    return P()->writeback(NULL, fd);
}

/* Owner and mode changes are steps (they must be durable before the rename that publishes the file). */
static int f_fchown(void *v, int fd, uid_t uid, gid_t gid)
{
    qc_fault *f = v;
    int r = tick(f);
    return r ? r : P()->fchown(NULL, fd, uid, gid);
}

static int f_fchmod(void *v, int fd, mode_t mode)
{
    qc_fault *f = v;
    int r = tick(f);
    return r ? r : P()->fchmod(NULL, fd, mode);
}

static int f_users(void *v, const struct stat *files, size_t n, qc_user *found)
{
    qc_fault *f = v;
    return f->crashed ? 0 : P()->users(NULL, files, n, found);
}

static int f_open_beneath(void *v, const char *dir, const char *rel, int flags, mode_t mode)
{
    qc_fault *f = v;
    if (f->crashed)
        return -EIO;
    int fd = P()->open_beneath(NULL, dir, rel, flags, mode);
    if (fd >= 0) {
        size_t n = strlen(dir) + strlen(rel) + 2;
        char *path = malloc(n);
        fdpath *nf = path ? realloc(f->fds, (f->nfds + 1) * sizeof(*nf)) : NULL;
        if (nf) {
            snprintf(path, n, "%s/%s", dir, rel);
            f->fds = nf;
            f->fds[f->nfds].fd = fd;
            f->fds[f->nfds].path = path;
            f->nfds++;
        } else {
            free(path);
        }
    }
    return fd;
}

static int f_devsize(void *v, int fd, uint64_t *bytes)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : P()->devsize(NULL, fd, bytes);
}

static int f_discard(void *v, int fd, uint64_t off, uint64_t len)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r)
        return r;
    record(f, fd, off, len);
    return P()->discard(NULL, fd, off, len);
}

static int f_lstat(void *v, const char *path, struct stat *st)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : P()->lstat(NULL, path, st);
}

static int f_listdir(void *v, const char *dir, int (*fn)(void *arg, const char *name, unsigned char type),
                     void *arg)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : P()->listdir(NULL, dir, fn, arg);
}

static int f_realpath(void *v, const char *path, char *out)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : P()->realpath(NULL, path, out);
}

static const qc_io fault_io = {
    f_open, f_close, f_pread, f_pwrite, f_fsync, f_ftruncate, f_fstat, f_stat,
    f_rename, f_unlink, f_copy_range, f_lock, f_seek, f_fallocate, f_link,
    f_getxattr, f_setxattr, f_writeback, f_fchown, f_fchmod, f_users,
    f_open_beneath, f_devsize, f_discard, f_lstat, f_listdir, f_realpath,
};

void qc_ctx_set_fault(qc_ctx *ctx, qc_fault *f)
{
    ctx->fault = f;
    if (f)
        qc_ctx_set_io(ctx, &fault_io, f);
    else
        qc_ctx_set_io(ctx, NULL, NULL);
}
