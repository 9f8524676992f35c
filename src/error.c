/* error.c - the context's one error slot: codes, messages, errno mapping. */
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

const qc_error *qc_ctx_error(const qc_ctx *ctx) { return &ctx->err; }

void qc_ctx_clear_error(qc_ctx *ctx) { memset(&ctx->err, 0, sizeof(ctx->err)); }

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

void qc_err_keep(const qc_ctx *ctx, qc_error *kept) { *kept = ctx->err; }

int qc_err_restore(qc_ctx *ctx, const qc_error *kept, int r)
{
    if (r < 0)
        ctx->err = *kept;
    return r;
}
