/*
 * compact.c - copy one layer of a chain into a new image that holds
 * exactly what the layer holds: its data clusters (packed after the
 * metadata), its zero clusters and subclusters, its unallocated ranges
 * left unallocated, the same backing name and format, cluster size,
 * extended L2 and refcount width. The copy reads exactly as the layer, on
 * top of the same backing file, and needs qc_measure(QC_MEASURE_LAYER)
 * bytes at most: a snapshot made on a full-size device shrinks to what it
 * holds. The layer itself is only read (and must not be written meanwhile).
 *
 * A new file appears atomically (temporary name, rename without
 * replacing); a block device is written in place. Putting the copy in the
 * layer's place (and so repointing its children) is the caller's step:
 * a rename over the layer, or an LV swap.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The new image's options: the layer's own format. */
static void same_format(const qc_image *src, qc_create_opts *o)
{
    qc_create_opts_init(o);
    o->size = src->size;
    o->version = (int)src->hdr.version;
    o->cluster_size = (uint32_t)src->cluster_size;
    o->extended_l2 = src->ext_l2;
    o->refcount_bits = src->refcount_bits;
    o->compression_type = src->hdr.compression_type;
    o->backing = src->hdr.backing_name;
    o->backing_fmt = src->hdr.backing_fmt;
    o->backing_unchecked = true;
}

/* Copy [off, off+n) of kind NORMAL at host: whole clusters in-kernel, edges through a buffer. */
static int copy_data(qc_image *src, qc_image *dst, uint64_t off, uint64_t n, uint64_t host, uint8_t *buf,
                     size_t bufsz)
{
    uint64_t cs = dst->cluster_size, end = off + n;
    uint64_t a = qc_align_up(off, cs), b = end & ~(cs - 1);
    int r;
    if (a < b) {
        if (a > off && (r = copy_data(src, dst, off, a - off, host, buf, bufsz)) < 0)
            return r;
        if ((r = qc_write_clusters_copy(dst, a, (b - a) / cs, src->fd, src->filename, host + (a - off), buf,
                                        bufsz)) < 0)
            return r;
        return b < end ? copy_data(src, dst, b, end - b, host + (b - off), buf, bufsz) : 0;
    }
    while (off < end) {
        size_t k = (size_t)qc_min(end - off, bufsz);
        if ((r = qc_pread_full(src->ctx, src->fd, src->filename, buf, k, host)) < 0 ||
            (r = qc_image_write(dst, buf, off, k)) < 0)
            return r;
        off += k;
        host += k;
    }
    return 0;
}

/* Give dst every allocated (sub)cluster of src, kind for kind. */
static int fill(qc_image *src, qc_image *dst, uint8_t *buf, size_t bufsz)
{
    qc_ctx *ctx = src->ctx;
    uint64_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        qc_meter m;
        if (pass)
            qc_meter_start(ctx, &m, total);
        for (uint64_t off = 0; off < src->size;) {
            uint64_t n, host;
            int kind, r;
            if ((r = qc_extent(src, off, qc_min(src->size - off, 64u << 20), &n, &kind, &host)) < 0)
                return r;
            if (!pass) {
                total += kind == QC_SC_NORMAL || kind == QC_SC_COMPRESSED ? n : 0;
            } else if (kind == QC_SC_NORMAL) {
                if ((r = copy_data(src, dst, off, n, host, buf, bufsz)) < 0 || (r = qc_meter_add(ctx, &m, n, src->filename)) < 0)
                    return r;
            } else if (kind == QC_SC_COMPRESSED) {
                uint64_t in = off & (src->cluster_size - 1);
                if ((r = qc_read_compressed(src, host)) < 0 ||
                    (r = qc_image_write(dst, src->zbuf + in, off, (size_t)n)) < 0 ||
                    (r = qc_meter_add(ctx, &m, n, src->filename)) < 0)
                    return r;
            } else if (kind == QC_SC_ZERO || kind == QC_SC_ZERO_ALLOC) {
                /* zeros hide the backing: kept as zero entries, no data */
                if ((r = qc_image_write_zeroes(dst, off, n, QC_ZERO_UNMAP)) < 0)
                    return r;
            }
            off += n;
        }
    }
    return 0;
}

