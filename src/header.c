/* header.c - parse cluster 0 (header, extensions, backing name) from a buffer. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qc_header_clear(qc_header *h)
{
    free(h->extra);
    free(h->backing_fmt);
    free(h->data_file);
    free(h->crypto.data);
    free(h->features.data);
    for (size_t i = 0; i < h->n_unknown; i++)
        free(h->unknown[i].data);
    free(h->unknown);
    free(h->backing_name);
    memset(h, 0, sizeof(*h));
}

const char *qc_header_feature_name(const qc_header *h, int type, int bit,
                                   char *buf, size_t n)
{
    for (uint32_t o = 0; o + 48 <= h->features.len; o += 48) {
        const uint8_t *e = h->features.data + o;
        if (e[0] == type && e[1] == bit) {
            size_t l = strnlen((const char *)e + 2, 46);
            if (l >= n)
                l = n - 1;
            memcpy(buf, e + 2, l);
            buf[l] = 0;
            return buf;
        }
    }
    return NULL;
}

static char *ext_string(qc_ctx *ctx, const uint8_t *p, uint32_t len)
{
    return qc_strndup(ctx, (const char *)p, strnlen((const char *)p, len));
}

static int bad(qc_ctx *ctx, const char *path, const char *what)
{
    return qc_fail(ctx, QC_ERR_FORMAT, 0, path, "open", "'%s': %s", path, what);
}

/* Keep one extension verbatim (copy of its data). */
static int keep_ext(qc_ctx *ctx, qc_ext *dst, uint32_t magic, const uint8_t *p, uint32_t len)
{
    dst->magic = magic;
    dst->len = len;
    dst->data = qc_malloc(ctx, len);
    if (!dst->data)
        return QC_ERR_NOMEM;
    memcpy(dst->data, p, len);
    return 0;
}

/* Returns 1 when the buffer ended before the end marker (caller may retry). */
static int parse_extensions(qc_ctx *ctx, qc_header *h, const uint8_t *buf,
                            uint64_t start, uint64_t end, bool partial, const char *path)
{
    uint64_t off = start;
    while (off + 8 <= end) {
        uint32_t magic = qc_be32(buf + off), len = qc_be32(buf + off + 4);
        off += 8;
        if (magic == QC_EXT_END)
            return 0;
        if (len > end - off) {
            if (partial)
                return 1;
            return bad(ctx, path, "header extension runs past the end of the header area");
        }
        const uint8_t *p = buf + off;
        int r = 0;
        switch (magic) {
        case QC_EXT_BACKING_FMT:
            if (len >= 16)
                return bad(ctx, path, "backing format extension is too long");
            free(h->backing_fmt);
            if (!(h->backing_fmt = ext_string(ctx, p, len)))
                return QC_ERR_NOMEM;
            break;
        case QC_EXT_DATA_FILE:
            free(h->data_file);
            if (!(h->data_file = ext_string(ctx, p, len)))
                return QC_ERR_NOMEM;
            break;
        case QC_EXT_FEATURES:
            free(h->features.data);
            r = keep_ext(ctx, &h->features, magic, p, len);
            break;
        case QC_EXT_CRYPTO:
            free(h->crypto.data);
            r = keep_ext(ctx, &h->crypto, magic, p, len);
            break;
        case QC_EXT_BITMAPS:
            if (len != 24)
                return bad(ctx, path, "bitmaps extension has an invalid length");
            /* Bitmaps count only while the autoclear bit says they are consistent. */
            if (h->autoclear & QC_AUTOCLEAR_BITMAPS) {
                h->has_bitmaps_ext = true;
                h->nb_bitmaps = qc_be32(p);
                h->bitmap_dir_size = qc_be64(p + 8);
                h->bitmap_dir_offset = qc_be64(p + 16);
            }
            break;
        default: {
            qc_ext *n = qc_realloc(ctx, h->unknown, (h->n_unknown + 1) * sizeof(*n));
            if (!n)
                return qc_fail(ctx, QC_ERR_NOMEM, 0, path, "open", "Out of memory");
            h->unknown = n;
            r = keep_ext(ctx, &h->unknown[h->n_unknown], magic, p, len);
            if (r == 0)
                h->n_unknown++;
        }
        }
        if (r < 0)
            return r;
        off += qc_align_up(len, 8);
    }
    return partial ? 1 : 0;
}

