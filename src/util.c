/* util.c - allocation wrappers and path helpers. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void *qc_malloc(qc_ctx *ctx, size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        qc_fail(ctx, QC_ERR_NOMEM, ENOMEM, NULL, "alloc", "Out of memory (%zu bytes)", n);
    return p;
}

void *qc_calloc(qc_ctx *ctx, size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p)
        qc_fail(ctx, QC_ERR_NOMEM, ENOMEM, NULL, "alloc", "Out of memory (%zu x %zu bytes)", n, m);
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
