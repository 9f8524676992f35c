/* common.h - helpers shared by the fuzz targets (test-only). */
#ifndef QC_FUZZ_COMMON_H
#define QC_FUZZ_COMMON_H

#include "internal.h"
#include "memfs.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline qc_ctx *fuzz_ctx(void)
{
    qc_ctx *ctx = qc_ctx_new();
    if (!ctx)
        abort();
    qc_ctx_set_io(ctx, memfs_io(), NULL);
    qc_ctx_set_cache_size(ctx, 256 * 1024);
    return ctx;
}

/* Read a bounded sample of the guest view: the start, the end, and a few places. */
static inline void fuzz_read(qc_image *img)
{
    static uint8_t buf[128 * 1024];
    uint64_t size = qc_image_size(img);
    uint64_t at[] = {0, size / 3, size / 2, size > sizeof(buf) ? size - sizeof(buf) : 0};
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        size_t n = (size_t)(size - at[i] < sizeof(buf) ? size - at[i] : sizeof(buf));
        if (n)
            qc_image_read(img, buf, at[i], n);
    }
}

/* info, info --backing-chain, map and reads of the memfs file name. */
static inline void fuzz_inspect(qc_ctx *ctx, const char *name, const char *fmt)
{
    json_object *o = NULL;
    if (qc_info(ctx, &o, name, fmt, false) == 0)
        json_object_put(o);
    if (qc_info(ctx, &o, name, fmt, true) == 0)
        json_object_put(o);
    if (qc_map(ctx, &o, name, fmt) == 0)
        json_object_put(o);
    qc_image *img;
    if (qc_image_open(ctx, &img, name, fmt, QC_OPEN_SHARE) == 0) {
        fuzz_read(img);
        qc_image_close(img);
    }
}

#endif
