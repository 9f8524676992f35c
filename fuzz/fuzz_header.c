/* fuzz_header.c - header and extension parser on raw bytes, plus a
 * serialise/parse round trip that must give the same header back. */
#include "common.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    qc_ctx *ctx = fuzz_ctx();
    qc_header h, h2;
    if (qc_header_parse(ctx, &h, d, n, n, "fuzz") == 0) {
        size_t cs = (size_t)1 << h.cluster_bits;
        uint8_t *buf = malloc(cs);
        if (buf && qc_header_serialize(ctx, &h, buf, cs, "fuzz") == 0) {
            if (qc_header_parse(ctx, &h2, buf, cs, cs, "fuzz") != 0)
                abort(); /* what we write we must read */
            if (h2.size != h.size || h2.l1_offset != h.l1_offset || h2.incompat != h.incompat ||
                h2.n_unknown != h.n_unknown || !!h2.backing_name != !!h.backing_name ||
                (h.backing_name && strcmp(h.backing_name, h2.backing_name)))
                abort(); /* round trip lost something */
            qc_header_clear(&h2);
        }
        free(buf);
    }
    qc_header_clear(&h);
    qc_ctx_free(ctx);
    return 0;
}
