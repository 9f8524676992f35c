/*
 * mergecost.c - what removing a snapshot costs each way, from the tables
 * alone: no guest data is read.
 *
 * Deleting snapshot X with one child either commits the child into X (the
 * child's data clusters are copied) or streams X into the child (X's data
 * clusters are copied where the child has none of its own). Zero clusters,
 * and data clusters over holes of the host file (metadata preallocation
 * that was never written), copy nothing and count as nothing.
 */
#include "internal.h"

/* Data bytes one layer holds in [off, off+len). */
static int data_bytes(qc_image *img, uint64_t off, uint64_t len, uint64_t *bytes)
{
    while (len) {
        uint64_t n, map;
        int fl;
        int r = qc_layer_status_holes(img, off, len, &n, &fl, &map);
        if (r < 0)
            return r;
        if ((fl & QC_BS_DATA) && !(fl & QC_BS_ZERO))
            *bytes += n;
        off += n;
        len -= n;
    }
    return 0;
}

int qc_merge_costs(qc_ctx *ctx, const char *x_path, const char *child_path, uint64_t *commit, uint64_t *stream)
{
    qc_image *x = NULL, *child = NULL;
    *commit = *stream = 0;
    int r = qc_image_open(ctx, &x, x_path, NULL, QC_OPEN_NO_BACKING | QC_OPEN_SHARE);
    if (r == 0)
        r = qc_image_open(ctx, &child, child_path, NULL, QC_OPEN_NO_BACKING | QC_OPEN_SHARE);
    if (r == 0)
        r = data_bytes(child, 0, child->size, commit);
    for (uint64_t off = 0; r == 0 && off < child->size && off < x->size;) {
        uint64_t n, map;
        int fl;
        if ((r = qc_layer_status_holes(child, off, x->size - off, &n, &fl, &map)) < 0)
            break;
        if (!(fl & QC_BS_ALLOCATED)) /* the child reads X here */
            r = data_bytes(x, off, n, stream);
        off += n;
    }
    qc_image_close(child);
    qc_image_close(x);
    return r;
}
