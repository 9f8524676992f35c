/* error.c - the context and its one error slot. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *qc_strerror(int code)
{
    switch (code) {
    case QC_OK: return "ok";
    case QC_ERR_IO: return "io";
    case QC_ERR_INVALID: return "invalid";
    case QC_ERR_FORMAT: return "format";
    case QC_ERR_UNSUPPORTED: return "unsupported";
    case QC_ERR_NOMEM: return "nomem";
    case QC_ERR_LOOP: return "loop";
    case QC_ERR_NOTFOUND: return "notfound";
    case QC_ERR_LOCKED: return "locked";
    case QC_ERR_POLICY: return "policy";
    case QC_ERR_NOSPC: return "nospc";
    case QC_ERR_EXISTS: return "exists";
    case QC_ERR_BUSY: return "busy";
    case QC_ERR_CANCELLED: return "cancelled";
    }
    return "unknown";
}

qc_ctx *qc_ctx_new(void)
{
    qc_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->io = qc_io_posix();
    ctx->pol.max_depth = 256;
    ctx->cache_bytes = 8u << 20;
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

const qc_error *qc_ctx_error(const qc_ctx *ctx) { return &ctx->err; }

void qc_ctx_clear_error(qc_ctx *ctx) { memset(&ctx->err, 0, sizeof(ctx->err)); }

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

void qc_ctx_set_progress(qc_ctx *ctx, qc_progress_fn fn, void *user)
{
    ctx->progress = fn;
    ctx->progress_user = user;
}

void qc_ctx_set_rate_limit(qc_ctx *ctx, uint64_t bps) { ctx->rate_limit = bps; }

int qc_errno_code(int e)
{
    switch (e) {
    case ENOSPC: case EDQUOT: return QC_ERR_NOSPC;
    case ENOENT: return QC_ERR_NOTFOUND;
    case EEXIST: return QC_ERR_EXISTS;
    case ENOMEM: return QC_ERR_NOMEM;
    case ELOOP: return QC_ERR_LOOP;
    case EAGAIN: return QC_ERR_LOCKED;
    default: return QC_ERR_IO;
    }
}

const char *qc_printable(const char *s, char *buf, size_t n)
{
    size_t o = 0;
    if (!s)
        s = "";
    for (; *s && o + 5 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = 0;
    return buf;
}

/* Records the error; the message is made one line whatever it contains. */
int qc_fail(qc_ctx *ctx, int code, int sys_errno, const char *path,
            const char *op, const char *fmt, ...)
{
    qc_error *e = &ctx->err;
    char raw[sizeof(e->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    memset(e, 0, sizeof(*e));
    e->code = code;
    e->sys_errno = sys_errno;
    snprintf(e->op, sizeof(e->op), "%s", op ? op : "");
    snprintf(e->path, sizeof(e->path), "%s", path ? path : "");
    qc_printable(raw, e->msg, sizeof(e->msg));
    return code;
}
