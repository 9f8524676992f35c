/* fuzz_open.c - the whole open path on an in-memory image: header, L1, L2,
 * refcount and snapshot tables, bitmaps, compressed clusters; info, map
 * and reads. */
#include "common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    memfs_reset();
    if (memfs_add("img.qcow2", d, n) < 0)
        return 0;
    qc_ctx *ctx = fuzz_ctx();
    fuzz_inspect(ctx, "img.qcow2", "qcow2");
    qc_ctx_free(ctx);
    return 0;
}
