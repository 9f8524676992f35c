/* memfs.c - see memfs.h. Test-only; bounded so a fuzz input cannot exhaust memory. */
#define _GNU_SOURCE
#include "memfs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXFILES 16
#define MAXSIZE (64u << 20)
#define FD0 1000

typedef struct mfile {
    char *name;
    unsigned char *data;
    size_t len;
    size_t cap;  /* allocated; grows by doubling so appends stay cheap */
    int open;
} mfile;

static mfile files[MAXFILES];

void memfs_reset(void)
{
    for (int i = 0; i < MAXFILES; i++) {
        free(files[i].name);
        free(files[i].data);
        memset(&files[i], 0, sizeof(files[i]));
    }
}

static const char *norm(const char *p)
{
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    return p;
}

static int find(const char *name)
{
    name = norm(name);
    for (int i = 0; i < MAXFILES; i++)
        if (files[i].name && !strcmp(files[i].name, name))
            return i;
    return -1;
}

int memfs_add(const char *name, const void *data, size_t len)
{
    int i = find(name);
    if (i < 0)
        for (i = 0; i < MAXFILES && files[i].name; i++)
            ;
    if (i >= MAXFILES || len > MAXSIZE)
        return -ENOSPC;
    free(files[i].name);
    free(files[i].data);
    files[i].name = strdup(norm(name));
    files[i].data = malloc(len ? len : 1);
    if (!files[i].name || !files[i].data)
        return -ENOMEM;
    memcpy(files[i].data, data, len);
    files[i].len = len;
    files[i].cap = len ? len : 1;
    return 0;
}

static mfile *byfd(int fd)
{
    int i = fd - FD0;
    return i >= 0 && i < MAXFILES && files[i].name ? &files[i] : NULL;
}

static int m_open(void *u, const char *path, int flags, mode_t mode)
{
    (void)u;
    (void)mode;
    int i = find(path);
    if (i < 0 && (flags & O_CREAT)) {
        if (memfs_add(path, "", 0) < 0)
            return -ENOSPC;
        i = find(path);
    } else if (i >= 0 && (flags & O_CREAT) && (flags & O_EXCL)) {
        return -EEXIST;
    }
    if (i < 0)
        return -ENOENT;
    if (flags & O_TRUNC)
        files[i].len = 0;
    return FD0 + i;
}

static int m_close(void *u, int fd) { (void)u; (void)fd; return 0; }

static ssize_t m_pread(void *u, int fd, void *buf, size_t n, uint64_t off)
{
    (void)u;
    mfile *f = byfd(fd);
    if (!f)
        return -EBADF;
    if (off >= f->len)
        return 0;
    size_t k = n < f->len - off ? n : (size_t)(f->len - off);
    memcpy(buf, f->data + off, k);
    return (ssize_t)k;
}

static int grow(mfile *f, uint64_t len)
{
    if (len > MAXSIZE)
        return -ENOSPC;
    if (len > f->cap) {
        size_t cap = f->cap ? f->cap : 4096;
        while (cap < len)
            cap *= 2;
        cap = cap < MAXSIZE ? cap : MAXSIZE;
        unsigned char *d = realloc(f->data, cap);
        if (!d)
            return -ENOMEM;
        f->data = d;
        f->cap = cap;
    }
    if (len > f->len)
        memset(f->data + f->len, 0, (size_t)len - f->len);
    f->len = (size_t)len;
    return 0;
}

static ssize_t m_pwrite(void *u, int fd, const void *buf, size_t n, uint64_t off)
{
    (void)u;
    mfile *f = byfd(fd);
    if (!f)
        return -EBADF;
    if (off + n > f->len) {
        int r = grow(f, off + n);
        if (r < 0)
            return r;
    }
    memcpy(f->data + off, buf, n);
    return (ssize_t)n;
}

static int m_fsync(void *u, int fd) { (void)u; return byfd(fd) ? 0 : -EBADF; }

static int m_ftruncate(void *u, int fd, uint64_t len)
{
    (void)u;
    mfile *f = byfd(fd);
    return f ? grow(f, len) : -EBADF;
}

static void fill(struct stat *st, int i)
{
    memset(st, 0, sizeof(*st));
    st->st_mode = S_IFREG | 0644;
    st->st_dev = 1;
    st->st_ino = (ino_t)(i + 1);
    st->st_size = (off_t)files[i].len;
    st->st_blocks = (blkcnt_t)((files[i].len + 511) / 512);
}

