/* fuzz_check.c - check, repair, and guest writes on hostile metadata: the
 * write engine must refuse or cope, never crash. */
#include "common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    memfs_reset();
    if (memfs_add("img.qcow2", d, n) < 0)
        return 0;
    qc_ctx *ctx = fuzz_ctx();
    json_object *o = NULL;
    if (qc_check(ctx, &o, "img.qcow2", "qcow2", QC_REPAIR_NONE) == 0)
        json_object_put(o);
    qc_image *img;
    if (qc_image_open(ctx, &img, "img.qcow2", "qcow2", QC_OPEN_RDWR | QC_OPEN_NO_BACKING) == 0) {
        static const uint8_t buf[4096] = {1, 2, 3};
        uint64_t size = qc_image_size(img);
        if (size > 8192) {
            qc_image_write(img, buf, 512, sizeof(buf));
            qc_image_write_zeroes(img, size / 2, 4096, QC_ZERO_UNMAP);
            qc_image_discard(img, 0, size < (1u << 22) ? size : (1u << 22));
            qc_image_write(img, buf, size - 100, 100);
        }
        qc_image_flush(img);
        qc_image_close(img);
    }
    if (qc_check(ctx, &o, "img.qcow2", "qcow2", QC_REPAIR_ALL) == 0)
        json_object_put(o);
    qc_ctx_free(ctx);
    return 0;
}
