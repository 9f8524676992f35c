/*
 * measure.c - qemu-img measure: the bytes a new image needs, empty or as
 * the copy of an existing chain (or of one layer alone), with the same
 * arithmetic as QEMU, so that a block device or an LV sized by it holds
 * the image.
 *
 * fully-allocated: every cluster of the virtual size plus all metadata
 * (header, L1, every L2 table, refcount table and blocks covering it all).
 * required: the same less the data clusters the copy would not write.
 */
#include "internal.h"

#include <string.h>

/* Bytes of refcount table and blocks that count clusters and themselves (fixed point). */
static uint64_t refcount_meta(uint64_t clusters, uint64_t cs, unsigned refcount_bits)
{
    uint64_t per_table = cs / 8, per_block = cs * 8 / refcount_bits;
    uint64_t table = 0, blocks = 0, n = 0, last;
    do {
        last = n;
        blocks = (clusters + table + blocks + per_block - 1) / per_block;
        table = (blocks + per_table - 1) / per_table;
        n = clusters + blocks + table;
    } while (n != last);
    return (blocks + table) * cs;
}

/* Size of a qcow2 image with every cluster of size bytes allocated. */
static uint64_t prealloc_size(uint64_t size, uint64_t cs, unsigned refcount_bits, bool ext_l2)
{
    uint64_t esz = ext_l2 ? 16 : 8, aligned = qc_align_up(size, cs);
    uint64_t meta = cs;                                      /* header */
    uint64_t nl2e = qc_align_up(aligned / cs, cs / esz);
    meta += nl2e * esz;                                      /* L2 tables */
    uint64_t nl1e = qc_align_up(nl2e * esz / cs, cs / 8);
    meta += nl1e * 8;                                        /* L1 table */
    meta += refcount_meta((meta + aligned) / cs, cs, refcount_bits);
    return meta + aligned;
}

/* Persistent bitmaps as the copy would carry them (QEMU counts each fully allocated). */
static uint64_t bitmaps_size(const qc_image *img, uint64_t cs)
{
    if (img->fmt != QC_FMT_QCOW2 || !img->hdr.has_bitmaps_ext || !(img->hdr.autoclear & QC_AUTOCLEAR_BITMAPS))
        return 0;
    uint64_t total = 0, dir = 0;
    for (uint32_t i = 0; i < img->nbitmaps; i++) {
        const qc_bitmap *b = &img->bitmaps[i];
        uint64_t g = 1ull << b->granularity_bits;
        uint64_t bytes = ((img->size + g - 1) / g + 7) / 8;
        uint64_t clusters = (bytes + cs - 1) / cs;
        total += clusters * cs + qc_align_up(clusters * 8, cs);
        dir += qc_align_up(24 + strlen(b->name), 8);
    }
    return total + qc_align_up(dir, cs);
}

/* Bytes of the clusters of size cs that hold data in the copy of img (QEMU's count). */
static int data_clusters(qc_image *img, uint64_t cs, bool layer, uint64_t *bytes)
{
    *bytes = 0;
    for (uint64_t off = 0; off < img->size;) {
        uint64_t n, map;
        int fl, r;
        unsigned depth;
        qc_image *l;
        r = layer ? qc_layer_status(img, off, img->size - off, &n, &fl, &map)
                  : qc_chain_status(img, off, img->size - off, &n, &fl, &map, &depth, &l);
        if (r < 0)
            return r;
        if (!(fl & QC_BS_ZERO) && (fl & (QC_BS_DATA | QC_BS_ALLOCATED)) == (QC_BS_DATA | QC_BS_ALLOCATED)) {
            /* the whole clusters it touches; the rest of the last one is not asked again */
            uint64_t a = off & ~(cs - 1), b = qc_align_up(off + n, cs);
            *bytes += b - a;
            n = b - off;
        }
        off += n;
    }
    return 0;
}

int qc_measure(qc_ctx *ctx, qc_measure_info *out, const char *path, const char *fmt, const char *out_fmt,
               const qc_create_opts *o, unsigned flags)
{
    memset(out, 0, sizeof(*out));
    const char *label = path ? path : "measure";
    bool raw = out_fmt && !strcmp(out_fmt, "raw");
    if (out_fmt && !raw && strcmp(out_fmt, "qcow2"))
        return qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, label, "measure",
                       "measure: Block driver '%s' does not support size measurement", out_fmt);
    if (!raw) {
        int r = qc_create_check_format(ctx, label, o);
        if (r < 0)
            return r;
        if (o->preallocation < 0 || o->preallocation > QC_PREALLOC_FULL)
            return qc_fail(ctx, QC_ERR_INVALID, 0, label, "measure",
                           "'%s': preallocation must be off, metadata, falloc or full", label);
    }
    qc_image *img = NULL;
    uint64_t size = o->size;
    if (path) {
        int r = qc_image_open(ctx, &img, path, fmt,
                              QC_OPEN_SHARE | ((flags & QC_MEASURE_LAYER) ? QC_OPEN_NO_BACKING : 0));
        if (r < 0)
            return r;
        size = img->size;
    }
    int r = 0;
    if (raw) {
        out->required = out->fully_allocated = qc_align_up(size, 512);
        goto out;
    }
    uint64_t cs = o->cluster_size, esz = o->extended_l2 ? 16 : 8;
    uint64_t vsize = qc_align_up(size, cs);
    if ((vsize / cs + cs / esz - 1) / (cs / esz) * esz > QC_MAX_L1_BYTES) {
        r = qc_fail(ctx, QC_ERR_INVALID, 0, label, "measure", "%s%s%s: The image size is too large (try using a larger cluster size)",
                    path ? "'" : "", label, path ? "'" : "");
        goto out;
    }
    uint64_t required = 0;
    if (img) {
        if (o->backing && !(flags & QC_MEASURE_LAYER))
            required = vsize; /* the new backing may share nothing: count it all, as QEMU */
        else if ((r = data_clusters(img, cs, flags & QC_MEASURE_LAYER, &required)) < 0)
            goto out;
    }
    if (o->preallocation >= QC_PREALLOC_FALLOC)
        required = vsize;
    out->fully_allocated = prealloc_size(vsize, cs, o->refcount_bits, o->extended_l2);
    out->required = out->fully_allocated - vsize + required;
    out->has_bitmaps = img && o->version >= 3 && img->fmt == QC_FMT_QCOW2 && img->hdr.version >= 3;
    if (out->has_bitmaps)
        out->bitmaps = bitmaps_size(img, cs);
out:
    qc_image_close(img);
    return r;
}