static int m_fstat(void *u, int fd, struct stat *st)
{
    (void)u;
    if (!byfd(fd))
        return -EBADF;
    fill(st, fd - FD0);
    return 0;
}

static int m_stat(void *u, const char *path, struct stat *st)
{
    (void)u;
    int i = find(path);
    if (i < 0)
        return -ENOENT;
    fill(st, i);
    return 0;
}

static int m_rename(void *u, const char *from, const char *to, unsigned flags)
{
    (void)u;
    int i = find(from), j = find(to);
    if (i < 0)
        return -ENOENT;
    if (j >= 0 && (flags & QC_RENAME_NOREPLACE))
        return -EEXIST;
    if (j >= 0 && j != i) {
        free(files[j].name);
        free(files[j].data);
        memset(&files[j], 0, sizeof(files[j]));
    }
    char *n = strdup(norm(to));
    if (!n)
        return -ENOMEM;
    free(files[i].name);
    files[i].name = n;
    return 0;
}

static int m_unlink(void *u, const char *path)
{
    (void)u;
    int i = find(path);
    if (i < 0)
        return -ENOENT;
    free(files[i].name);
    free(files[i].data);
    memset(&files[i], 0, sizeof(files[i]));
    return 0;
}

static ssize_t m_copy(void *u, int in, uint64_t a, int out, uint64_t b, size_t n)
{
    (void)u; (void)in; (void)a; (void)out; (void)b; (void)n;
    return -EXDEV; /* the core falls back to read and write */
}

static int m_lock(void *u, int fd, int cmd, struct flock *fl)
{
    (void)u;
    (void)fd;
    if (cmd == F_OFD_GETLK)
        fl->l_type = F_UNLCK;
    return 0;
}

static int64_t m_seek(void *u, int fd, int64_t off, int whence)
{
    (void)u;
    mfile *f = byfd(fd);
    if (!f)
        return -EBADF;
    if (whence == SEEK_END)
        return (int64_t)f->len;
    if (off < 0 || (uint64_t)off >= f->len)
        return -ENXIO;
    return whence == SEEK_HOLE ? (int64_t)f->len : off;
}

static int m_fallocate(void *u, int fd, int mode, uint64_t off, uint64_t len)
{
    (void)u; (void)mode;
    mfile *f = byfd(fd);
    if (!f)
        return -EBADF;
    if (off < f->len)
        memset(f->data + off, 0, (size_t)(len < f->len - off ? len : f->len - off));
    return 0;
}

static int m_link(void *u, const char *from, const char *to)
{
    (void)u;
    int i = find(from);
    if (i < 0)
        return -ENOENT;
    if (find(to) >= 0)
        return -EEXIST;
    return memfs_add(to, files[i].data, files[i].len);
}

static ssize_t m_getxattr(void *u, const char *path, const char *name, void *buf, size_t n)
{
    (void)u; (void)path; (void)name; (void)buf; (void)n;
    return -ENOTSUP;
}

static int m_setxattr(void *u, const char *path, const char *name, const void *buf, size_t n)
{
    (void)u; (void)path; (void)name; (void)buf; (void)n;
    return -ENOTSUP;
}

static int m_fchown(void *u, int fd, uid_t uid, gid_t gid)
{
    (void)u; (void)uid; (void)gid;
    return byfd(fd) ? 0 : -EBADF; /* every file is ours */
}

static int m_fchmod(void *u, int fd, mode_t mode)
{
    (void)u; (void)mode;
    return byfd(fd) ? 0 : -EBADF;
}

/* No directories and no symlinks in memory: dir/rel is just a name. */
static int m_open_beneath(void *u, const char *dir, const char *rel, int flags, mode_t mode)
{
    char p[4096];
    if ((size_t)snprintf(p, sizeof(p), "%s/%s", dir, rel) >= sizeof(p))
        return -ENAMETOOLONG;
    return m_open(u, p, flags, mode);
}

static const qc_io mem_io = {
    m_open, m_close, m_pread, m_pwrite, m_fsync, m_ftruncate, m_fstat, m_stat,
    m_rename, m_unlink, m_copy, m_lock, m_seek, m_fallocate, m_link,
    m_getxattr, m_setxattr,
    NULL, /* writeback: nothing to start in memory */
    m_fchown, m_fchmod,
    NULL, /* users: no other process sees these files */
    m_open_beneath,
    NULL, /* devsize: no block devices in memory */
    NULL, /* discard */
};

const qc_io *memfs_io(void) { return &mem_io; }