int qc_header_parse(qc_ctx *ctx, qc_header *h, const uint8_t *buf, size_t len,
                    uint64_t file_size, const char *path)
{
    memset(h, 0, sizeof(*h));
    /* len may be a prefix of cluster 0; then 1 asks for the whole cluster. */
    bool partial = len >= 24 && len < qc_min(file_size, 1ull << qc_min(qc_be32(buf + 20), 21));
    if (len < 72 || file_size < 72)
        return bad(ctx, path, "file is too short to be a qcow2 image");
    if (qc_be32(buf) != QC_MAGIC)
        return bad(ctx, path, "not a qcow2 image (bad magic)");
    h->version = qc_be32(buf + 4);
    if (h->version != 2 && h->version != 3)
        return qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "open",
                       "'%s': unsupported qcow2 version %u", path, h->version);
    h->backing_offset = qc_be64(buf + 8);
    h->backing_size = qc_be32(buf + 16);
    h->cluster_bits = qc_be32(buf + 20);
    h->size = qc_be64(buf + 24);
    h->crypt_method = qc_be32(buf + 32);
    h->l1_size = qc_be32(buf + 36);
    h->l1_offset = qc_be64(buf + 40);
    h->rt_offset = qc_be64(buf + 48);
    h->rt_clusters = qc_be32(buf + 56);
    h->nb_snapshots = qc_be32(buf + 60);
    h->snapshots_offset = qc_be64(buf + 64);
    if (h->cluster_bits < 9 || h->cluster_bits > 21)
        return qc_fail(ctx, QC_ERR_FORMAT, 0, path, "open",
                       "'%s': unsupported cluster size 2^%u", path, h->cluster_bits);
    uint64_t cs = 1ull << h->cluster_bits;
    if (h->version == 2) {
        h->header_length = 72;
        h->refcount_order = 4;
    } else {
        if (len < 104 || file_size < 104)
            return bad(ctx, path, "file is too short for a version 3 header");
        h->incompat = qc_be64(buf + 72);
        h->compat = qc_be64(buf + 80);
        h->autoclear = qc_be64(buf + 88);
        h->refcount_order = qc_be32(buf + 96);
        h->header_length = qc_be32(buf + 100);
        if (h->header_length < 104)
            return bad(ctx, path, "header length is too small");
        if (h->header_length > cs)
            return bad(ctx, path, "header length is larger than the cluster size");
        if (h->header_length > len)
            return partial ? 1 : bad(ctx, path, "header length is larger than the file");
        if (h->header_length > 104)
            h->compression_type = buf[104];
        if (h->header_length > 105) {
            h->extra_len = h->header_length - 105;
            if (!(h->extra = qc_malloc(ctx, h->extra_len)))
                return QC_ERR_NOMEM;
            memcpy(h->extra, buf + 105, h->extra_len);
        }
    }
    if (h->refcount_order > 6)
        return bad(ctx, path, "refcount width is larger than 64 bits");
    if (h->size > QC_MAX_VIRTUAL_SIZE)
        return bad(ctx, path, "virtual size is too large");

    uint64_t ext_end = len;
    if (h->backing_offset) {
        if (h->backing_offset >= cs || h->backing_offset < h->header_length)
            return bad(ctx, path, "backing file name offset lies outside the header cluster");
        ext_end = h->backing_offset;
        if (partial && h->backing_offset + h->backing_size > len)
            return 1;
    }
    bool cut = ext_end > len;
    if (cut)
        ext_end = len;
    int r = parse_extensions(ctx, h, buf, h->header_length, ext_end, partial && (cut || !h->backing_offset), path);
    if (r != 0)
        return r;

    uint64_t unknown = h->incompat & ~QC_INCOMPAT_KNOWN;
    if (unknown) {
        char names[512] = "", one[64];
        size_t o = 0;
        for (int b = 0; b < 64 && o < sizeof(names); b++) {
            if (!(unknown >> b & 1))
                continue;
            const char *n = qc_header_feature_name(h, 0, b, one, sizeof(one));
            if (n)
                o += (size_t)snprintf(names + o, sizeof(names) - o, "%s%s", o ? ", " : "", n);
            else
                o += (size_t)snprintf(names + o, sizeof(names) - o, "%sbit %d", o ? ", " : "", b);
        }
        return qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "open",
                       "'%s': unsupported incompatible qcow2 feature(s): %s", path, names);
    }
    if (h->compression_type > 1)
        return qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "open",
                       "'%s': unknown compression type %u", path, h->compression_type);
    if ((h->compression_type != 0) != !!(h->incompat & QC_INCOMPAT_COMPRESSION))
        return bad(ctx, path, "compression type and its incompatible feature bit disagree");

    if (h->backing_offset) {
        if (h->backing_size > QC_MAX_BACKING_NAME)
            return bad(ctx, path, "backing file name is too long");
        if (qc_past(h->backing_offset, h->backing_size, qc_min(cs, len)))
            return bad(ctx, path, "backing file name lies outside the header cluster");
        const char *p = (const char *)buf + h->backing_offset;
        if (memchr(p, 0, h->backing_size))
            return bad(ctx, path, "backing file name contains a NUL byte");
        if (h->backing_size == 0)
            return bad(ctx, path, "backing file name is empty");
        if (!(h->backing_name = qc_strndup(ctx, p, h->backing_size)))
            return QC_ERR_NOMEM;
    }
    return 0;
}

