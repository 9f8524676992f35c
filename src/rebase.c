/*
 * rebase.c - qemu-img rebase. Safe mode keeps FILE's guest view: where
 * the old backing chain and the new one can read differently, FILE gets
 * the old data before one header write switches the backing file. Only
 * the ranges decided above the nearest layer both chains share are
 * touched, not the whole disk, and the new side is never read: old data
 * is copied (copy_file_range for whole clusters) rather than compared.
 * Unsafe mode (-u) rewrites cluster 0 only.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int set_backing(qc_image *img, const char *name, const char *fmt)
{
    qc_header *h = &img->hdr;
    char *n = name && *name ? qc_strdup(img->ctx, name) : NULL;
    char *f = name && *name && fmt ? qc_strdup(img->ctx, fmt) : NULL;
    if ((name && *name && !n) || (fmt && name && *name && !f)) {
        free(n);
        free(f);
        return QC_ERR_NOMEM;
    }
    free(h->backing_name);
    free(h->backing_fmt);
    h->backing_name = n;
    h->backing_fmt = f;
    return 0;
}

/* Would cluster 0 hold the new name? Checked before any data moves. */
static int header_fits(qc_image *img, const char *name, const char *fmt)
{
    qc_header h = img->hdr;
    h.backing_name = name && *name ? (char *)name : NULL;
    h.backing_fmt = name && *name ? (char *)fmt : NULL;
    uint8_t *buf = qc_malloc(img->ctx, (size_t)img->cluster_size);
    if (!buf)
        return QC_ERR_NOMEM;
    int r = qc_header_serialize(img->ctx, &h, buf, (size_t)img->cluster_size, img->filename);
    free(buf);
    return r;
}

static int write_header(qc_image *img, const char *name, const char *fmt)
{
    int r = set_backing(img, name, fmt);
    if (r == 0)
        r = qc_header_write(img);
    if (r == 0)
        r = qc_img_sync(img);
    return r;
}

static qc_image *in_chain(qc_image *chain, const qc_image *x)
{
    for (qc_image *l = chain; l; l = l->backing)
        if (l->dev == x->dev && l->ino == x->ino)
            return l;
    return NULL;
}

/* Status of one side above its shared layer; a missing side reads zeros. */
static int side(qc_image *top, qc_image *stop, uint64_t off, uint64_t max, uint64_t *len, int *fl,
                qc_image **src)
{
    uint64_t map;
    if (!top) {
        *len = max;
        *fl = QC_BS_ZERO;
        *src = NULL;
        return 1;
    }
    int r = qc_status_above(top, stop, off, max, len, fl, &map, src);
    return r < 0 ? r : *src != NULL;
}

static int read_side(qc_image *top, uint8_t *buf, uint64_t off, size_t n)
{
    uint64_t m = top && off < top->size ? qc_min(n, top->size - off) : 0;
    int r = m ? qc_image_read(top, buf, off, (size_t)m) : 0;
    memset(buf + m, 0, n - m);
    return r;
}

/*
 * Give FILE the old view of [off, off+n) (unallocated in FILE). Whole
 * FILE clusters of uncompressed old data move with copy_file_range; the
 * rest is read through the old chain and written (partial clusters are
 * filled from the old chain too, which is still FILE's backing).
 */
static int preserve(qc_image *file, qc_image *src, int fl, uint64_t map, uint64_t off, uint64_t n,
                    uint8_t *buf, size_t bufsz)
{
    if (fl & QC_BS_ZERO)
        return qc_image_write_zeroes(file, off, n, 0);
    uint64_t end = off + n, cs = file->cluster_size;
    if (src && (fl & QC_BS_OFFSET) && (fl & QC_BS_DATA)) {
        uint64_t a = qc_align_up(off, cs), b = end & ~(cs - 1);
        if (a < b) {
            int r = a > off ? preserve(file, NULL, QC_BS_DATA, 0, off, a - off, buf, bufsz) : 0;
            if (r == 0)
                r = qc_write_clusters_copy(file, a, (b - a) / cs, src->data_fd, src->filename, map + (a - off),
                                           buf, bufsz);
            if (r == 0 && b < end)
                r = preserve(file, NULL, QC_BS_DATA, 0, b, end - b, buf, bufsz);
            return r;
        }
    }
    while (off < end) {
        size_t k = (size_t)qc_min(end - off, bufsz);
        int r = read_side(file->backing, buf, off, k);
        bool zero = r == 0 && qc_buf_is_zero(buf, k);
        if (r == 0)
            r = zero ? qc_image_write_zeroes(file, off, k, 0) : qc_image_write(file, buf, off, k);
        if (r < 0)
            return r;
        if (!zero)
            qc_copied(file, k);
        off += k;
    }
    return 0;
}

/*
 * Walk FILE's unallocated ranges where the old and the new view can differ
 * (something above the shared layer decides them on either side); count
 * them, or (with buf) give FILE the old view there.
 */
