/*
 * memfs.c - see memfs.h. Test-only; bounded so a fuzz input cannot exhaust
 * memory. Names point at inodes (so hard links share data and identity, as
 * the volume code expects), directories are kept as a list of names, no
 * symlinks exist. Paths are read relative to the root whether or not they
 * start with '/'; "." and ".." are resolved by name.
 */
#define _GNU_SOURCE
#include "memfs.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXNAMES 64
#define MAXINODES 64
#define MAXDIRS 16
#define MAXFDS 64
#define MAXSIZE (64u << 20)
#define MAXTOTAL (256u << 20)
#define FD0 1000
#define DIR_INO (1u << 20)

typedef struct inode {
    bool used;
    unsigned char *data;
    size_t len;
    size_t cap;   /* allocated; grows by doubling so appends stay cheap */
    int nlink;
    int nopen;
} inode;

typedef struct name {
    char *path; /* normalised: no leading '/', no "." or ".." */
    int ino;
} name;

typedef struct ofile {
    bool used;
    int ino; /* -1: a directory */
    int dir; /* its index when a directory */
} ofile;

static inode inodes[MAXINODES];
static name names[MAXNAMES];
static char *dirs[MAXDIRS]; /* besides the root */
static ofile fds[MAXFDS];
static size_t total; /* bytes allocated to file data */

static void drop_inode(int i)
{
    inode *n = &inodes[i];
    if (n->nlink > 0 || n->nopen > 0)
        return;
    total -= n->cap;
    free(n->data);
    memset(n, 0, sizeof(*n));
}

void memfs_reset(void)
{
    for (int i = 0; i < MAXNAMES; i++)
        free(names[i].path);
    for (int i = 0; i < MAXINODES; i++)
        free(inodes[i].data);
    for (int i = 0; i < MAXDIRS; i++)
        free(dirs[i]);
    memset(names, 0, sizeof(names));
    memset(inodes, 0, sizeof(inodes));
    memset(dirs, 0, sizeof(dirs));
    memset(fds, 0, sizeof(fds));
    total = 0;
}

/* path without '/' runs, "." and ".." (above the root stays at the root); -ENAMETOOLONG */
static int norm(const char *path, char out[PATH_MAX])
{
    size_t o = 0;
    const char *p = path;
    while (*p) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
        } else if (n && !(n == 1 && p[0] == '.')) {
            if (o + n + 2 > PATH_MAX)
                return -ENAMETOOLONG;
            if (o)
                out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
        while (*p == '/')
            p++;
    }
    out[o] = 0;
    return 0;
}

static int find_name(const char *path)
{
    for (int i = 0; i < MAXNAMES; i++)
        if (names[i].path && !strcmp(names[i].path, path))
            return i;
    return -1;
}

/* index of directory path, MAXDIRS for the root, -1 if none */
static int find_dir(const char *path)
{
    if (!*path)
        return MAXDIRS;
    for (int i = 0; i < MAXDIRS; i++)
        if (dirs[i] && !strcmp(dirs[i], path))
            return i;
    return -1;
}

/* the directory holding normalised path exists */
static bool parent_exists(const char *path)
{
    const char *s = strrchr(path, '/');
    if (!s)
        return true;
    char p[PATH_MAX];
    memcpy(p, path, (size_t)(s - path));
    p[s - path] = 0;
    return find_dir(p) >= 0;
}

static int add_dirs(const char *path)
{
    char p[PATH_MAX];
    for (const char *s = strchr(path, '/'); s; s = strchr(s + 1, '/')) {
        memcpy(p, path, (size_t)(s - path));
        p[s - path] = 0;
        if (find_dir(p) >= 0)
            continue;
        if (find_name(p) >= 0)
            return -ENOTDIR;
        int i = 0;
        while (i < MAXDIRS && dirs[i])
            i++;
        if (i == MAXDIRS || !(dirs[i] = strdup(p)))
            return -ENOSPC;
    }
    return 0;
}

