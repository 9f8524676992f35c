/* map.c - `qemu-img map --output=json` and the raw export (`convert -O raw`). */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct extent {
    uint64_t start, len, offset;
    unsigned depth;
    int flags;
} extent;

/* Can next extend cur (same kind, contiguous host offsets)? */
static bool mergeable(const extent *c, const extent *n)
{
    if ((c->flags & (QC_BS_DATA | QC_BS_ZERO | QC_BS_ALLOCATED | QC_BS_OFFSET)) !=
        (n->flags & (QC_BS_DATA | QC_BS_ZERO | QC_BS_ALLOCATED | QC_BS_OFFSET)))
        return false;
    if (c->depth != n->depth)
        return false;
    return !(c->flags & QC_BS_OFFSET) || c->offset + c->len == n->offset;
}

static json_object *extent_json(const extent *e)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "start", json_object_new_int64((int64_t)e->start));
    json_object_object_add(o, "length", json_object_new_int64((int64_t)e->len));
    json_object_object_add(o, "depth", json_object_new_int64(e->depth));
    json_object_object_add(o, "present", json_object_new_boolean(!!(e->flags & QC_BS_ALLOCATED)));
    json_object_object_add(o, "zero", json_object_new_boolean(!!(e->flags & QC_BS_ZERO)));
    json_object_object_add(o, "data", json_object_new_boolean(!!(e->flags & QC_BS_DATA)));
    if (e->flags & QC_BS_OFFSET)
        json_object_object_add(o, "offset", json_object_new_int64((int64_t)e->offset));
    return o;
}

int qc_map(qc_ctx *ctx, json_object **out, const char *path, const char *fmt)
{
    qc_image *img;
    *out = NULL;
    int r = qc_image_open(ctx, &img, path, fmt, QC_OPEN_SHARE);
    if (r < 0)
        return r;
    json_object *a = json_object_new_array();
    extent cur = {0};
    uint64_t off = 0;
    while (off < img->size) {
        extent n = {.start = off};
        qc_image *layer;
        if ((r = qc_chain_status(img, off, img->size - off, &n.len, &n.flags, &n.offset,
                                 &n.depth, &layer)) < 0)
            break;
        if (cur.len && mergeable(&cur, &n)) {
            cur.len += n.len;
        } else {
            if (cur.len)
                json_object_array_add(a, extent_json(&cur));
            cur = n;
        }
        off += n.len;
    }
    if (r == 0 && cur.len)
        json_object_array_add(a, extent_json(&cur));
    qc_image_close(img);
    if (r < 0) {
        json_object_put(a);
        return r;
    }
    *out = a;
    return 0;
}

int qc_convert_raw(qc_ctx *ctx, const char *path, const char *fmt, const char *out_path)
{
    qc_image *img;
    int r = qc_image_open(ctx, &img, path, fmt, 0);
    if (r < 0)
        return r;
    int fd = qc_sys_open(ctx, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        qc_image_close(img);
        return fd;
    }
    const size_t chunk = 1u << 20;
    uint8_t *buf = qc_malloc(ctx, chunk);
    uint64_t off = 0, cap;
    bool device = false; /* holds old data, has no holes, cannot grow */
    r = buf ? qc_sys_size(ctx, fd, out_path, &cap, &device) : QC_ERR_NOMEM;
    if (r == 0 && device && cap < img->size)
        r = qc_fail(ctx, QC_ERR_NOSPC, ENOSPC, out_path, "convert",
                    "'%s': the device is too small: %llu more bytes needed", out_path,
                    (unsigned long long)(img->size - cap));
    while (r == 0 && off < img->size) {
        uint64_t n, map;
        int flags;
        unsigned depth;
        qc_image *layer;
        if ((r = qc_chain_status(img, off, qc_min(img->size - off, chunk), &n, &flags, &map,
                                 &depth, &layer)) < 0)
            break;
        /* Zeros stay holes in the output; data that reads as zeros too. */
        if (!(flags & QC_BS_ZERO)) {
            if ((r = qc_image_read(img, buf, off, (size_t)n)) < 0)
                break;
            if (device || !qc_buf_is_zero(buf, (size_t)n))
                r = qc_pwrite_full(ctx, fd, out_path, buf, (size_t)n, off);
        } else if (device) {
            memset(buf, 0, (size_t)n);
            r = qc_pwrite_full(ctx, fd, out_path, buf, (size_t)n, off);
        }
        off += n;
        if (ctx->progress && ctx->progress(ctx->progress_user, off, img->size))
            r = qc_fail(ctx, QC_ERR_CANCELLED, 0, path, "convert", "Operation cancelled");
    }
    if (r == 0 && !device) {
        int t = ctx->io->ftruncate(ctx->io_user, fd, img->size);
        if (t < 0)
            r = qc_fail(ctx, qc_errno_code(-t), -t, out_path, "convert",
                        "Could not resize '%s': %s", out_path, strerror(-t));
    }
    if (r == 0)
        r = qc_sys_fsync(ctx, fd, out_path);
    free(buf);
    qc_sys_close(ctx, fd);
    qc_image_close(img);
    return r;
}
