/*
 * commit.c - qemu-img commit: everything allocated in FILE and in the
 * layers above BASE is copied into BASE (zeros as zeros); BASE grows when
 * FILE is larger; FILE is emptied afterwards unless kept. No backing
 * pointer is rewritten.
 *
 * FILE's guest view never changes: BASE only receives ranges that layers
 * above it hide, and FILE is emptied only once BASE is durable.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Find the chain layer that is the file st; NULL if none. */
static qc_image *find_layer(qc_image *top, const struct stat *st)
{
    for (qc_image *l = top; l; l = l->backing)
        if (l->dev == st->st_dev && l->ino == st->st_ino)
            return l;
    return NULL;
}

/* The file behind the -b argument: relative names as backing names, else as given. */
static int locate_base(qc_ctx *ctx, const char *path, const char *base, struct stat *st, char **found)
{
    char *p = qc_path_combine(ctx, path, base);
    if (!p)
        return QC_ERR_NOMEM;
    int r = ctx->io->stat(ctx->io_user, p, st);
    if (r < 0) {
        free(p);
        r = ctx->io->stat(ctx->io_user, base, st);
        p = r < 0 ? NULL : qc_strdup(ctx, base);
    }
    if (r < 0)
        return qc_fail(ctx, qc_errno_code(-r), -r, base, "commit", "Could not open base image '%s': %s",
                       base, strerror(-r));
    *found = p;
    return p ? 0 : QC_ERR_NOMEM;
}

/* Copy one range decided by layer src (data at host map) into base. */
static int copy_range(qc_image *top, qc_image *base, qc_image *src, uint64_t off, uint64_t n,
                      int flags, uint64_t map, uint8_t *buf, size_t bufsz)
{
    if (flags & QC_BS_ZERO)
        return qc_image_write_zeroes(base, off, n, QC_ZERO_UNMAP);
    uint64_t end = off + n;
    /* Whole base clusters from uncompressed host data: in-kernel copy. */
    if (base->fmt == QC_FMT_QCOW2 && (flags & QC_BS_OFFSET) && src->data_fd >= 0) {
        uint64_t cs = base->cluster_size;
        uint64_t a = qc_align_up(off, cs), b = end & ~(cs - 1);
        int r;
        if (a < b) {
            if (a > off && (r = copy_range(top, base, src, off, a - off, flags & ~QC_BS_OFFSET, 0, buf, bufsz)) < 0)
                return r;
            if ((r = qc_write_clusters_copy(base, a, (b - a) / cs, src->data_fd, src->filename, map + (a - off),
                                            buf, bufsz)) < 0)
                return r;
            return b < end ? copy_range(top, base, src, b, end - b, flags & ~QC_BS_OFFSET, 0, buf, bufsz) : 0;
        }
    }
    while (off < end) {
        size_t k = (size_t)qc_min(end - off, bufsz);
        int r = qc_image_read(top, buf, off, k);
        bool zero = r == 0 && qc_buf_is_zero(buf, k);
        if (r == 0)
            r = zero ? qc_image_write_zeroes(base, off, k, QC_ZERO_UNMAP) : qc_image_write(base, buf, off, k);
        if (r < 0)
            return r;
        if (!zero)
            qc_copied(base, k);
        off += k;
    }
    return 0;
}

/* Drop every cluster of img: all L1 entries cleared, then everything freed. */
int qc_make_empty(qc_image *img)
{
    int r = qc_write_prepare(img);
    if (r < 0 || img->fmt != QC_FMT_QCOW2)
        return r;
    for (uint64_t i = 0; i < img->l1_size && r == 0; i++) {
        uint64_t off = img->l1[i] & QC_OFFSET_MASK;
        if (!off)
            continue;
        uint8_t *l2;
        if ((r = qc_cache_get(img, &img->l2c, off, &l2, "L2 table")) < 0)
            break;
        for (uint64_t j = 0; j < (1ull << img->l2_bits) && r == 0; j++) {
            uint64_t e, bm;
            qc_l2_entry(img, l2, j, &e, &bm);
            r = qc_unref_entry(img, e);
        }
        if (r == 0)
            r = qc_free_later(img, off, img->cluster_size);
        qc_cache_forget(&img->l2c, off);
        img->l1[i] = 0;
        qc_meta_changed(img);
        qc_l1_dirty(img, i);
    }
    return r == 0 ? qc_flush(img) : r;
}

