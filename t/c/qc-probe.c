/*
 * qc-probe - open each FILE through the core and exercise the whole read
 * path: info (single and chain), map, and a read of the guest view. Built
 * with AddressSanitizer/UBSan by t/c/run-ctest.pl; also the replay driver
 * for fuzz corpora. Prints "FILE: ok" or the core's one-line error; a
 * memory error aborts (non-zero exit from the sanitizer).
 */
#include "qcow2chain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int probe(const char *path, const char *fmt)
{
    qc_ctx *ctx = qc_ctx_new();
    json_object *o = NULL;
    qc_image *img = NULL;
    int r = qc_info(ctx, &o, path, fmt, false);
    if (r == 0) {
        json_object_put(o);
        r = qc_info(ctx, &o, path, fmt, true);
    }
    if (r == 0) {
        json_object_put(o);
        r = qc_map(ctx, &o, path, fmt);
    }
    if (r == 0) {
        json_object_put(o);
        r = qc_image_open(ctx, &img, path, fmt, QC_OPEN_SHARE);
    }
    if (r == 0) {
        /* Read at most 64 MiB of the guest view, in odd-sized pieces. */
        static char buf[1 << 20];
        uint64_t size = qc_image_size(img), lim = size < (64u << 20) ? size : (64u << 20);
        for (uint64_t off = 0; off < lim && r == 0;) {
            size_t n = (size_t)(lim - off < 777777 ? lim - off : 777777);
            r = qc_image_read(img, buf, off, n);
            off += n;
        }
    }
    qc_image_close(img);
    if (r == 0)
        printf("%s: ok\n", path);
    else
        printf("%s: error %s: %s\n", path, qc_strerror(r), qc_ctx_error(ctx)->msg);
    qc_ctx_free(ctx);
    return r == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *fmt = NULL;
    int i = 1, bad = 0;
    if (argc > 2 && !strcmp(argv[1], "-f")) {
        fmt = argv[2];
        i = 3;
    }
    for (; i < argc; i++)
        bad |= probe(argv[i], fmt);
    return bad;
}
