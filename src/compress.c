/* compress.c - decoding of compressed clusters (zlib raw deflate, zstd). */
#include "internal.h"

#include <string.h>
#include <zlib.h>
#include <zstd.h>

static int fail(qc_ctx *ctx, const char *path, const char *how)
{
    return qc_fail(ctx, QC_ERR_FORMAT, 0, path, "read",
                   "'%s': compressed cluster could not be decoded (%s)", path, how);
}

static int inflate_zlib(qc_ctx *ctx, const uint8_t *in, size_t in_len, uint8_t *out,
                        size_t out_len, const char *path)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, -12) != Z_OK)
        return fail(ctx, path, "zlib init");
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)in_len;
    z.next_out = out;
    z.avail_out = (uInt)out_len;
    int r = inflate(&z, Z_FINISH);
    inflateEnd(&z);
    /* Output must be one full cluster; trailing input is padding. */
    if ((r != Z_STREAM_END && r != Z_BUF_ERROR && r != Z_OK) || z.avail_out)
        return fail(ctx, path, "zlib");
    return 0;
}

static int inflate_zstd(qc_ctx *ctx, const uint8_t *in, size_t in_len, uint8_t *out,
                        size_t out_len, const char *path)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d)
        return fail(ctx, path, "zstd init");
    ZSTD_inBuffer ib = {in, in_len, 0};
    ZSTD_outBuffer ob = {out, out_len, 0};
    int r = 0;
    while (ob.pos < ob.size) {
        size_t z = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(z)) {
            r = fail(ctx, path, ZSTD_getErrorName(z));
            break;
        }
        if (ib.pos == ib.size && ob.pos < ob.size) {
            r = fail(ctx, path, "zstd: input ended early");
            break;
        }
    }
    ZSTD_freeDCtx(d);
    return r;
}

int qc_inflate(qc_ctx *ctx, int type, const uint8_t *in, size_t in_len,
               uint8_t *out, size_t out_len, const char *path)
{
    return type == 1 ? inflate_zstd(ctx, in, in_len, out, out_len, path)
                     : inflate_zlib(ctx, in, in_len, out, out_len, path);
}
