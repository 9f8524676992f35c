/* chain.c - open an image and follow its backing chain under the policy. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int lock_mode_for(qc_ctx *ctx, unsigned flags)
{
    if (ctx->pol.no_lock || ((flags & QC_OPEN_NO_LOCK) && !(flags & QC_OPEN_RDWR)))
        return QC_LOCK_NONE;
    if (flags & QC_OPEN_RDWR)
        return QC_LOCK_WRITE;
    if ((flags & QC_OPEN_SHARE) || ctx->pol.force_share)
        return QC_LOCK_SHARED;
    return QC_LOCK_READ;
}

/* A backing file (real path) in another directory than its overlay must carry the foreign prefix. */
static int check_foreign(qc_ctx *ctx, const char *real, const char *overlay)
{
    if (!ctx->foreign_prefix)
        return 0;
    int e;
    char *ov = qc_sys_realpath(ctx, overlay, &e);
    if (!ov && !e)
        return QC_ERR_NOMEM;
    const char *os = ov ? strrchr(ov, '/') : NULL, *bs = strrchr(real, '/');
    int r = 0;
    if (!os || !bs || os - ov != bs - real || strncmp(ov, real, (size_t)(bs - real)))
        if (strncmp(bs ? bs + 1 : real, ctx->foreign_prefix, strlen(ctx->foreign_prefix)))
            r = qc_fail(ctx, QC_ERR_POLICY, 0, overlay, "open",
                        "'%s': backing file '%s' is in another directory and not a '%s*' image; "
                        "untrusted chain refused", overlay, real, ctx->foreign_prefix);
    free(ov);
    return r;
}

static int outside(qc_ctx *ctx, const char *overlay, const char *p, const char *real)
{
    return qc_fail(ctx, QC_ERR_POLICY, 0, overlay, "open",
                   "'%s': backing file '%s' resolves to '%s', outside the allowed directories",
                   overlay, p, real);
}

/* Is the real path of p inside one of the allowed directories? */
static int check_dirs(qc_ctx *ctx, const char *p, const char *overlay)
{
    if (!ctx->ndirs)
        return 0;
    int e;
    char *real = qc_sys_realpath(ctx, p, &e);
    if (!real)
        return e ? 0 : QC_ERR_NOMEM; /* the open reports the missing file */
    const char *rel;
    int r = qc_allowed_root(ctx, real, &rel) ? check_foreign(ctx, real, overlay) : outside(ctx, overlay, p, real);
    free(real);
    return r;
}

int qc_backing_path(qc_image *img, char **full)
{
    qc_ctx *ctx = img->ctx;
    const char *name = img->hdr.backing_name;
    char pb[2048];
    *full = NULL;
    if (!strncmp(name, "json:", 5) || qc_path_has_protocol(name))
        return qc_fail(ctx, QC_ERR_POLICY, 0, img->filename, "open",
                       "'%s': backing file name '%s' is a json: or protocol name; refused",
                       img->filename, qc_printable(name, pb, sizeof(pb)));
    if (name[0] == '/' && ctx->ndirs && !ctx->pol.allow_absolute_backing)
        return qc_fail(ctx, QC_ERR_POLICY, 0, img->filename, "open",
                       "'%s': absolute backing file name '%s' refused by policy",
                       img->filename, qc_printable(name, pb, sizeof(pb)));
    if (!(*full = qc_path_combine(ctx, img->filename, name)))
        return QC_ERR_NOMEM;
    int r = check_dirs(ctx, *full, img->filename);
    if (r < 0) {
        free(*full);
        *full = NULL;
    }
    return r;
}

int qc_backing_allowed(qc_image *img)
{
    if (img->fmt != QC_FMT_QCOW2 || !img->hdr.backing_name)
        return 0;
    char *full;
    int r = qc_backing_path(img, &full);
    free(full);
    return r;
}