static int new_inode(void)
{
    for (int i = 0; i < MAXINODES; i++)
        if (!inodes[i].used) {
            inodes[i].used = true;
            return i;
        }
    return -ENOSPC;
}

/* a new name for inode ino (normalised path, not taken) */
static int add_name(const char *path, int ino)
{
    for (int i = 0; i < MAXNAMES; i++)
        if (!names[i].path) {
            if (!(names[i].path = strdup(path)))
                return -ENOMEM;
            names[i].ino = ino;
            inodes[ino].nlink++;
            return 0;
        }
    return -ENOSPC;
}

static void drop_name(int i)
{
    int ino = names[i].ino;
    free(names[i].path);
    memset(&names[i], 0, sizeof(names[i]));
    inodes[ino].nlink--;
    drop_inode(ino);
}

static int grow(inode *f, uint64_t len)
{
    if (len > MAXSIZE)
        return -EFBIG;
    if (len > f->cap) {
        size_t cap = f->cap ? f->cap : 4096;
        while (cap < len)
            cap *= 2;
        cap = cap < MAXSIZE ? cap : MAXSIZE;
        if (total - f->cap + cap > MAXTOTAL)
            return -ENOSPC;
        unsigned char *d = realloc(f->data, cap);
        if (!d)
            return -ENOMEM;
        total = total - f->cap + cap;
        f->data = d;
        f->cap = cap;
    }
    if (len > f->len)
        memset(f->data + f->len, 0, (size_t)len - f->len);
    f->len = (size_t)len;
    return 0;
}

int memfs_add(const char *path, const void *data, size_t len)
{
    char p[PATH_MAX];
    int r = norm(path, p);
    if (r < 0 || !*p || find_dir(p) >= 0)
        return r < 0 ? r : -EISDIR;
    if ((r = add_dirs(p)) < 0)
        return r;
    int i = find_name(p);
    if (i >= 0)
        drop_name(i);
    int ino = new_inode();
    if (ino < 0)
        return ino;
    if ((r = add_name(p, ino)) < 0 || (r = grow(&inodes[ino], len)) < 0) {
        if (inodes[ino].nlink == 0)
            drop_inode(ino);
        return r;
    }
    if (len)
        memcpy(inodes[ino].data, data, len);
    return 0;
}

int memfs_mkdir(const char *path)
{
    char p[PATH_MAX], q[PATH_MAX + 2];
    int r = norm(path, p);
    if (r < 0 || find_dir(p) >= 0)
        return r;
    snprintf(q, sizeof(q), "%s/x", p);
    return add_dirs(q);
}

const void *memfs_data(const char *path, size_t *len)
{
    char p[PATH_MAX];
    int i = norm(path, p) < 0 ? -1 : find_name(p);
    if (i < 0)
        return NULL;
    *len = inodes[names[i].ino].len;
    return inodes[names[i].ino].data;
}

static ofile *byfd(int fd)
{
    int i = fd - FD0;
    return i >= 0 && i < MAXFDS && fds[i].used ? &fds[i] : NULL;
}

/* the inode open as fd; NULL for a bad or directory fd */
static inode *fd_inode(int fd)
{
    ofile *o = byfd(fd);
    return o && o->ino >= 0 ? &inodes[o->ino] : NULL;
}

static int new_fd(int ino, int dir)
{
    for (int i = 0; i < MAXFDS; i++)
        if (!fds[i].used) {
            fds[i] = (ofile){true, ino, dir};
            if (ino >= 0)
                inodes[ino].nopen++;
            return FD0 + i;
        }
    return -EMFILE;
}

