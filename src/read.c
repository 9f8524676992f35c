/* read.c - guest reads through the backing chain. */
#include "internal.h"

#include <string.h>

/* Read [off, off+len) of one layer, descending for unallocated parts. */
static int read_layer(qc_image *img, uint8_t *buf, uint64_t off, size_t len)
{
    while (len) {
        uint64_t n, host;
        int kind;
        int r = qc_extent(img, off, len, &n, &kind, &host);
        if (r < 0)
            return r;
        switch (kind) {
        case QC_SC_NORMAL:
            r = qc_pread_full(img->ctx, img->data_fd, img->filename, buf, (size_t)n, host);
            break;
        case QC_SC_COMPRESSED:
            r = qc_read_compressed(img, host);
            if (r == 0)
                memcpy(buf, img->zbuf + (off & (img->cluster_size - 1)), (size_t)n);
            break;
        case QC_SC_UNALLOC:
        case QC_SC_UNALLOC_ALLOC: {
            qc_image *b = img->backing;
            uint64_t m = b && off < b->size ? qc_min(n, b->size - off) : 0;
            if (m)
                r = read_layer(b, buf, off, (size_t)m);
            memset(buf + m, 0, (size_t)(n - m));
            break;
        }
        default:
            memset(buf, 0, (size_t)n);
        }
        if (r < 0)
            return r;
        buf += n;
        off += n;
        len -= (size_t)n;
    }
    return 0;
}

int qc_image_read(qc_image *img, void *buf, uint64_t off, size_t len)
{
    if (qc_past(off, len, img->size))
        return qc_fail(img->ctx, QC_ERR_INVALID, 0, img->filename, "read",
                       "'%s': read of %zu bytes at %llu is past the end of the image (%llu bytes)",
                       img->filename, len, (unsigned long long)off, (unsigned long long)img->size);
    return read_layer(img, buf, off, len);
}
