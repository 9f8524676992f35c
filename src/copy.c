/* copy.c - helpers of the long copies (commit, rebase): walking the chain
 * above a layer, progress, rate limit, cancellation. */
#include "internal.h"

#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

void qc_meter_start(qc_ctx *ctx, qc_meter *m, uint64_t total)
{
    m->total = total;
    m->done = 0;
    m->start = now();
    if (ctx->progress)
        ctx->progress(ctx->progress_user, 0, total);
}

int qc_meter_add(qc_ctx *ctx, qc_meter *m, uint64_t n, const char *path)
{
    m->done += n;
    if (ctx->rate_limit) {
        double ahead = (double)m->done / (double)ctx->rate_limit - (now() - m->start);
        if (ahead > 0) {
            struct timespec t = {(time_t)ahead, (long)((ahead - (double)(time_t)ahead) * 1e9)};
            nanosleep(&t, NULL);
        }
    }
    if (ctx->progress && ctx->progress(ctx->progress_user, m->done, m->total))
        return qc_fail(ctx, QC_ERR_CANCELLED, 0, path, "copy", "'%s': operation cancelled", path);
    return 0;
}

int qc_status_above(qc_image *top, qc_image *stop, uint64_t off, uint64_t max, uint64_t *len,
                    int *flags, uint64_t *map, qc_image **layer)
{
    *layer = NULL;
    *flags = 0;
    *len = max;
    for (qc_image *l = top; l && l != stop; l = l->backing) {
        if (off >= l->size) {
            /* past a smaller layer's end: reads as zeros from here on */
            *flags = QC_BS_ZERO;
            *layer = l;
            return 0;
        }
        /* holes under data clusters read as zeros: nothing to copy there */
        int r = qc_layer_status_holes(l, off, *len, len, flags, map);
        if (r < 0)
            return r;
        /* ZERO without ALLOCATED: past the end of l's backing, zeros too */
        if (*flags & (QC_BS_ALLOCATED | QC_BS_ZERO)) {
            *layer = l;
            return 0;
        }
    }
    *flags = 0;
    return 0;
}
