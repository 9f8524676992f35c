/*
 * resize.c - growing an image's virtual size (commit into a smaller base,
 * volume_resize). A larger L1 table is written and synced before one
 * header write switches to it; the old table is freed afterwards.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static int grow_l1(qc_image *img, uint64_t need)
{
    qc_ctx *ctx = img->ctx;
    uint64_t bytes = need * 8, clusters = (bytes + img->cluster_size - 1) >> img->cluster_bits;
    if (bytes > QC_MAX_L1_BYTES)
        return qc_fail(ctx, QC_ERR_INVALID, 0, img->filename, "resize",
                       "'%s': new size needs an L1 table larger than 32 MiB", img->filename);
    int r = qc_flush(img); /* the table on disk must equal the one in memory */
    if (r < 0)
        return r;
    uint64_t *nl = qc_calloc(ctx, need, 8);
    uint64_t at = 0;
    if (!nl) {
        r = QC_ERR_NOMEM;
        goto out;
    }
    memcpy(nl, img->l1, (size_t)img->l1_size * 8);
    if ((r = qc_alloc_clusters(img, clusters, &at)) < 0 || (r = qc_cache_durable(img, &img->rbc)) < 0 ||
        (r = qc_write_u64s(img, nl, need, at)) < 0 || (r = qc_img_sync(img)) < 0)
        goto out;
    uint64_t old = img->hdr.l1_offset, old_n = img->l1_size;
    img->hdr.l1_offset = at;
    img->hdr.l1_size = (uint32_t)need;
    if ((r = qc_header_write(img)) < 0 || (r = qc_img_sync(img)) < 0) {
        img->hdr.l1_offset = old;
        img->hdr.l1_size = (uint32_t)old_n;
        goto out;
    }
    free(img->l1);
    img->l1 = nl;
    nl = NULL;
    img->l1_size = (uint32_t)need;
    if (old && old_n)
        r = qc_free_later(img, old, old_n * 8);
out:
    free(nl);
    return r;
}

int qc_image_grow(qc_image *img, uint64_t size)
{
    qc_ctx *ctx = img->ctx;
    size = qc_align_up(size, 512);
    if (size <= img->size)
        return 0;
    if (size > QC_MAX_VIRTUAL_SIZE)
        return qc_fail(ctx, QC_ERR_INVALID, 0, img->filename, "resize", "'%s': size too large", img->filename);
    int r = qc_write_prepare(img);
    if (r < 0)
        return r;
    if (img->fmt == QC_FMT_RAW) {
        if (img->blockdev) /* a device is as large as it is: grow it first (lvextend) */
            return size <= img->file_size ? 0 : qc_image_room(img, size);
        r = ctx->io->ftruncate(ctx->io_user, img->fd, size);
        if (r < 0)
            return qc_fail(ctx, qc_errno_code(-r), -r, img->filename, "resize",
                           "Could not resize '%s': %s", img->filename, "ftruncate failed");
        img->file_size = img->size = size;
        img->unsynced = true;
        return qc_img_sync(img);
    }
    uint64_t cover = 1ull << (img->cluster_bits + img->l2_bits);
    uint64_t need = (size + cover - 1) / cover, old = img->size;
    if (need > img->l1_size && (r = grow_l1(img, need)) < 0)
        return r;
    img->hdr.size = size;
    if ((r = qc_header_write(img)) < 0 || (r = qc_img_sync(img)) < 0) {
        img->hdr.size = old;
        return r;
    }
    img->size = size;
    /* A backing file larger than the old size would show through: zero it. */
    if (img->backing && img->backing->size > old)
        r = qc_image_write_zeroes(img, old, qc_min(size, img->backing->size) - old, QC_ZERO_UNMAP);
    return r == 0 ? qc_flush(img) : r;
}
