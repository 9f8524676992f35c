/*
 * io_fault.c - fault injection over any I/O table (POSIX by default), for
 * tests.
 *
 * Counts mutating calls (owner and mode changes too). ERROR mode fails call
 * number nth once. CRASH mode fails call nth and everything after it, and
 * first undoes what a power cut may undo:
 * - writes that no fsync of their file made durable (all of them, or a
 *   seeded random subset);
 * - directory changes (a new file's name, link, unlink, rename) that no
 *   fsync of the directory holding the name made durable. POSIX promises
 *   nothing more: fsync of a file does not make its name durable, and a
 *   rename is durable once the directory holding the new name is synced
 *   (ext4 and XFS behave so; we ask no more of them). Each change stays
 *   atomic (a rename is undone whole), and changes are lost newest first:
 *   all of the pending ones, or with a seed a random newest part of them,
 *   as a journalling file system commits them in order.
 * To undo an unlink or a replacing rename, the old file is kept under a
 * hidden name (.qc-fault-*) in its directory until the change is durable;
 * listings do not show those names.
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

/* a directory change not yet durable */
enum { D_CREATE, D_LINK, D_UNLINK, D_RENAME };
typedef struct dirop {
    int kind;
    char *path;     /* the name made (create, link, rename's target) or removed (unlink) */
    char *from;     /* rename: the old name */
    char *stash;    /* unlink: the removed file; rename: the file it replaced (or NULL) */
    dev_t fdev;     /* the file the name refers to */
    ino_t fino;
    dev_t ddev;     /* the directory whose fsync makes it durable */
    ino_t dino;
} dirop;

typedef struct fdpath {
    int fd;
    char *path;
} fdpath;

struct qc_fault {
    const qc_io *lo; /* the table below */
    void *lu;
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
    dirop *dops;
    size_t ndops;
    unsigned stashes; /* hidden names made so far */
};

qc_fault *qc_fault_new_over(const qc_io *lower, void *lower_user, int mode, uint64_t nth, int err, uint64_t seed)
{
    qc_fault *f = calloc(1, sizeof(*f));
    if (f) {
        f->lo = lower ? lower : qc_io_posix();
        f->lu = lower ? lower_user : NULL;
        f->mode = mode;
        f->nth = nth;
        f->err = err ? err : EIO;
        f->seed = seed;
    }
    return f;
}

qc_fault *qc_fault_new(int mode, uint64_t nth, int err, uint64_t seed)
{
    return qc_fault_new_over(NULL, NULL, mode, nth, err, seed);
}

static void drop_undo(undo *u)
{
    free(u->path);
    free(u->old);
}

/* The change is durable (or undone): the kept old file goes. */
static void drop_dirop(qc_fault *f, dirop *d, bool unlink_stash)
{
    if (d->stash && unlink_stash)
        f->lo->unlink(f->lu, d->stash);
    free(d->path);
    free(d->from);
    free(d->stash);
}

void qc_fault_free(qc_fault *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nlog; i++)
        drop_undo(&f->log[i]);
    for (size_t i = 0; i < f->nfds; i++)
        free(f->fds[i].path);
    for (size_t i = 0; i < f->ndops; i++)
        drop_dirop(f, &f->dops[i], true); /* no power cut came: they stay */
    free(f->log);
    free(f->fds);
    free(f->dops);
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