int qc_commit(qc_ctx *ctx, const char *path, const char *fmt, const char *base_name, unsigned flags)
{
    bool keep = (flags & QC_COMMIT_KEEP) || base_name;
    qc_image *top = NULL;
    struct stat bst;
    char *bpath = NULL;
    uint8_t *buf = NULL;
    size_t held = ctx->nheld;
    int r;
    if (base_name) {
        if ((r = locate_base(ctx, path, base_name, &bst, &bpath)) < 0)
            return r;
    } else {
        /* the immediate backing file */
        if ((r = qc_image_open(ctx, &top, path, fmt, QC_OPEN_SHARE)) < 0)
            return r;
        if (!top->backing) {
            qc_image_close(top);
            return qc_fail(ctx, QC_ERR_INVALID, 0, path, "commit",
                           "'%s' does not have a backing file to commit into", path);
        }
        bst.st_dev = top->backing->dev;
        bst.st_ino = top->backing->ino;
        bpath = qc_strdup(ctx, top->backing->filename);
        qc_image_close(top);
        top = NULL;
        if (!bpath)
            return QC_ERR_NOMEM;
    }
    /* FILE and BASE stay write-locked and free of other users until BASE is durable */
    const char *hold[] = {path, bpath};
    if ((r = qc_hold(ctx, hold, 2)) < 0 || (r = qc_chain_open(ctx, &top, path, fmt, keep ? 0 : QC_OPEN_RDWR, &bst)) < 0)
        goto out;
    qc_image *base = find_layer(top, &bst);
    const size_t bufsz = 1u << 20;
    if (!base || base == top) {
        r = qc_fail(ctx, QC_ERR_INVALID, 0, path, "commit", base == top
                    ? "'%s': the base is the image itself" : "'%s': '%s' is not in its backing chain",
                    path, base_name ? base_name : "");
        goto out;
    }
    if ((r = qc_write_prepare(base)) < 0)
        goto out;
    if (top->size > base->size && (r = qc_image_grow(base, top->size)) < 0)
        goto out;
    if (!(buf = qc_malloc(ctx, qc_max(bufsz, base->cluster_size)))) {
        r = QC_ERR_NOMEM;
        goto out;
    }
    /* First pass: how much there is to copy (metadata only). */
    uint64_t total = 0;
    for (uint64_t off = 0; off < top->size;) {
        uint64_t n, map;
        int fl;
        qc_image *src;
        if ((r = qc_status_above(top, base, off, top->size - off, &n, &fl, &map, &src)) < 0)
            goto out;
        if (src)
            total += n;
        off += n;
    }
    qc_meter m;
    qc_meter_start(ctx, &m, total);
    for (uint64_t off = 0; off < top->size;) {
        uint64_t n, map;
        int fl;
        qc_image *src;
        if ((r = qc_status_above(top, base, off, qc_min(top->size - off, 64u << 20), &n, &fl, &map, &src)) < 0)
            goto out;
        if (src) {
            if ((r = copy_range(top, base, src, off, n, fl, map, buf, bufsz)) < 0 ||
                (r = qc_meter_add(ctx, &m, n, path)) < 0)
                goto out;
        }
        off += n;
    }
    if ((r = qc_flush(base)) < 0)
        goto out;
    if (!keep)
        r = qc_make_empty(top);
out:
    free(buf);
    free(bpath);
    qc_error e;
    qc_err_keep(ctx, &e);
    qc_image_close(top);
    qc_hold_release(ctx, held);
    return qc_err_restore(ctx, &e, r);
}
