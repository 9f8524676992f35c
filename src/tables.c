/*
 * tables.c - what the metadata engine asks of the image file itself: the
 * L1 and refcount tables read on first use, tables and the header written
 * back, fsync, and room to grow on a block device.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

static int load_u64_table(qc_image *img, uint64_t **out, uint64_t off, uint64_t n, const char *what)
{
    uint64_t *t = qc_calloc(img->ctx, n, 8);
    if (!t)
        return QC_ERR_NOMEM;
    int r = n ? qc_pread_exact(img->ctx, img->fd, img->filename, t, n * 8, off, what) : 0;
    if (r < 0) {
        free(t);
        return r;
    }
    for (uint64_t i = 0; i < n; i++)
        t[i] = qc_be64((const uint8_t *)&t[i]);
    *out = t;
    return 0;
}

/* L1 and refcount tables are read on first use: inspection needs neither. */
int qc_image_load_tables(qc_image *img)
{
    int r = 0;
    if (img->fmt != QC_FMT_QCOW2)
        return 0;
    if (!img->l1)
        r = load_u64_table(img, &img->l1, img->hdr.l1_offset, img->l1_size, "L1 table");
    if (r == 0 && !img->reftable)
        r = load_u64_table(img, &img->reftable, img->hdr.rt_offset, img->rt_entries, "refcount table");
    return r;
}

int qc_image_room(qc_image *img, uint64_t end)
{
    if (!img->blockdev || end <= img->file_size)
        return 0;
    return qc_fail(img->ctx, QC_ERR_NOSPC, ENOSPC, img->filename, "write",
                   "'%s': no space left on the device: %llu more bytes needed (its capacity is %llu bytes)",
                   img->filename, (unsigned long long)(end - img->file_size),
                   (unsigned long long)img->file_size);
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

int qc_img_sync(qc_image *img)
{
    if (!img->unsynced)
        return 0;
    int r = qc_sys_fsync(img->ctx, img->fd, img->filename);
    if (r == 0)
        img->unsynced = false;
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