static bool same_file(qc_fault *f, const char *path, dev_t dev, ino_t ino)
{
    struct stat st;
    return f->lo->stat(f->lu, path, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

/* Put a kept file back at path (unless something else holds the name now). */
static void unstash(qc_fault *f, char **stash, const char *path)
{
    if (*stash && f->lo->rename(f->lu, *stash, path, QC_RENAME_NOREPLACE) == 0) {
        free(*stash);
        *stash = NULL;
    }
}

static void undo_dirop(qc_fault *f, dirop *d)
{
    switch (d->kind) {
    case D_CREATE:
    case D_LINK:
        if (same_file(f, d->path, d->fdev, d->fino))
            f->lo->unlink(f->lu, d->path);
        break;
    case D_UNLINK:
        unstash(f, &d->stash, d->path);
        break;
    case D_RENAME:
        if (same_file(f, d->path, d->fdev, d->fino) &&
            f->lo->rename(f->lu, d->path, d->from, QC_RENAME_NOREPLACE) == 0)
            unstash(f, &d->stash, d->path);
        break;
    }
}

/* Power cut: undo unsynced writes, then unsynced directory changes, newest first. */
static void crash(qc_fault *f)
{
    f->crashed = true;
    for (size_t i = f->nlog; i-- > 0;) {
        undo *u = &f->log[i];
        if (f->seed && (rnd(f) & 1))
            continue; /* this write happened to reach the disk */
        int fd = f->lo->open(f->lu, u->path, O_WRONLY, 0);
        if (fd < 0)
            continue;
        struct stat st;
        if (f->lo->fstat(f->lu, fd, &st) == 0 && st.st_dev == u->dev && st.st_ino == u->ino) {
            if (u->len)
                (void)f->lo->pwrite(f->lu, fd, u->old, u->len, u->off);
            if (!f->seed && (uint64_t)st.st_size > u->old_size)
                (void)f->lo->ftruncate(f->lu, fd, u->old_size);
        }
        f->lo->close(f->lu, fd);
    }
    /* the oldest changes reached the disk: all, or with a seed a random part of them */
    size_t kept = f->seed ? (size_t)(rnd(f) % (f->ndops + 1)) : 0;
    for (size_t i = f->ndops; i-- > kept;)
        undo_dirop(f, &f->dops[i]);
    for (size_t i = 0; i < f->ndops; i++)
        drop_dirop(f, &f->dops[i], true); /* kept: durable; undone: put back if it could be */
    f->ndops = 0;
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

/* A device's size from the table below (lseek when it has no devsize). */
static int lower_size(qc_fault *f, int fd, uint64_t *bytes)
{
    if (f->lo->devsize)
        return f->lo->devsize(f->lu, fd, bytes);
    int64_t end = f->lo->seek(f->lu, fd, 0, SEEK_END);
    *bytes = end < 0 ? 0 : (uint64_t)end;
    return end < 0 ? (int)end : 0;
}

/* Identity of the directory holding path. */
static int dir_of(qc_fault *f, const char *path, struct stat *st)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return f->lo->stat(f->lu, ".", st);
    char *d = strndup(path, slash == path ? 1 : (size_t)(slash - path));
    int r = d ? f->lo->stat(f->lu, d, st) : -ENOMEM;
    free(d);
    return r;
}

/*
 * Log directory change kind of name path (for a rename: from, with the
 * replaced file kept under stash). The file is the one path names now.
 */
static void log_dirop(qc_fault *f, int kind, const char *path, const char *from, char *stash)
{
    struct stat fs, ds;
    dirop d = {.kind = kind, .stash = stash};
    if ((kind == D_UNLINK ? f->lo->stat(f->lu, stash, &fs) : f->lo->stat(f->lu, path, &fs)) < 0 ||
        dir_of(f, path, &ds) < 0 || !(d.path = strdup(path)) || (from && !(d.from = strdup(from)))) {
        drop_dirop(f, &d, true); /* cannot be undone: as if it were durable */
        return;
    }
    d.fdev = fs.st_dev;
    d.fino = fs.st_ino;
    d.ddev = ds.st_dev;
    d.dino = ds.st_ino;
    dirop *n = realloc(f->dops, (f->ndops + 1) * sizeof(*n));
    if (!n) {
        drop_dirop(f, &d, true);
        return;
    }
    f->dops = n;
    f->dops[f->ndops++] = d;
}

#define STASH_PREFIX ".qc-fault-"

/* Keep the file at path under a hidden name beside it (NULL if it cannot be). */
static char *stash_file(qc_fault *f, const char *path)
{
    const char *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path) + 1 : 0;
    char *s = NULL;
    if (asprintf(&s, "%.*s" STASH_PREFIX "%d-%u", dl, path, (int)getpid(), f->stashes++) < 0)
        return NULL;
    if (f->lo->link(f->lu, path, s) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

/* An open that may create path: is it there already? */
static bool may_create(qc_fault *f, const char *path, int flags)
{
    struct stat st;
    return f->mode == QC_FAULT_CRASH && (flags & O_CREAT) && f->lo->stat(f->lu, path, &st) == -ENOENT;
}

/* Remember what [off, off+n) of fd held, to undo it at a crash. */
static void record(qc_fault *f, int fd, uint64_t off, uint64_t n)
{
    if (f->mode != QC_FAULT_CRASH)
        return;
    struct stat st;
    const char *path = fd_path(f, fd);
    if (!path || f->lo->fstat(f->lu, fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
        return;
    undo u = {0};
    u.dev = st.st_dev;
    u.ino = st.st_ino;
    u.old_size = (uint64_t)st.st_size;
    if (S_ISBLK(st.st_mode) && lower_size(f, fd, &u.old_size) < 0)
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
    if (u.len && f->lo->pread(f->lu, fd, u.old, u.len, off) < 0)
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
    bool create = may_create(f, path, flags);
    int fd = f->lo->open(f->lu, path, flags, mode);
    if (fd >= 0 && create)
        log_dirop(f, D_CREATE, path, NULL, NULL);
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
    return f->lo->close(f->lu, fd);
}

static ssize_t f_pread(void *v, int fd, void *buf, size_t n, uint64_t off)
{
    qc_fault *f = v;
    if (f->crashed)
        return -EIO;
    return f->lo->pread(f->lu, fd, buf, n, off);
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
    return f->lo->pwrite(f->lu, fd, buf, n, off);
}

static int f_fsync(void *v, int fd)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r)
        return r;
    struct stat st;
    if ((r = f->lo->fsync(f->lu, fd)) < 0 || f->lo->fstat(f->lu, fd, &st) < 0)
        return r;
    size_t o = 0;
    for (size_t i = 0; i < f->nlog; i++) {
        if (f->log[i].dev == st.st_dev && f->log[i].ino == st.st_ino)
            drop_undo(&f->log[i]);
        else
            f->log[o++] = f->log[i];
    }
    f->nlog = o;
    /* a directory: the changes of its names are durable now */
    o = 0;
    for (size_t i = 0; i < f->ndops; i++) {
        if (S_ISDIR(st.st_mode) && f->dops[i].ddev == st.st_dev && f->dops[i].dino == st.st_ino)
            drop_dirop(f, &f->dops[i], true);
        else
            f->dops[o++] = f->dops[i];
    }
    f->ndops = o;
    return 0;
}

static int f_ftruncate(void *v, int fd, uint64_t len)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r)
        return r;
    struct stat st;
    if (f->lo->fstat(f->lu, fd, &st) == 0 && (uint64_t)st.st_size > len)
        record(f, fd, len, (uint64_t)st.st_size - len);
    else
        record(f, fd, len, 0);
    return f->lo->ftruncate(f->lu, fd, len);
}

static int f_fstat(void *v, int fd, struct stat *st)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : f->lo->fstat(f->lu, fd, st);
}

