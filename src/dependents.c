/*
 * dependents.c - which images use a file as their backing file. Before a
 * snapshot file is removed or renamed, every image that may be built on it
 * is looked at: the files of the volume's directory, and those of a
 * directory tree the caller names (on a Proxmox storage a clone in
 * images/101 may be built on ../100/snap-A-...). Harmless to a running VM
 * and cheap: two header fields of each regular file, no lock, no open that
 * can block.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEPENDENTS_DEPTH 8 /* directory levels below the named tree's top */

typedef struct dep_scan {
    qc_ctx *ctx;
    const qc_fid *targets, *skip;
    size_t ntargets, nskip;
    qc_fid done_dir; /* scanned already (the volume's directory) */
    char *found;  /* the first image built on a target */
    size_t which; /* that target */
} dep_scan;

static bool same(qc_fid a, const struct stat *st)
{
    return a.dev == st->st_dev && a.ino == st->st_ino;
}

/* Index of st among n identities, or n. */
static size_t find_fid(const qc_fid *f, size_t n, const struct stat *st)
{
    size_t i = 0;
    while (i < n && !same(f[i], st))
        i++;
    return i;
}

bool qc_peek_backing(qc_ctx *ctx, const char *path, char name[QC_PEEK_MAX])
{
    int fd = ctx->io->open(ctx->io_user, path, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
    if (fd < 0)
        return false;
    struct stat st;
    uint8_t h[20];
    bool found = false;
    if (ctx->io->fstat(ctx->io_user, fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 72 &&
        ctx->io->pread(ctx->io_user, fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) && qc_be32(h) == QC_MAGIC) {
        uint64_t off = qc_be64(h + 8);
        uint32_t len = qc_be32(h + 16);
        found = off && len && len < QC_PEEK_MAX && off <= (uint64_t)st.st_size - len &&
                ctx->io->pread(ctx->io_user, fd, name, len, off) == (ssize_t)len;
        name[found ? len : 0] = 0;
    }
    ctx->io->close(ctx->io_user, fd);
    return found;
}

/* Is the regular file at path (identity st) built on a target? */
static int check_file(dep_scan *s, const char *path, const struct stat *st)
{
    if (find_fid(s->targets, s->ntargets, st) < s->ntargets || find_fid(s->skip, s->nskip, st) < s->nskip)
        return 0;
    char b[QC_PEEK_MAX];
    if (!qc_peek_backing(s->ctx, path, b))
        return 0;
    char *full = qc_path_combine(s->ctx, path, b);
    if (!full)
        return QC_ERR_NOMEM;
    struct stat bs;
    int r = 0;
    if (s->ctx->io->stat(s->ctx->io_user, full, &bs) == 0 &&
        (s->which = find_fid(s->targets, s->ntargets, &bs)) < s->ntargets && !(s->found = qc_strdup(s->ctx, path)))
        r = QC_ERR_NOMEM;
    free(full);
    return r;
}

static int scan_dir(dep_scan *s, const char *dir, int depth);

typedef struct dir_walk {
    dep_scan *s;
    const char *dir;
    int depth;
    bool files; /* look at its files (not for the volume's directory, met again) */
} dir_walk;

static int scan_entry(void *arg, const char *name, unsigned char type)
{
    dir_walk *w = arg;
    dep_scan *s = w->s;
    qc_ctx *ctx = s->ctx;
    if (name[0] == '.') /* our own temporary files */
        return 0;
    size_t n = strlen(w->dir) + strlen(name) + 2;
    char *p = qc_malloc(ctx, n);
    if (!p)
        return QC_ERR_NOMEM;
    /* a volume given without a directory keeps its siblings without one */
    bool here = !strcmp(w->dir, ".");
    snprintf(p, n, "%s%s%s", here ? "" : w->dir, here ? "" : "/", name);
    struct stat st;
    int r = 0;
    bool link = qc_sys_is_symlink(ctx, p, type);
    if (ctx->io->stat(ctx->io_user, p, &st) == 0) {
        if (S_ISREG(st.st_mode) && w->files)
            r = check_file(s, p, &st);
        else if (S_ISDIR(st.st_mode) && !link && w->depth > 0)
            r = scan_dir(s, p, w->depth - 1);
    }
    free(p);
    return r ? r : s->found != NULL;
}

static int scan_dir(dep_scan *s, const char *dir, int depth)
{
    qc_ctx *ctx = s->ctx;
    /* the volume's directory, met again inside the named tree: its subdirectories only */
    struct stat ds;
    dir_walk w = {s, dir, depth, !(ctx->io->stat(ctx->io_user, dir, &ds) == 0 && same(s->done_dir, &ds))};
    int r = qc_sys_listdir(ctx, dir, scan_entry, &w);
    return r > 0 ? 0 : r;
}

int qc_find_dependent(qc_ctx *ctx, char **image, size_t *which, const char *vol_dir, const char *images_dir,
                      const qc_fid *targets, size_t ntargets, const qc_fid *skip, size_t nskip)
{
    dep_scan s = {.ctx = ctx, .targets = targets, .ntargets = ntargets, .skip = skip, .nskip = nskip};
    *image = NULL;
    int r = scan_dir(&s, vol_dir, 0);
    struct stat st;
    if (r == 0 && !s.found && images_dir && *images_dir) {
        if (ctx->io->stat(ctx->io_user, vol_dir, &st) == 0)
            s.done_dir = (qc_fid){st.st_dev, st.st_ino};
        r = scan_dir(&s, images_dir, DEPENDENTS_DEPTH);
    }
    if (r < 0) {
        free(s.found);
        return r;
    }
    *image = s.found;
    *which = s.which;
    return 0;
}