/* QEMU's feature name table, as written by every v3 header update. */
static const struct {
    uint8_t type, bit;
    const char *name;
} feature_names[] = {
    {0, 0, "dirty bit"},           {0, 1, "corrupt bit"},    {0, 2, "external data file"},
    {0, 3, "compression type"},    {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},             {2, 1, "raw external data"},
};

/* Append one extension at *o; false if it does not fit before limit. */
static bool put_ext(uint8_t *buf, size_t *o, size_t limit, uint32_t magic, const void *data, uint32_t len)
{
    size_t need = 8 + (size_t)qc_align_up(len, 8);
    if (*o + need > limit)
        return false;
    qc_put32(buf + *o, magic);
    qc_put32(buf + *o + 4, len);
    if (len)
        memcpy(buf + *o + 8, data, len);
    *o += need;
    return true;
}

int qc_header_serialize(qc_ctx *ctx, qc_header *h, uint8_t *buf, size_t cs, const char *path)
{
    memset(buf, 0, cs);
    qc_put32(buf, QC_MAGIC);
    qc_put32(buf + 4, h->version);
    qc_put32(buf + 20, h->cluster_bits);
    qc_put64(buf + 24, h->size);
    qc_put32(buf + 32, h->crypt_method);
    qc_put32(buf + 36, h->l1_size);
    qc_put64(buf + 40, h->l1_offset);
    qc_put64(buf + 48, h->rt_offset);
    qc_put32(buf + 56, h->rt_clusters);
    qc_put32(buf + 60, h->nb_snapshots);
    qc_put64(buf + 64, h->snapshots_offset);
    size_t o = 72;
    if (h->version >= 3) {
        qc_put64(buf + 72, h->incompat);
        qc_put64(buf + 80, h->compat);
        qc_put64(buf + 88, h->autoclear);
        qc_put32(buf + 96, h->refcount_order);
        qc_put32(buf + 100, h->header_length);
        if (h->header_length > 104)
            buf[104] = h->compression_type;
        if (h->extra_len)
            memcpy(buf + 105, h->extra, h->extra_len);
        o = h->header_length;
    }
    size_t name_len = h->backing_name ? strlen(h->backing_name) : 0;
    if (name_len > QC_MAX_BACKING_NAME)
        return qc_fail(ctx, QC_ERR_INVALID, 0, path, "header",
                       "'%s': backing file name is longer than %u bytes", path, QC_MAX_BACKING_NAME);
    /* Extensions must leave room for the end marker and the backing name. */
    size_t limit = cs - 8 - name_len;
    bool ok = true;
    if (h->backing_name && h->backing_fmt)
        ok = ok && put_ext(buf, &o, limit, QC_EXT_BACKING_FMT, h->backing_fmt, (uint32_t)strlen(h->backing_fmt));
    if (h->data_file)
        ok = ok && put_ext(buf, &o, limit, QC_EXT_DATA_FILE, h->data_file, (uint32_t)strlen(h->data_file));
    if (h->crypto.len)
        ok = ok && put_ext(buf, &o, limit, QC_EXT_CRYPTO, h->crypto.data, h->crypto.len);
    if (h->version >= 3 && cs > 4096) {
        uint8_t t[sizeof(feature_names) / sizeof(feature_names[0]) * 48];
        memset(t, 0, sizeof(t));
        for (size_t i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++) {
            t[i * 48] = feature_names[i].type;
            t[i * 48 + 1] = feature_names[i].bit;
            memcpy(t + i * 48 + 2, feature_names[i].name, strlen(feature_names[i].name));
        }
        ok = ok && put_ext(buf, &o, limit, QC_EXT_FEATURES, t, sizeof(t));
    }
    if (h->has_bitmaps_ext) {
        uint8_t b[24] = {0};
        qc_put32(b, h->nb_bitmaps);
        qc_put64(b + 8, h->bitmap_dir_size);
        qc_put64(b + 16, h->bitmap_dir_offset);
        ok = ok && put_ext(buf, &o, limit, QC_EXT_BITMAPS, b, sizeof(b));
    }
    for (size_t i = 0; i < h->n_unknown; i++)
        ok = ok && put_ext(buf, &o, limit, h->unknown[i].magic, h->unknown[i].data, h->unknown[i].len);
    if (!ok)
        return qc_fail(ctx, QC_ERR_NOSPC, ENOSPC, path, "header",
                       "'%s': No space left in the file header", path);
    o += 8; /* end marker (zeros) */
    if (h->backing_name) {
        memcpy(buf + o, h->backing_name, name_len);
        h->backing_offset = o;
        h->backing_size = (uint32_t)name_len;
    } else {
        h->backing_offset = 0;
        h->backing_size = 0;
    }
    qc_put64(buf + 8, h->backing_offset);
    qc_put32(buf + 16, h->backing_size);
    return 0;
}
