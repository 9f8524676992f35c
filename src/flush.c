/*
 * flush.c - making metadata durable in a crash-safe order.
 *
 *   refcount blocks -> fsync -> refcount table entries -> fsync
 *   -> L2 tables -> fsync -> L1 entries -> fsync -> deferred frees
 *
 * Data written into new clusters reaches the disk with the first fsync,
 * before any L2 entry that points to it. A crash at any point leaves at
 * worst leaked clusters.
 */
#include "internal.h"

#include <stdlib.h>

void qc_l1_dirty(qc_image *img, uint64_t i)
{
    if (img->l1_dirty_lo > i)
        img->l1_dirty_lo = i;
    if (img->l1_dirty_hi < i + 1)
        img->l1_dirty_hi = i + 1;
}

int qc_write_u64s(qc_image *img, const uint64_t *t, uint64_t n, uint64_t off)
{
    uint8_t *b = qc_malloc(img->ctx, (size_t)n * 8);
    if (!b)
        return QC_ERR_NOMEM;
    for (uint64_t i = 0; i < n; i++)
        qc_put64(b + i * 8, t[i]);
    int r = qc_pwrite_full(img->ctx, img->fd, img->filename, b, (size_t)n * 8, off);
    img->unsynced = true;
    free(b);
    return r;
}

/* Entries [lo, hi) of a table at off. */
static int write_entries(qc_image *img, const uint64_t *t, uint64_t lo, uint64_t hi, uint64_t off)
{
    int r = qc_overlap_check(img, off + lo * 8, (hi - lo) * 8, QC_META_TABLE);
    return r < 0 ? r : qc_write_u64s(img, t + lo, hi - lo, off + lo * 8);
}

/*
 * A long copy (commit, rebase) just wrote n bytes. Every QC_WRITEBACK_STEP
 * bytes, ask the kernel to start writing them out, so that the disk works
 * while the copy runs instead of all at the final fsync. Not for guest
 * writes: random writes rewrite pages, and waiting on their writeback made
 * 4 KiB random writes twice as slow on ext4.
 */
void qc_copied(qc_image *img, uint64_t n)
{
    img->ctx->copied += n;
    img->unhinted += n;
    if (img->unhinted >= QC_WRITEBACK_STEP && img->ctx->io->writeback) {
        img->ctx->io->writeback(img->ctx->io_user, img->fd); /* a hint: failure changes nothing */
        img->unhinted = 0;
    }
}

int qc_img_sync(qc_image *img)
{
    if (!img->unsynced)
        return 0;
    int r = qc_sys_fsync(img->ctx, img->fd, img->filename);
    if (r == 0)
        img->unsynced = false;
    return r;
}

int qc_meta_deps(qc_image *img)
{
    int r = qc_cache_flush(img, &img->rbc);
    if (r == 0 && img->rt_dirty_hi > img->rt_dirty_lo) {
        /* the blocks must be durable before the table points at them */
        if ((r = qc_img_sync(img)) == 0)
            r = write_entries(img, img->reftable, img->rt_dirty_lo, img->rt_dirty_hi, img->hdr.rt_offset);
        if (r == 0) {
            img->rt_dirty_lo = UINT64_MAX;
            img->rt_dirty_hi = 0;
        }
    }
    if (r == 0)
        r = qc_img_sync(img);
    return r;
}

int qc_flush(qc_image *img)
{
    if (img->fmt != QC_FMT_QCOW2 || !img->write_ready)
        return qc_img_sync(img);
    int r = qc_cache_flush(img, &img->l2c); /* runs qc_meta_deps first */
    if (r == 0)
        r = qc_meta_deps(img);
    if (r == 0 && img->l1_dirty_hi > img->l1_dirty_lo) {
        r = write_entries(img, img->l1, img->l1_dirty_lo, img->l1_dirty_hi, img->hdr.l1_offset);
        if (r == 0)
            r = qc_img_sync(img);
        if (r == 0) {
            img->l1_dirty_lo = UINT64_MAX;
            img->l1_dirty_hi = 0;
        }
    }
    /* References are durably gone: now the refcounts may drop. */
    if (r == 0 && img->nfree) {
        r = qc_apply_frees(img);
        if (r == 0)
            r = qc_meta_deps(img);
    }
    return r;
}

int qc_header_write(qc_image *img)
{
    uint8_t *buf = qc_malloc(img->ctx, (size_t)img->cluster_size);
    if (!buf)
        return QC_ERR_NOMEM;
    int r = qc_header_serialize(img->ctx, &img->hdr, buf, (size_t)img->cluster_size, img->filename);
    if (r == 0)
        r = qc_pwrite_full(img->ctx, img->fd, img->filename, buf, (size_t)img->cluster_size, 0);
    img->unsynced = true;
    free(buf);
    return r;
}

int qc_image_flush(qc_image *img) { return qc_flush(img); }