static int f_stat(void *v, const char *path, struct stat *st)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : f->lo->stat(f->lu, path, st);
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
    struct stat a, b;
    bool log = f->mode == QC_FAULT_CRASH && f->lo->stat(f->lu, from, &a) == 0;
    bool replaces = log && f->lo->stat(f->lu, to, &b) == 0;
    if (replaces && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        log = replaces = false; /* two names of one file: nothing changes */
    char *stash = replaces && !(flags & QC_RENAME_NOREPLACE) ? stash_file(f, to) : NULL;
    r = f->lo->rename(f->lu, from, to, flags);
    if (r < 0) {
        if (stash)
            f->lo->unlink(f->lu, stash);
        free(stash);
        return r;
    }
    repath(f, from, to);
    if (log)
        log_dirop(f, D_RENAME, to, from, stash);
    return 0;
}

static int f_unlink(void *v, const char *path)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r)
        return r;
    char *stash = f->mode == QC_FAULT_CRASH ? stash_file(f, path) : NULL;
    r = f->lo->unlink(f->lu, path);
    if (r < 0 || !stash) {
        if (stash)
            f->lo->unlink(f->lu, stash);
        free(stash);
        return r;
    }
    repath(f, path, stash);
    log_dirop(f, D_UNLINK, path, NULL, stash);
    return 0;
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
    return f->lo->copy_range(f->lu, in, in_off, out, out_off, n);
}

static int f_lock(void *v, int fd, int cmd, struct flock *fl)
{
    qc_fault *f = v;
    if (f->crashed && cmd != F_OFD_GETLK && fl->l_type != F_UNLCK)
        return -EIO;
    return f->lo->lock(f->lu, fd, cmd, fl);
}