/* Decide and check the name and format of img's backing file. */
static int backing_target(qc_image *img, char **full, int *fmt)
{
    qc_ctx *ctx = img->ctx;
    char pb[2048];
    int r = qc_backing_path(img, full);
    if (r < 0)
        return r;
    if (img->hdr.backing_fmt)
        r = *fmt = qc_format_from_name(ctx, img->hdr.backing_fmt, img->filename);
    else if (ctx->pol.probe_backing_format)
        r = *fmt = 0;
    else
        r = qc_fail(ctx, QC_ERR_POLICY, 0, img->filename, "open",
                    "'%s' does not record the format of its backing file '%s'; refusing to "
                    "guess (rebase with -u -F FMT to record it)",
                    img->filename, qc_printable(img->hdr.backing_name, pb, sizeof(pb)));
    if (r < 0) {
        free(*full);
        *full = NULL;
    }
    return r;
}

int qc_image_open(qc_ctx *ctx, qc_image **out, const char *path, const char *fmt,
                  unsigned flags)
{
    return qc_chain_open(ctx, out, path, fmt, flags, NULL);
}

int qc_chain_open(qc_ctx *ctx, qc_image **out, const char *path, const char *fmt,
                  unsigned flags, const struct stat *rw)
{
    *out = NULL;
    int f = 0;
    if (fmt && (f = qc_format_from_name(ctx, fmt, path)) < 0)
        return f;
    qc_image *top;
    int r = qc_image_open_one(ctx, &top, path, f, flags);
    if (r < 0)
        return r;
    if ((r = qc_lock_apply(top, lock_mode_for(ctx, flags))) < 0)
        goto fail;
    if (flags & QC_OPEN_NO_BACKING) {
        *out = top;
        return 0;
    }
    unsigned depth = 0;
    for (qc_image *cur = top; cur->fmt == QC_FMT_QCOW2 && cur->hdr.backing_name; cur = cur->backing) {
        char *full = NULL;
        int bfmt = 0;
        if (++depth > ctx->pol.max_depth) {
            r = qc_fail(ctx, QC_ERR_LOOP, 0, path, "open",
                        "'%s': backing chain is deeper than %u images", path, ctx->pol.max_depth);
            goto fail;
        }
        if ((r = backing_target(cur, &full, &bfmt)) < 0)
            goto fail;
        qc_image *b;
        unsigned bflags = (flags & ~QC_OPEN_RDWR) | QC_OPEN_CONFINED;
        struct stat st;
        if (rw && ctx->io->stat(ctx->io_user, full, &st) == 0 && st.st_dev == rw->st_dev &&
            st.st_ino == rw->st_ino)
            bflags |= QC_OPEN_RDWR; /* the layer this operation writes */
        r = qc_image_open_one(ctx, &b, full, bfmt, bflags);
        if (r < 0) {
            qc_error e = ctx->err;
            qc_fail(ctx, r, e.sys_errno, cur->filename, "open",
                    "Could not open '%s': Could not open backing file: %s", cur->filename, e.msg);
            free(full);
            goto fail;
        }
        for (qc_image *p = top; p; p = p->backing)
            if (p->dev == b->dev && p->ino == b->ino) {
                r = qc_fail(ctx, QC_ERR_LOOP, 0, full, "open",
                            "Backing file '%s' creates an infinite loop.", full);
                qc_image_free_one(b);
                free(full);
                goto fail;
            }
        cur->backing = b;
        cur->backing_full = full;
        if ((r = qc_lock_apply(b, lock_mode_for(ctx, bflags))) < 0)
            goto fail;
    }
    *out = top;
    return 0;
fail:
    qc_image_close(top);
    return r;
}

void qc_image_close(qc_image *img)
{
    while (img) {
        qc_image *next = img->backing;
        if (img->write_ready)
            qc_flush(img); /* best effort; callers who care flush first */
        qc_image_free_one(img);
        img = next;
    }
}
