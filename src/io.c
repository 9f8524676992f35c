/* io.c - the I/O seam: the POSIX table and checked wrappers over it. */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/xattr.h>
#include <unistd.h>

static int p_open(void *u, const char *path, int flags, mode_t mode)
{
    (void)u;
    int fd = open(path, flags | O_CLOEXEC, mode);
    return fd < 0 ? -errno : fd;
}

static int p_close(void *u, int fd)
{
    (void)u;
    return close(fd) < 0 ? -errno : 0;
}

static ssize_t p_pread(void *u, int fd, void *buf, size_t n, uint64_t off)
{
    (void)u;
    ssize_t r;
    do
        r = pread(fd, buf, n, (off_t)off);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static ssize_t p_pwrite(void *u, int fd, const void *buf, size_t n, uint64_t off)
{
    (void)u;
    ssize_t r;
    do
        r = pwrite(fd, buf, n, (off_t)off);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static int p_fsync(void *u, int fd)
{
    (void)u;
    return fsync(fd) < 0 ? -errno : 0;
}

static int p_ftruncate(void *u, int fd, uint64_t len)
{
    (void)u;
    return ftruncate(fd, (off_t)len) < 0 ? -errno : 0;
}

static int p_fstat(void *u, int fd, struct stat *st)
{
    (void)u;
    return fstat(fd, st) < 0 ? -errno : 0;
}

static int p_stat(void *u, const char *path, struct stat *st)
{
    (void)u;
    return stat(path, st) < 0 ? -errno : 0;
}

static int p_rename(void *u, const char *from, const char *to, unsigned flags)
{
    (void)u;
    if (!(flags & QC_RENAME_NOREPLACE))
        return rename(from, to) < 0 ? -errno : 0;
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -errno;
    /* Filesystems without RENAME_NOREPLACE: link refuses an existing target. */
    if (link(from, to) < 0)
        return -errno;
    return unlink(from) < 0 ? -errno : 0;
}

static int p_unlink(void *u, const char *path)
{
    (void)u;
    return unlink(path) < 0 ? -errno : 0;
}

static ssize_t p_copy_range(void *u, int in, uint64_t in_off, int out,
                            uint64_t out_off, size_t n)
{
    (void)u;
    loff_t a = (loff_t)in_off, b = (loff_t)out_off;
    ssize_t r = copy_file_range(in, &a, out, &b, n, 0);
    return r < 0 ? -errno : r;
}

static int p_writeback(void *u, int fd)
{
    (void)u;
    return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) < 0 ? -errno : 0;
}

static int p_lock(void *u, int fd, int cmd, struct flock *fl)
{
    (void)u;
    int r;
    do
        r = fcntl(fd, cmd, fl);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int64_t p_seek(void *u, int fd, int64_t off, int whence)
{
    (void)u;
    off_t r = lseek(fd, (off_t)off, whence);
    return r < 0 ? -errno : (int64_t)r;
}

static int p_fallocate(void *u, int fd, int mode, uint64_t off, uint64_t len)
{
    (void)u;
    return fallocate(fd, mode, (off_t)off, (off_t)len) < 0 ? -errno : 0;
}

static int p_link(void *u, const char *from, const char *to)
{
    (void)u;
    return link(from, to) < 0 ? -errno : 0;
}

static ssize_t p_getxattr(void *u, const char *path, const char *name, void *buf, size_t n)
{
    (void)u;
    ssize_t r = getxattr(path, name, buf, n);
    return r < 0 ? -errno : r;
}

static int p_setxattr(void *u, const char *path, const char *name, const void *buf, size_t n)
{
    (void)u;
    return setxattr(path, name, buf, n, 0) < 0 ? -errno : 0;
}

static int p_fchown(void *u, int fd, uid_t uid, gid_t gid)
{
    (void)u;
    return fchown(fd, uid, gid) < 0 ? -errno : 0;
}

static int p_fchmod(void *u, int fd, mode_t mode)
{
    (void)u;
    return fchmod(fd, mode) < 0 ? -errno : 0;
}

/*
 * rel beneath dir, one component at a time: every directory opened with
 * O_NOFOLLOW from the one before, so no symlink is followed and nothing
 * swapped meanwhile can lead outside. The fallback for kernels without
 * openat2; exported for the C tests.
 */
int qc_open_beneath_walk(const char *dir, const char *rel, int flags, mode_t mode)
{
    int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    const char *p = rel;
    for (;;) {
        size_t n = strcspn(p, "/");
        char name[NAME_MAX + 1];
        if (n == 0 || n > NAME_MAX || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) {
            close(dfd);
            return n > NAME_MAX ? -ENAMETOOLONG : -EXDEV; /* only plain names beneath dir */
        }
        memcpy(name, p, n);
        name[n] = 0;
        bool last = p[n] == 0;
        int fd = last ? openat(dfd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)
                      : openat(dfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        close(dfd);
        if (fd < 0)
            return -e;
        if (last)
            return fd;
        dfd = fd;
        p += n + 1;
    }
}

static int p_open_beneath(void *u, const char *dir, const char *rel, int flags, mode_t mode)
{
    (void)u;
#ifdef SYS_openat2
    int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC),
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, dfd, rel, &how, sizeof(how));
    int e = errno;
    close(dfd);
    if (fd >= 0)
        return fd;
    if (e != ENOSYS && e != EPERM && e != EINVAL) /* EPERM: a seccomp filter that does not know it */
        return -e;
#endif
    return qc_open_beneath_walk(dir, rel, flags, mode);
}

static int p_devsize(void *u, int fd, uint64_t *bytes)
{
    (void)u;
    return ioctl(fd, BLKGETSIZE64, bytes) < 0 ? -errno : 0;
}

static int p_discard(void *u, int fd, uint64_t off, uint64_t len)
{
    (void)u;
    uint64_t range[2] = {off, len};
    return ioctl(fd, BLKDISCARD, range) < 0 ? -errno : 0;
}

static int p_lstat(void *u, const char *path, struct stat *st)
{
    (void)u;
    return lstat(path, st) < 0 ? -errno : 0;
}

static int p_listdir(void *u, const char *dir, int (*fn)(void *arg, const char *name, unsigned char type),
                     void *arg)
{
    (void)u;
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    struct dirent *de;
    int r = 0;
    while (r == 0 && (de = readdir(d)))
        r = fn(arg, de->d_name, de->d_type);
    closedir(d);
    return r;
}

static int p_realpath(void *u, const char *path, char *out)
{
    (void)u;
    return realpath(path, out) ? 0 : -errno;
}

static const qc_io posix_io = {
    p_open, p_close, p_pread, p_pwrite, p_fsync, p_ftruncate, p_fstat, p_stat,
    p_rename, p_unlink, p_copy_range, p_lock, p_seek, p_fallocate, p_link,
    p_getxattr, p_setxattr, p_writeback, p_fchown, p_fchmod, qc_users_posix,
    p_open_beneath,
    p_devsize, p_discard, p_lstat, p_listdir, p_realpath,
};

const qc_io *qc_io_posix(void) { return &posix_io; }

void qc_ctx_set_io(qc_ctx *ctx, const qc_io *io, void *user)
{
    ctx->io = io ? io : &posix_io;
    ctx->io_user = user;
}

int qc_sys_open(qc_ctx *ctx, const char *path, int flags, mode_t mode)
{
    int fd = ctx->io->open(ctx->io_user, path, flags, mode);
    if (fd < 0)
        return qc_fail(ctx, qc_errno_code(-fd), -fd, path, "open",
                       "Could not open '%s': %s", path, strerror(-fd));
    return fd;
}

void qc_sys_close(qc_ctx *ctx, int fd)
{
    if (fd >= 0)
        ctx->io->close(ctx->io_user, fd);
}

int qc_pread_full(qc_ctx *ctx, int fd, const char *path, void *buf, size_t n,
                  uint64_t off)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = ctx->io->pread(ctx->io_user, fd, p, n, off);
        if (r < 0)
            return qc_fail(ctx, qc_errno_code((int)-r), (int)-r, path, "read",
                           "Could not read '%s' at offset %llu: %s", path,
                           (unsigned long long)off, strerror((int)-r));
        if (r == 0) {
            memset(p, 0, n); /* past EOF reads as zeros, as in QEMU */
            return 0;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int qc_pread_exact(qc_ctx *ctx, int fd, const char *path, void *buf, size_t n,
                   uint64_t off, const char *what)
{
    uint64_t size;
    int r = qc_sys_size(ctx, fd, path, &size, NULL);
    if (r < 0)
        return r;
    if (qc_past(off, n, size))
        return qc_fail(ctx, QC_ERR_FORMAT, 0, path, "open",
                       "'%s': %s at offset %llu (%zu bytes) lies past the end of the file",
                       path, what, (unsigned long long)off, n);
    return qc_pread_full(ctx, fd, path, buf, n, off);
}

int qc_pwrite_full(qc_ctx *ctx, int fd, const char *path, const void *buf,
                   size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t r = ctx->io->pwrite(ctx->io_user, fd, p, n, off);
        if (r < 0)
            return qc_fail(ctx, qc_errno_code((int)-r), (int)-r, path, "write",
                           "Could not write '%s' at offset %llu: %s", path,
                           (unsigned long long)off, strerror((int)-r));
        if (r == 0)
            return qc_fail(ctx, QC_ERR_NOSPC, ENOSPC, path, "write",
                           "Could not write '%s' at offset %llu: %s", path,
                           (unsigned long long)off, strerror(ENOSPC));
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int qc_sys_fsync(qc_ctx *ctx, int fd, const char *path)
{
    int r = ctx->io->fsync(ctx->io_user, fd);
    if (r < 0)
        return qc_fail(ctx, qc_errno_code(-r), -r, path, "fsync",
                       "Could not flush '%s': %s", path, strerror(-r));
    return 0;
}

int qc_sys_fstat(qc_ctx *ctx, int fd, const char *path, struct stat *st)
{
    int r = ctx->io->fstat(ctx->io_user, fd, st);
    if (r < 0)
        return qc_fail(ctx, qc_errno_code(-r), -r, path, "stat",
                       "Could not stat '%s': %s", path, strerror(-r));
    return 0;
}

int qc_sys_size(qc_ctx *ctx, int fd, const char *path, uint64_t *size, bool *blockdev)
{
    struct stat st;
    int r = qc_sys_fstat(ctx, fd, path, &st);
    if (r < 0)
        return r;
    if (blockdev)
        *blockdev = S_ISBLK(st.st_mode);
    if (!S_ISBLK(st.st_mode)) {
        *size = (uint64_t)st.st_size;
        return 0;
    }
    /* st_size is 0 for a device: ask the device */
    if (ctx->io->devsize) {
        r = ctx->io->devsize(ctx->io_user, fd, size);
    } else {
        int64_t end = ctx->io->seek(ctx->io_user, fd, 0, SEEK_END);
        r = end < 0 ? (int)end : 0;
        *size = end < 0 ? 0 : (uint64_t)end;
    }
    if (r < 0)
        return qc_fail(ctx, qc_errno_code(-r), -r, path, "stat", "Could not get the size of '%s': %s", path,
                       strerror(-r));
    return 0;
}

int qc_sys_discard(qc_ctx *ctx, int fd, uint64_t off, uint64_t len)
{
    if (!ctx->io->discard)
        return -EOPNOTSUPP;
    return ctx->io->discard(ctx->io_user, fd, off, len);
}

/* listdir's own failure told apart from the callback's stop value */
typedef struct list_call {
    qc_dirent_fn fn;
    void *arg;
    int stop;
} list_call;

static int list_one(void *arg, const char *name, unsigned char type)
{
    list_call *c = arg;
    if (!strcmp(name, ".") || !strcmp(name, ".."))
        return 0;
    return c->stop = c->fn(c->arg, name, type);
}

int qc_sys_listdir(qc_ctx *ctx, const char *dir, qc_dirent_fn fn, void *arg)
{
    list_call c = {fn, arg, 0};
    int r = ctx->io->listdir(ctx->io_user, dir, list_one, &c);
    if (c.stop || r == 0)
        return c.stop;
    return qc_fail(ctx, qc_errno_code(-r), -r, dir, "scan", "Could not list '%s': %s", dir, strerror(-r));
}

char *qc_sys_realpath(qc_ctx *ctx, const char *path, int *err)
{
    char buf[PATH_MAX];
    int r = ctx->io->realpath(ctx->io_user, path, buf);
    *err = -r;
    return r < 0 ? NULL : qc_strdup(ctx, buf);
}

bool qc_sys_is_symlink(qc_ctx *ctx, const char *path, unsigned char type)
{
    struct stat st;
    if (type != DT_UNKNOWN)
        return type == DT_LNK;
    return ctx->io->lstat(ctx->io_user, path, &st) == 0 && S_ISLNK(st.st_mode);
}