static int walk(qc_ctx *ctx, qc_image *file, qc_image *newc, qc_image *old_stop, qc_image *new_stop,
                uint8_t *buf, size_t bufsz, uint64_t *total, qc_meter *m)
{
    for (uint64_t off = 0; off < file->size;) {
        uint64_t n, map;
        int fl;
        int r = qc_layer_status(file, off, file->size - off, &n, &fl, &map);
        if (r < 0)
            return r;
        if (fl & QC_BS_ALLOCATED) {
            off += n;
            continue;
        }
        for (uint64_t p = off; p < off + n;) {
            uint64_t n1, n2, m1 = 0;
            int f1, f2;
            qc_image *s1, *s2;
            int d1 = file->backing ? qc_status_above(file->backing, old_stop, p, off + n - p, &n1, &f1, &m1, &s1)
                                   : (n1 = off + n - p, f1 = QC_BS_ZERO, s1 = NULL, 0);
            if (d1 < 0)
                return d1;
            d1 = !file->backing || s1;
            int d2 = side(newc, new_stop, p, n1, &n2, &f2, &s2);
            if (d2 < 0)
                return d2;
            uint64_t k = qc_min(n1, n2);
            /* ZERO with DATA: a data cluster over a hole of the host file, zeros too */
            bool zero1 = f1 & QC_BS_ZERO, zero2 = f2 & QC_BS_ZERO;
            if ((d1 || d2) && !(d1 && d2 && zero1 && zero2)) {
                if (!buf)
                    *total += k;
                else if ((r = preserve(file, d1 ? s1 : NULL, d1 ? f1 : QC_BS_DATA, m1, p, k, buf, bufsz)) < 0 ||
                         (r = qc_meter_add(ctx, m, k, file->filename)) < 0)
                    return r;
            }
            p += k;
        }
        off += n;
    }
    return 0;
}

int qc_rebase(qc_ctx *ctx, const char *path, const char *fmt, const char *new_backing,
              const char *new_fmt, unsigned flags)
{
    if (!new_backing)
        return qc_fail(ctx, QC_ERR_INVALID, 0, path, "rebase", "rebase: no new backing file given (-b)");
    bool none = !*new_backing;
    if (!none && !new_fmt)
        return qc_fail(ctx, QC_ERR_INVALID, 0, path, "rebase",
                       "'%s': the format of the new backing file must be given (-F)", path);
    if (!none && strcmp(new_fmt, "qcow2") && strcmp(new_fmt, "raw"))
        return qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "rebase",
                       "'%s': unsupported backing format '%s'", path, new_fmt);
    if (!none && (!strncmp(new_backing, "json:", 5) || qc_path_has_protocol(new_backing)))
        return qc_fail(ctx, QC_ERR_POLICY, 0, path, "rebase",
                       "'%s': json: and protocol backing names are refused", path);
    qc_image *file = NULL, *newc = NULL;
    uint8_t *a = NULL;
    size_t held = ctx->nheld;
    /* FILE stays write-locked and free of other users until its new header is durable */
    int r = qc_hold(ctx, &path, 1);
    if (r < 0)
        return r;
    if (flags & QC_REBASE_UNSAFE) {
        if ((r = qc_image_open(ctx, &file, path, fmt, QC_OPEN_RDWR | QC_OPEN_NO_BACKING)) < 0)
            goto out;
        if (file->fmt != QC_FMT_QCOW2)
            r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "rebase", "'%s' is not a qcow2 image", path);
        else if ((r = header_fits(file, new_backing, new_fmt)) == 0)
            r = write_header(file, new_backing, new_fmt);
        goto out;
    }
    if ((r = qc_image_open(ctx, &file, path, fmt, QC_OPEN_RDWR)) < 0)
        goto out;
    if (file->fmt != QC_FMT_QCOW2) {
        r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "rebase", "'%s' is not a qcow2 image", path);
        goto out;
    }
    if ((r = header_fits(file, new_backing, new_fmt)) < 0)
        goto out;
    qc_image *old_stop = NULL, *new_stop = NULL;
    if (!none) {
        char *full = qc_path_combine(ctx, path, new_backing);
        if (!full) {
            r = QC_ERR_NOMEM;
            goto out;
        }
        r = qc_image_open(ctx, &newc, full, new_fmt, 0);
        if (r < 0) {
            qc_error e = ctx->err;
            r = qc_fail(ctx, r, e.sys_errno, path, "rebase", "'%s': could not open the new backing file: %s", path,
                        e.msg);
        } else if (in_chain(newc, file)) {
            r = qc_fail(ctx, QC_ERR_LOOP, 0, path, "rebase",
                        "'%s': the new backing file '%s' would create a loop", path, new_backing);
        }
        free(full);
        if (r < 0)
            goto out;
        /* the nearest layer both chains share: below it nothing differs */
        for (qc_image *l = newc; l && !old_stop; l = l->backing)
            if ((old_stop = in_chain(file->backing, l)))
                new_stop = l;
    }
    if ((r = qc_write_prepare(file)) < 0)
        goto out;
    size_t bufsz = qc_max(1u << 20, file->cluster_size);
    if (!(a = qc_malloc(ctx, bufsz))) {
        r = QC_ERR_NOMEM;
        goto out;
    }
    uint64_t total = 0;
    qc_meter m = {0};
    if ((r = walk(ctx, file, newc, old_stop, new_stop, NULL, bufsz, &total, &m)) < 0)
        goto out;
    qc_meter_start(ctx, &m, total);
    if ((r = walk(ctx, file, newc, old_stop, new_stop, a, bufsz, &total, &m)) < 0)
        goto out;
    if ((r = qc_flush(file)) < 0)
        goto out;
    r = write_header(file, new_backing, new_fmt);
out:
    free(a);
    qc_error e;
    qc_err_keep(ctx, &e);
    qc_image_close(newc);
    qc_image_close(file);
    qc_hold_release(ctx, held);
    return qc_err_restore(ctx, &e, r);
}
