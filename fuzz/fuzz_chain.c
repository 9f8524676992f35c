/* fuzz_chain.c - backing chains with hostile names: the input holds up to
 * four images separated by "\n--8<--\n", named a.qcow2, b.qcow2, c.qcow2
 * and sub/d.qcow2; a.qcow2 is opened with its chain. */
#include "common.h"

static const char *const names[] = {"a.qcow2", "b.qcow2", "c.qcow2", "sub/d.qcow2"};

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    static const char sep[] = "\n--8<--\n";
    memfs_reset();
    size_t start = 0;
    for (int i = 0; i < 4 && start <= n; i++) {
        size_t end = n;
        for (size_t j = start; j + sizeof(sep) - 1 <= n; j++)
            if (!memcmp(d + j, sep, sizeof(sep) - 1)) {
                end = j;
                break;
            }
        memfs_add(names[i], d + start, end - start);
        start = end + sizeof(sep) - 1;
    }
    qc_ctx *ctx = fuzz_ctx();
    qc_ctx_policy(ctx)->max_depth = 8;
    /* the last byte chooses whether unrecorded backing formats are probed */
    qc_ctx_policy(ctx)->probe_backing_format = n && (d[n - 1] & 1);
    fuzz_inspect(ctx, "a.qcow2", NULL);
    qc_ctx_free(ctx);
    return 0;
}
