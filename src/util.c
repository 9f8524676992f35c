/* util.c - allocation wrappers and path helpers. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void qc_ctx_set_alloc(qc_ctx *ctx, const qc_alloc *a, void *user)
{
    ctx->alloc = a;
    ctx->alloc_user = user;
}

void *qc_realloc(qc_ctx *ctx, void *p, size_t n)
{
    const qc_alloc *a = ctx ? ctx->alloc : NULL;
    n = n ? n : 1;
    void *q = !a                 ? realloc(p, n)
              : p || !a->malloc ? (a->realloc ? a->realloc(ctx->alloc_user, p, n) : realloc(p, n))
                                 : a->malloc(ctx->alloc_user, n);
    if (!q && ctx)
        qc_fail(ctx, QC_ERR_NOMEM, ENOMEM, NULL, "alloc", "Out of memory (%zu bytes)", n);
    return q;
}

void *qc_malloc(qc_ctx *ctx, size_t n) { return qc_realloc(ctx, NULL, n); }

void *qc_calloc(qc_ctx *ctx, size_t n, size_t m)
{
    if (m && n > SIZE_MAX / m) {
        if (ctx)
            qc_fail(ctx, QC_ERR_NOMEM, ENOMEM, NULL, "alloc", "Out of memory (%zu x %zu bytes)", n, m);
        return NULL;
    }
    void *p = qc_malloc(ctx, n * m);
    if (p)
        memset(p, 0, n * m);
    return p;
}

char *qc_strndup(qc_ctx *ctx, const char *s, size_t n)
{
    char *p = qc_malloc(ctx, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

char *qc_strdup(qc_ctx *ctx, const char *s) { return qc_strndup(ctx, s, strlen(s)); }

char *qc_path_combine(qc_ctx *ctx, const char *base, const char *rel)
{
    if (rel[0] == '/')
        return qc_strdup(ctx, rel);
    const char *slash = strrchr(base, '/');
    size_t dlen = slash ? (size_t)(slash - base) + 1 : 0;
    size_t rlen = strlen(rel);
    char *p = qc_malloc(ctx, dlen + rlen + 1);
    if (p) {
        memcpy(p, base, dlen);
        memcpy(p + dlen, rel, rlen + 1);
    }
    return p;
}

const char *qc_path_file(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

bool qc_path_has_protocol(const char *name)
{
    size_t n = strcspn(name, ":/");
    return name[n] == ':';
}

bool qc_buf_is_zero(const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n && ((uintptr_t)p & 7)) {
        if (*p++)
            return false;
        n--;
    }
    const uint64_t *q = (const uint64_t *)(const void *)p;
    for (; n >= 8; n -= 8)
        if (*q++)
            return false;
    p = (const unsigned char *)q;
    while (n--)
        if (*p++)
            return false;
    return true;
}