static int m_open(void *u, const char *path, int flags, mode_t mode)
{
    (void)u;
    (void)mode;
    char p[PATH_MAX];
    int r = norm(path, p);
    if (r < 0)
        return r;
    int d = find_dir(p);
    if (d >= 0)
        return (flags & O_ACCMODE) != O_RDONLY || (flags & O_CREAT) ? -EISDIR : new_fd(-1, d);
    if (flags & O_DIRECTORY)
        return find_name(p) >= 0 ? -ENOTDIR : -ENOENT;
    int i = find_name(p);
    if (i >= 0 && (flags & O_CREAT) && (flags & O_EXCL))
        return -EEXIST;
    if (i < 0) {
        if (!(flags & O_CREAT))
            return -ENOENT;
        if (!parent_exists(p))
            return -ENOENT;
        int ino = new_inode();
        if (ino < 0)
            return ino;
        if ((r = add_name(p, ino)) < 0) {
            drop_inode(ino);
            return r;
        }
        i = find_name(p);
    }
    int ino = names[i].ino;
    int fd = new_fd(ino, 0);
    if (fd >= 0 && (flags & O_TRUNC))
        inodes[ino].len = 0;
    return fd;
}

static int m_close(void *u, int fd)
{
    (void)u;
    ofile *o = byfd(fd);
    if (!o)
        return -EBADF;
    int ino = o->ino;
    memset(o, 0, sizeof(*o));
    if (ino >= 0) {
        inodes[ino].nopen--;
        drop_inode(ino);
    }
    return 0;
}

static ssize_t m_pread(void *u, int fd, void *buf, size_t n, uint64_t off)
{
    (void)u;
    inode *f = fd_inode(fd);
    if (!f)
        return byfd(fd) ? -EISDIR : -EBADF;
    if (off >= f->len)
        return 0;
    size_t k = n < f->len - off ? n : (size_t)(f->len - off);
    memcpy(buf, f->data + off, k);
    return (ssize_t)k;
}

static ssize_t m_pwrite(void *u, int fd, const void *buf, size_t n, uint64_t off)
{
    (void)u;
    inode *f = fd_inode(fd);
    if (!f)
        return -EBADF;
    if (off > MAXSIZE || n > MAXSIZE - off)
        return -EFBIG;
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
    inode *f = fd_inode(fd);
    return f ? grow(f, len) : -EBADF;
}

static void fill(struct stat *st, int ino, int dir)
{
    memset(st, 0, sizeof(*st));
    st->st_dev = 1;
    st->st_blksize = 4096;
    if (ino < 0) {
        st->st_mode = S_IFDIR | 0755;
        st->st_ino = (ino_t)(DIR_INO + (unsigned)dir);
        st->st_nlink = 2;
        return;
    }
    st->st_mode = S_IFREG | 0644;
    st->st_ino = (ino_t)(ino + 1);
    st->st_nlink = (nlink_t)inodes[ino].nlink;
    st->st_size = (off_t)inodes[ino].len;
    st->st_blocks = (blkcnt_t)((inodes[ino].len + 511) / 512);
}

static int m_fstat(void *u, int fd, struct stat *st)
{
    (void)u;
    ofile *o = byfd(fd);
    if (!o)
        return -EBADF;
    fill(st, o->ino, o->dir);
    return 0;
}

static int m_stat(void *u, const char *path, struct stat *st)
{
    (void)u;
    char p[PATH_MAX];
    int r = norm(path, p);
    if (r < 0)
        return r;
    int d = find_dir(p), i = find_name(p);
    if (d < 0 && i < 0)
        return -ENOENT;
    fill(st, d >= 0 ? -1 : names[i].ino, d);
    return 0;
}

static int m_rename(void *u, const char *from, const char *to, unsigned flags)
{
    (void)u;
    char a[PATH_MAX], b[PATH_MAX];
    int r = norm(from, a);
    if (r < 0 || (r = norm(to, b)) < 0)
        return r;
    int i = find_name(a), j = find_name(b);
    if (i < 0)
        return find_dir(a) >= 0 ? -EXDEV : -ENOENT; /* directories are not renamed here */
    if (find_dir(b) >= 0)
        return -EISDIR;
    if (!parent_exists(b))
        return -ENOENT;
    if (j >= 0 && (flags & QC_RENAME_NOREPLACE))
        return -EEXIST;
    if (j >= 0 && names[j].ino == names[i].ino)
        return 0; /* two links to one file: nothing to do */
    char *n = strdup(b);
    if (!n)
        return -ENOMEM;
    if (j >= 0)
        drop_name(j);
    free(names[i].path);
    names[i].path = n;
    return 0;
}

