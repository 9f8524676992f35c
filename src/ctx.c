/* ctx.c - the context: the I/O seam, policy, caches, progress; freed with its holds. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

qc_ctx *qc_ctx_new(void)
{
    qc_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->io = qc_io_posix();
    ctx->pol.max_depth = 256;
    ctx->cache_bytes = 8u << 20;
    ctx->copy_step = 32ull << 20;
    return ctx;
}

void qc_ctx_free(qc_ctx *ctx)
{
    if (!ctx)
        return;
    qc_hold_release(ctx, 0);
    for (size_t i = 0; i < ctx->ndirs; i++)
        free(ctx->dirs[i]);
    free(ctx->dirs);
    free(ctx->foreign_prefix);
    free(ctx);
}

qc_policy *qc_ctx_policy(qc_ctx *ctx) { return &ctx->pol; }

int qc_ctx_allow_dir(qc_ctx *ctx, const char *dir)
{
    int e;
    char *real = qc_sys_realpath(ctx, dir, &e);
    if (!real)
        return e ? qc_fail(ctx, qc_errno_code(e), e, dir, "policy", "Could not resolve allowed directory '%s': %s",
                           dir, strerror(e))
                 : QC_ERR_NOMEM;
    char **n = qc_realloc(ctx, ctx->dirs, (ctx->ndirs + 1) * sizeof(*n));
    if (!n) {
        free(real);
        return qc_fail(ctx, QC_ERR_NOMEM, ENOMEM, dir, "policy", "Out of memory");
    }
    ctx->dirs = n;
    ctx->dirs[ctx->ndirs++] = real;
    return 0;
}

int qc_ctx_foreign_backing(qc_ctx *ctx, const char *prefix)
{
    char *p = prefix ? qc_strdup(ctx, prefix) : NULL;
    if (prefix && !p)
        return qc_fail(ctx, QC_ERR_NOMEM, ENOMEM, prefix, "policy", "Out of memory");
    free(ctx->foreign_prefix);
    ctx->foreign_prefix = p;
    return 0;
}

void qc_ctx_set_cache_size(qc_ctx *ctx, size_t bytes) { ctx->cache_bytes = bytes; }

void qc_ctx_set_copy_step(qc_ctx *ctx, uint64_t bytes) { ctx->copy_step = bytes ? bytes : 32ull << 20; }

void qc_ctx_set_progress(qc_ctx *ctx, qc_progress_fn fn, void *user)
{
    ctx->progress = fn;
    ctx->progress_user = user;
}

void qc_ctx_set_rate_limit(qc_ctx *ctx, uint64_t bps) { ctx->rate_limit = bps; }
