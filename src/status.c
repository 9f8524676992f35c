/*
 * status.c - block status as QEMU's block layer reports it, per layer and
 * through the chain. This is what `map` prints and what `convert` uses to
 * skip zeros.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* Status of host file bytes [off, off+max): data or hole (SEEK_DATA/SEEK_HOLE). */
static int file_status(qc_image *img, int fd, uint64_t off, uint64_t max, uint64_t *len, int *flags)
{
    qc_ctx *ctx = img->ctx;
    int64_t data = ctx->io->seek(ctx->io_user, fd, (int64_t)off, SEEK_DATA);
    if (data == -ENXIO) { /* trailing hole */
        *flags = QC_BS_ZERO;
        *len = max;
        return 0;
    }
    if (data < 0) { /* no hole support: all data */
        *flags = QC_BS_DATA;
        *len = max;
        return 0;
    }
    if ((uint64_t)data == off) {
        int64_t hole = ctx->io->seek(ctx->io_user, fd, (int64_t)off, SEEK_HOLE);
        *flags = QC_BS_DATA;
        *len = hole > (int64_t)off ? qc_min(max, (uint64_t)hole - off) : max;
    } else {
        *flags = QC_BS_ZERO;
        *len = qc_min(max, (uint64_t)data - off);
    }
    return 0;
}

/* QEMU's heuristic: more clusters referenced than the file really stores. */
static int detect_prealloc(qc_image *img)
{
    struct stat st;
    int r = qc_sys_fstat(img->ctx, img->fd, img->filename, &st);
    if (r < 0)
        return r;
    uint64_t real = (uint64_t)st.st_blocks * 512 / img->cluster_size;
    uint64_t threshold = qc_max(real * 10 / 9, real + 2);
    uint64_t end = (img->file_size + img->cluster_size - 1) >> img->cluster_bits;
    uint64_t count = 0;
    for (uint64_t i = 0; i < end && count < threshold; i++) {
        uint64_t rc;
        if ((r = qc_refcount_get(img, i, &rc)) < 0)
            return r;
        count += rc != 0;
    }
    img->prealloc = count >= threshold;
    return 0;
}

/* holes: ask the host file about holes under data clusters even without metadata preallocation */
static int layer_status(qc_image *img, uint64_t off, uint64_t max, uint64_t *len, int *flags, uint64_t *map,
                        bool holes)
{
    int r;
    max = qc_min(max, img->size - off);
    *map = 0;
    if (img->fmt == QC_FMT_RAW) {
        uint64_t fsz = img->file_size;
        if (off >= fsz) {
            *flags = QC_BS_ZERO;
            *len = max;
        } else if ((r = file_status(img, img->fd, off, qc_min(max, fsz - off), len, flags)) < 0) {
            return r;
        }
        *flags |= QC_BS_OFFSET | QC_BS_ALLOCATED;
        *map = off;
        return 0;
    }
    int kind;
    uint64_t host;
    if ((r = qc_extent(img, off, max, len, &kind, &host)) < 0)
        return r;
    *flags = 0;
    switch (kind) {
    case QC_SC_NORMAL: *flags = QC_BS_DATA | QC_BS_OFFSET; break;
    case QC_SC_ZERO_ALLOC: *flags = QC_BS_ZERO | QC_BS_OFFSET; break;
    case QC_SC_UNALLOC_ALLOC: *flags = QC_BS_OFFSET; break;
    case QC_SC_ZERO: *flags = QC_BS_ZERO; break;
    case QC_SC_COMPRESSED: *flags = QC_BS_DATA; break;
    default: break;
    }
    if (*flags & QC_BS_OFFSET)
        *map = host;
    if (*flags & (QC_BS_DATA | QC_BS_ZERO)) {
        *flags |= QC_BS_ALLOCATED;
    } else if (!img->hdr.backing_name || (img->backing && off >= img->backing->size)) {
        *flags |= QC_BS_ZERO;
    }
    if (kind == QC_SC_NORMAL && img->data_fd == img->fd) {
        /* With metadata preallocation QEMU asks the host file about holes. */
        if (!holes && img->prealloc < 0 && (r = detect_prealloc(img)) < 0)
            return r;
        if (holes || img->prealloc) {
            uint64_t fsz = img->file_size, flen;
            int ff;
            if (host >= fsz) {
                *flags |= QC_BS_ZERO;
            } else {
                if ((r = file_status(img, img->fd, host, qc_min(*len, fsz - host), &flen, &ff)) < 0)
                    return r;
                if (host + flen == fsz && (ff & QC_BS_ZERO)) {
                    *flags |= QC_BS_ZERO;
                } else {
                    *len = flen;
                    *flags |= ff & QC_BS_ZERO;
                }
            }
        }
    }
    return 0;
}

int qc_layer_status(qc_image *img, uint64_t off, uint64_t max, uint64_t *len,
                    int *flags, uint64_t *map)
{
    return layer_status(img, off, max, len, flags, map, false);
}

int qc_layer_status_holes(qc_image *img, uint64_t off, uint64_t max, uint64_t *len, int *flags, uint64_t *map)
{
    return layer_status(img, off, max, len, flags, map, true);
}

int qc_chain_status(qc_image *top, uint64_t off, uint64_t max, uint64_t *len,
                    int *flags, uint64_t *map, unsigned *depth, qc_image **layer)
{
    qc_image *img = top;
    *depth = 0;
    for (;;) {
        int r = qc_layer_status(img, off, max, len, flags, map);
        if (r < 0)
            return r;
        if ((*flags & (QC_BS_DATA | QC_BS_ZERO)) || !img->backing)
            break;
        max = *len;
        img = img->backing;
        ++*depth;
    }
    *layer = img;
    return 0;
}