int qc_compact(qc_ctx *ctx, const char *path, const char *fmt, const char *out)
{
    qc_image *src = NULL, *dst = NULL;
    bool in_place = !out;
    if (in_place)
        out = path;
    char *tmp = NULL;
    uint8_t *buf = NULL;
    const size_t bufsz = 1u << 20;
    int r = qc_image_open(ctx, &src, path, fmt, QC_OPEN_NO_BACKING);
    if (r < 0)
        return r;
    if (src->fmt != QC_FMT_QCOW2)
        r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "compact", "'%s' is not a qcow2 image", path);
    else if (src->nsnaps)
        r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "compact",
                    "'%s' has internal snapshots, which a compacted copy would not keep", path);
    else if (src->hdr.incompat & (QC_INCOMPAT_DATA_FILE | QC_INCOMPAT_CORRUPT | QC_INCOMPAT_DIRTY))
        r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "compact",
                    "'%s' is corrupt, dirty or uses an external data file; check or repair it first", path);
    if (r < 0)
        goto out;

    struct stat st;
    bool device = ctx->io->stat(ctx->io_user, out, &st) == 0 && S_ISBLK(st.st_mode);
    if (device && (in_place || (S_ISBLK(src->st.st_mode) && st.st_rdev == src->st.st_rdev))) {
        r = qc_fail(ctx, QC_ERR_INVALID, 0, out, "compact",
                    "'%s': a layer on a block device is compacted into another device", out);
        goto out;
    }
    qc_create_opts o;
    same_format(src, &o);
    if (!device) {
        /* a file is filled under a temporary name, then appears whole */
        size_t n = strlen(out) + 32;
        const char *slash = strrchr(out, '/');
        int dlen = slash ? (int)(slash - out) + 1 : 0;
        if (!(tmp = qc_malloc(ctx, n))) {
            r = QC_ERR_NOMEM;
            goto out;
        }
        snprintf(tmp, n, "%.*s.%s.compact-%d", dlen, out, out + dlen, (int)getpid());
        if (!in_place && ctx->io->stat(ctx->io_user, out, &st) == 0) {
            r = qc_fail(ctx, QC_ERR_EXISTS, EEXIST, out, "compact", "'%s' already exists", out);
            goto out;
        }
        ctx->io->unlink(ctx->io_user, tmp);
    }
    if ((r = device ? qc_create(ctx, out, &o) : qc_create_direct(ctx, tmp, &o)) < 0)
        goto out;
    if ((r = qc_image_open(ctx, &dst, device ? out : tmp, "qcow2", QC_OPEN_RDWR | QC_OPEN_NO_BACKING)) < 0)
        goto out;
    if (!(buf = qc_malloc(ctx, bufsz))) {
        r = QC_ERR_NOMEM;
        goto out;
    }
    if ((r = qc_write_prepare(dst)) < 0 || (r = fill(src, dst, buf, bufsz)) < 0 || (r = qc_flush(dst)) < 0)
        goto out;
    qc_image_close(dst);
    dst = NULL;
    if (in_place) {
        /* the same name: children keep pointing at it */
        r = ctx->io->rename(ctx->io_user, tmp, path, 0);
        r = r < 0 ? qc_fail(ctx, qc_errno_code(-r), -r, path, "compact", "Could not replace '%s': %s", path, strerror(-r))
                  : qc_sync_dir(ctx, path);
    } else if (tmp) {
        r = qc_commit_temp(ctx, tmp, out);
    }
out:
    free(buf);
    qc_error e;
    qc_err_keep(ctx, &e);
    qc_image_close(dst);
    qc_image_close(src);
    if (r < 0 && tmp)
        ctx->io->unlink(ctx->io_user, tmp);
    qc_err_restore(ctx, &e, r);
    free(tmp);
    return r;
}