static int m_unlink(void *u, const char *path)
{
    (void)u;
    char p[PATH_MAX];
    int r = norm(path, p);
    if (r < 0)
        return r;
    int i = find_name(p);
    if (i < 0)
        return find_dir(p) >= 0 ? -EISDIR : -ENOENT;
    drop_name(i);
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
    if (!byfd(fd))
        return -EBADF;
    if (cmd == F_OFD_GETLK)
        fl->l_type = F_UNLCK;
    return 0;
}

static int64_t m_seek(void *u, int fd, int64_t off, int whence)
{
    (void)u;
    inode *f = fd_inode(fd);
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
    inode *f = fd_inode(fd);
    if (!f)
        return -EBADF;
    if (off < f->len)
        memset(f->data + off, 0, (size_t)(len < f->len - off ? len : f->len - off));
    return 0;
}

static int m_link(void *u, const char *from, const char *to)
{
    (void)u;
    char a[PATH_MAX], b[PATH_MAX];
    int r = norm(from, a);
    if (r < 0 || (r = norm(to, b)) < 0)
        return r;
    int i = find_name(a);
    if (i < 0)
        return find_dir(a) >= 0 ? -EPERM : -ENOENT;
    if (find_name(b) >= 0 || find_dir(b) >= 0)
        return -EEXIST;
    if (!parent_exists(b))
        return -ENOENT;
    return add_name(b, names[i].ino);
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

/* No symlinks in memory: dir/rel is just a name. */
static int m_open_beneath(void *u, const char *dir, const char *rel, int flags, mode_t mode)
{
    char p[PATH_MAX];
    if ((size_t)snprintf(p, sizeof(p), "%s/%s", dir, rel) >= sizeof(p))
        return -ENAMETOOLONG;
    return m_open(u, p, flags, mode);
}

static int m_listdir(void *u, const char *dir, int (*fn)(void *arg, const char *name, unsigned char type),
                     void *arg)
{
    (void)u;
    char p[PATH_MAX];
    int r = norm(dir, p);
    if (r < 0)
        return r;
    if (find_dir(p) < 0)
        return find_name(p) >= 0 ? -ENOTDIR : -ENOENT;
    /* the entries first: fn may remove some */
    char *ent[MAXNAMES + MAXDIRS];
    unsigned char type[MAXNAMES + MAXDIRS];
    size_t n = 0, pl = strlen(p);
    for (int i = 0; i < MAXNAMES + MAXDIRS; i++) {
        const char *e = i < MAXNAMES ? names[i].path : dirs[i - MAXNAMES];
        if (!e || (pl && (strncmp(e, p, pl) || e[pl] != '/')))
            continue;
        e += pl ? pl + 1 : 0;
        if (strchr(e, '/'))
            continue;
        if (!(ent[n] = strdup(e)))
            break;
        type[n++] = i < MAXNAMES ? DT_REG : DT_DIR;
    }
    r = 0;
    for (size_t i = 0; i < n; i++) {
        if (r == 0)
            r = fn(arg, ent[i], type[i]);
        free(ent[i]);
    }
    return r;
}

static int m_realpath(void *u, const char *path, char *out)
{
    (void)u;
    char p[PATH_MAX];
    int r = norm(path, p);
    if (r < 0)
        return r;
    if (find_dir(p) < 0 && find_name(p) < 0)
        return -ENOENT;
    out[0] = '/';
    memcpy(out + 1, p, strlen(p) + 1); /* norm left room for it */
    return 0;
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
    m_stat, /* lstat: no symlinks */
    m_listdir, m_realpath,
};

const qc_io *memfs_io(void) { return &mem_io; }
