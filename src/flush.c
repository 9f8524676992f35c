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

/*
 * A long copy (commit, rebase) just wrote n bytes. Every ctx->copy_step
 * bytes (32 MiB), ask the kernel to start writing them out, so that the disk works
 * while the copy runs instead of all at the final fsync. Not for guest
 * writes: random writes rewrite pages, and waiting on their writeback made
 * 4 KiB random writes twice as slow on ext4.
 */
void qc_copied(qc_image *img, uint64_t n)
{
    img->ctx->copied += n;
    img->unhinted += n;
    if (img->unhinted >= img->ctx->copy_step && img->ctx->io->writeback) {
        img->ctx->io->writeback(img->ctx->io_user, img->fd); /* a hint: failure changes nothing */
        img->unhinted = 0;
    }
}

int qc_flush(qc_image *img)
{
    if (img->fmt != QC_FMT_QCOW2 || !img->write_ready)
        return qc_img_sync(img);
    int r = qc_cache_flush(img, &img->l2c); /* its dependency, the refcounts, first */
    if (r == 0)
        r = qc_cache_durable(img, &img->rbc);
    if (r == 0 && img->l1_dirty_hi > img->l1_dirty_lo) {
        r = qc_write_entries(img, img->l1, img->l1_dirty_lo, img->l1_dirty_hi, img->hdr.l1_offset);
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
            r = qc_cache_durable(img, &img->rbc);
    }
    return r;
}

int qc_image_flush(qc_image *img) { return qc_flush(img); }