static int64_t f_seek(void *v, int fd, int64_t off, int whence)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : f->lo->seek(f->lu, fd, off, whence);
}

static int f_fallocate(void *v, int fd, int mode, uint64_t off, uint64_t len)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r)
        return r;
    record(f, fd, off, len);
    return f->lo->fallocate(f->lu, fd, mode, off, len);
}

static int f_link(void *v, const char *from, const char *to)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r || (r = f->lo->link(f->lu, from, to)) < 0)
        return r;
    if (f->mode == QC_FAULT_CRASH)
        log_dirop(f, D_LINK, to, NULL, NULL);
    return 0;
}

/* Dates are cosmetic: not counted as steps, but nothing works after a crash. */
static ssize_t f_getxattr(void *v, const char *path, const char *name, void *buf, size_t n)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : f->lo->getxattr(f->lu, path, name, buf, n);
}

static int f_setxattr(void *v, const char *path, const char *name, const void *buf, size_t n)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : f->lo->setxattr(f->lu, path, name, buf, n);
}

/* Not a step either: starting writeback makes nothing durable. */
static int f_writeback(void *v, int fd)
{
    qc_fault *f = v;
    if (f->crashed)
        return -EIO;
    f->writebacks++;
    return f->lo->writeback ? f->lo->writeback(f->lu, fd) : 0;
}

/* Owner and mode changes are steps (they must be durable before the rename that publishes the file). */
static int f_fchown(void *v, int fd, uid_t uid, gid_t gid)
{
    qc_fault *f = v;
    int r = tick(f);
    return r ? r : f->lo->fchown(f->lu, fd, uid, gid);
}

static int f_fchmod(void *v, int fd, mode_t mode)
{
    qc_fault *f = v;
    int r = tick(f);
    return r ? r : f->lo->fchmod(f->lu, fd, mode);
}

static int f_users(void *v, const struct stat *files, size_t n, qc_user *found)
{
    qc_fault *f = v;
    return f->crashed || !f->lo->users ? 0 : f->lo->users(f->lu, files, n, found);
}

static int f_open_beneath(void *v, const char *dir, const char *rel, int flags, mode_t mode)
{
    qc_fault *f = v;
    if (f->crashed)
        return -EIO;
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, rel) < 0)
        return -ENOMEM;
    bool create = may_create(f, path, flags);
    int fd = f->lo->open_beneath(f->lu, dir, rel, flags, mode);
    if (fd >= 0 && create)
        log_dirop(f, D_CREATE, path, NULL, NULL);
    fdpath *nf = fd >= 0 ? realloc(f->fds, (f->nfds + 1) * sizeof(*nf)) : NULL;
    if (nf) {
        f->fds = nf;
        f->fds[f->nfds].fd = fd;
        f->fds[f->nfds].path = path;
        f->nfds++;
    } else {
        free(path);
    }
    return fd;
}

static int f_devsize(void *v, int fd, uint64_t *bytes)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : lower_size(f, fd, bytes);
}

static int f_discard(void *v, int fd, uint64_t off, uint64_t len)
{
    qc_fault *f = v;
    int r = tick(f);
    if (r)
        return r;
    if (!f->lo->discard)
        return -EOPNOTSUPP;
    record(f, fd, off, len);
    return f->lo->discard(f->lu, fd, off, len);
}

static int f_lstat(void *v, const char *path, struct stat *st)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : f->lo->lstat(f->lu, path, st);
}

/* Listings do not show the files kept to undo a removal. */
struct hide {
    int (*fn)(void *arg, const char *name, unsigned char type);
    void *arg;
};

static int hide_stash(void *arg, const char *name, unsigned char type)
{
    struct hide *h = arg;
    return strncmp(name, STASH_PREFIX, strlen(STASH_PREFIX)) ? h->fn(h->arg, name, type) : 0;
}

static int f_listdir(void *v, const char *dir, int (*fn)(void *arg, const char *name, unsigned char type),
                     void *arg)
{
    qc_fault *f = v;
    if (f->crashed)
        return -EIO;
    struct hide h = {fn, arg};
    return f->lo->listdir(f->lu, dir, hide_stash, &h);
}

static int f_realpath(void *v, const char *path, char *out)
{
    qc_fault *f = v;
    return f->crashed ? -EIO : f->lo->realpath(f->lu, path, out);
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
