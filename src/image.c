/* image.c - open one image (qcow2 or raw): header, tables, snapshots, bitmaps. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *qc_format_name(int fmt) { return fmt == QC_FMT_RAW ? "raw" : "qcow2"; }

int qc_format_from_name(qc_ctx *ctx, const char *fmt, const char *path)
{
    if (!strcmp(fmt, "qcow2"))
        return QC_FMT_QCOW2;
    if (!strcmp(fmt, "raw"))
        return QC_FMT_RAW;
    char b[64];
    return qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "open",
                   "'%s': unsupported image format '%s' (only qcow2 and raw)", path,
                   qc_printable(fmt, b, sizeof(b)));
}

static int bad(qc_image *img, const char *what)
{
    return qc_fail(img->ctx, QC_ERR_FORMAT, 0, img->filename, "open", "'%s': %s",
                   img->filename, what);
}

/* A table of n entries of esize bytes at off: aligned, capped, inside the file. */
static int check_table(qc_image *img, uint64_t off, uint64_t n, uint64_t esize,
                       uint64_t max_bytes, const char *what)
{
    char m[160];
    if (n > max_bytes / esize) {
        snprintf(m, sizeof(m), "%s is too large (%llu entries)", what, (unsigned long long)n);
        return bad(img, m);
    }
    if (n && (off & (img->cluster_size - 1))) {
        snprintf(m, sizeof(m), "%s offset %#llx is not cluster aligned", what, (unsigned long long)off);
        return bad(img, m);
    }
    if (n && (off == 0 || qc_past(off, n * esize, img->file_size))) {
        snprintf(m, sizeof(m), "%s at offset %#llx lies outside the file", what, (unsigned long long)off);
        return bad(img, m);
    }
    return 0;
}

static int load_snapshots(qc_image *img)
{
    qc_header *h = &img->hdr;
    if (!h->nb_snapshots)
        return 0;
    if (h->nb_snapshots > QC_MAX_SNAPSHOTS)
        return bad(img, "too many internal snapshots");
    int r = check_table(img, h->snapshots_offset, 1, 1, 1, "snapshot table");
    if (r < 0)
        return r;
    if (!(img->snaps = qc_calloc(img->ctx, h->nb_snapshots, sizeof(*img->snaps))))
        return QC_ERR_NOMEM;
    /* Entry by entry: 40 fixed bytes, then extra data, id and name. */
    uint8_t *var = qc_malloc(img->ctx, QC_MAX_SNAPSHOT_EXTRA + 2 * 65535);
    if (!var)
        return QC_ERR_NOMEM;
    uint64_t o = h->snapshots_offset;
    for (uint32_t i = 0; i < h->nb_snapshots; i++) {
        qc_snapshot *s = &img->snaps[i];
        uint8_t e[40];
        if (o - h->snapshots_offset > QC_MAX_SNAPSHOT_TABLE) {
            r = bad(img, "snapshot table is too large");
            goto out;
        }
        if ((r = qc_pread_exact(img->ctx, img->fd, img->filename, e, 40, o, "snapshot table")) < 0)
            goto out;
        s->l1_offset = qc_be64(e);
        s->l1_size = qc_be32(e + 8);
        uint16_t id_len = qc_be16(e + 12), name_len = qc_be16(e + 14);
        s->date_sec = qc_be32(e + 16);
        s->date_nsec = qc_be32(e + 20);
        s->vm_clock_ns = qc_be64(e + 24);
        s->vm_state_size = qc_be32(e + 32);
        s->extra_len = qc_be32(e + 36);
        s->disk_size = h->size;
        if (s->extra_len > QC_MAX_SNAPSHOT_EXTRA) {
            r = bad(img, "snapshot extra data is too large");
            goto out;
        }
        size_t vl = (size_t)s->extra_len + id_len + name_len;
        if ((r = qc_pread_exact(img->ctx, img->fd, img->filename, var, vl, o + 40, "snapshot table")) < 0)
            goto out;
        o = qc_align_up(o + 40 + vl, 8);
        const uint8_t *v = var;
        if (s->extra_len) {
            if (!(s->extra = qc_malloc(img->ctx, s->extra_len))) {
                r = QC_ERR_NOMEM;
                goto out;
            }
            memcpy(s->extra, v, s->extra_len);
            if (s->extra_len >= 8)
                s->vm_state_size = qc_be64(v);
            if (s->extra_len >= 16)
                s->disk_size = qc_be64(v + 8);
            if (s->extra_len >= 24) {
                s->icount = qc_be64(v + 16);
                s->has_icount = s->icount != UINT64_MAX;
            }
            v += s->extra_len;
        }
        s->id = qc_strndup(img->ctx, (const char *)v, id_len);
        s->name = qc_strndup(img->ctx, (const char *)v + id_len, name_len);
        img->nsnaps = i + 1;
        if (!s->id || !s->name) {
            r = QC_ERR_NOMEM;
            goto out;
        }
        if ((r = check_table(img, s->l1_offset, s->l1_size, 8, QC_MAX_L1_BYTES, "snapshot L1 table")) < 0)
            goto out;
    }
    img->snap_table_bytes = o - h->snapshots_offset;
    r = 0;
out:
    free(var);
    return r;
}

static int load_bitmaps(qc_image *img)
{
    qc_header *h = &img->hdr;
    if (!h->has_bitmaps_ext || !h->nb_bitmaps)
        return 0;
    if (h->nb_bitmaps > QC_MAX_BITMAPS)
        return bad(img, "too many bitmaps");
    if (h->bitmap_dir_size > QC_MAX_BITMAP_DIR || h->bitmap_dir_size < 24)
        return bad(img, "bitmap directory size is invalid");
    int r = check_table(img, h->bitmap_dir_offset, h->bitmap_dir_size, 1, QC_MAX_BITMAP_DIR,
                        "bitmap directory");
    if (r < 0)
        return r;
    size_t n = (size_t)h->bitmap_dir_size;
    uint8_t *buf = qc_malloc(img->ctx, n);
    if (!buf)
        return QC_ERR_NOMEM;
    if ((r = qc_pread_full(img->ctx, img->fd, img->filename, buf, n, h->bitmap_dir_offset)) < 0)
        goto out;
    if (!(img->bitmaps = qc_calloc(img->ctx, h->nb_bitmaps, sizeof(*img->bitmaps)))) {
        r = QC_ERR_NOMEM;
        goto out;
    }
    size_t o = 0;
    for (uint32_t i = 0; i < h->nb_bitmaps; i++) {
        qc_bitmap *b = &img->bitmaps[i];
        if (o + 24 > n) {
            r = bad(img, "bitmap directory is truncated");
            goto out;
        }
        const uint8_t *e = buf + o;
        b->table_offset = qc_be64(e);
        b->table_size = qc_be32(e + 8);
        b->flags = qc_be32(e + 12);
        b->type = e[16];
        b->granularity_bits = e[17];
        uint16_t name_len = qc_be16(e + 18);
        uint32_t extra = qc_be32(e + 20);
        o += 24;
        if (extra > n || o + extra + name_len > n) {
            r = bad(img, "bitmap directory is truncated");
            goto out;
        }
        o += extra;
        b->name = qc_strndup(img->ctx, (const char *)buf + o, name_len);
        o = (size_t)qc_align_up(o + name_len, 8);
        img->nbitmaps = i + 1;
        if (!b->name) {
            r = QC_ERR_NOMEM;
            goto out;
        }
        if (b->granularity_bits > 63) {
            r = bad(img, "bitmap granularity is invalid");
            goto out;
        }
        if ((r = check_table(img, b->table_offset, b->table_size, 8, QC_MAX_L1_BYTES, "bitmap table")) < 0)
            goto out;
    }
    r = 0;
out:
    free(buf);
    return r;
}

static int open_data_file(qc_image *img)
{
    qc_ctx *ctx = img->ctx;
    if (!ctx->pol.allow_data_file || !img->hdr.data_file)
        return qc_fail(ctx, QC_ERR_POLICY, 0, img->filename, "open",
                       "'%s' uses an external data file; refused by policy", img->filename);
    char *p = qc_path_combine(ctx, img->filename, img->hdr.data_file);
    if (!p)
        return QC_ERR_NOMEM;
    struct stat st;
    int fd = qc_open_image_file(ctx, p, (img->flags & QC_OPEN_RDWR) ? O_RDWR : O_RDONLY, true, &st);
    free(p);
    if (fd < 0)
        return fd;
    img->data_fd = fd;
    return 0;
}

static int open_qcow2(qc_image *img)
{
    qc_ctx *ctx = img->ctx;
    qc_header *h = &img->hdr;
    /* Usually the header, extensions and backing name fit in the first 4 KiB. */
    uint8_t small[4096];
    int r = qc_pread_full(ctx, img->fd, img->filename, small, sizeof(small), 0);
    if (r < 0)
        return r;
    if (img->file_size < 72)
        return bad(img, "file is too short to be a qcow2 image");
    if (qc_be32(small) != QC_MAGIC)
        return bad(img, "not a qcow2 image (bad magic)");
    uint32_t cb = qc_be32(small + 20);
    if (cb < 9 || cb > 21)
        return qc_fail(ctx, QC_ERR_FORMAT, 0, img->filename, "open",
                       "'%s': unsupported cluster size 2^%u", img->filename, cb);
    size_t cs = (size_t)1 << cb, n = (size_t)qc_min(qc_min(cs, sizeof(small)), img->file_size);
    r = qc_header_parse(ctx, h, small, n, img->file_size, img->filename);
    if (r == 1) {
        qc_header_clear(h);
        uint8_t *c0 = qc_malloc(ctx, cs);
        if (!c0)
            return QC_ERR_NOMEM;
        n = (size_t)qc_min(cs, img->file_size);
        r = qc_pread_full(ctx, img->fd, img->filename, c0, n, 0);
        if (r == 0)
            r = qc_header_parse(ctx, h, c0, n, img->file_size, img->filename);
        free(c0);
    }
    if (r < 0)
        return r;

    img->cluster_bits = h->cluster_bits;
    img->cluster_size = 1ull << h->cluster_bits;
    img->size = h->size;
    img->ext_l2 = !!(h->incompat & QC_INCOMPAT_EXTL2);
    img->l2_entry_size = img->ext_l2 ? 16 : 8;
    img->l2_bits = h->cluster_bits - (img->ext_l2 ? 4 : 3);
    img->sc_bits = h->cluster_bits - (img->ext_l2 ? 5 : 0);
    img->refcount_bits = 1u << h->refcount_order;
    img->rb_bits = h->cluster_bits + 3 - h->refcount_order;
    img->prealloc = -1;

    if (h->crypt_method)
        return qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, img->filename, "open",
                       "'%s' is encrypted (%s); encrypted images are not supported",
                       img->filename, h->crypt_method == 1 ? "AES" : "LUKS");
    if (img->ext_l2 && h->cluster_bits < 14)
        return bad(img, "extended L2 entries need clusters of at least 16 KiB");
    if (h->incompat & QC_INCOMPAT_DATA_FILE) {
        if ((r = open_data_file(img)) < 0)
            return r;
    } else if (h->data_file) {
        return bad(img, "data file name present without the data file feature");
    }

    uint64_t cover = 1ull << (img->cluster_bits + img->l2_bits);
    uint64_t need = (h->size + cover - 1) / cover;
    if ((r = check_table(img, h->l1_offset, h->l1_size, 8, QC_MAX_L1_BYTES, "L1 table")) < 0)
        return r;
    if (h->l1_size < need)
        return bad(img, "L1 table is too small for the virtual size");
    img->l1_size = h->l1_size;

    uint64_t rt_bytes = (uint64_t)h->rt_clusters * img->cluster_size;
    if (h->rt_clusters == 0 || rt_bytes > QC_MAX_REFTABLE_BYTES)
        return bad(img, "refcount table size is invalid");
    if ((r = check_table(img, h->rt_offset, rt_bytes / 8, 8, QC_MAX_REFTABLE_BYTES, "refcount table")) < 0)
        return r;
    img->rt_entries = rt_bytes / 8;

    /* caches get their slots on first use: peeks at headers need none */
    img->l2c.table_size = img->rbc.table_size = img->cluster_size;
    img->l2c.budget = ctx->cache_bytes;
    img->rbc.budget = ctx->cache_bytes / 4;
    img->l2c.kind = QC_META_L2;
    img->rbc.kind = QC_META_REFBLOCK;
    /* L2 entries point at clusters the refcounts must already count */
    img->l2c.depends = &img->rbc;
    /* refcount blocks are found through the refcount table */
    img->rbc.parent = &img->reftable;
    img->rbc.parent_off = &img->hdr.rt_offset;
    if ((r = load_snapshots(img)) < 0 || (r = load_bitmaps(img)) < 0)
        return r;
    return 0;
}

int qc_image_open_one(qc_ctx *ctx, qc_image **out, const char *path, int fmt,
                      unsigned flags)
{
    *out = NULL;
    qc_image *img = qc_calloc(ctx, 1, sizeof(*img));
    if (!img)
        return QC_ERR_NOMEM;
    img->ctx = ctx;
    img->fd = img->data_fd = -1;
    img->flags = flags;
    if (!(img->filename = qc_strdup(ctx, path))) {
        free(img);
        return QC_ERR_NOMEM;
    }
    struct stat st;
    int r = qc_open_image_file(ctx, path, ((flags & QC_OPEN_RDWR) ? O_RDWR : O_RDONLY) | ((flags & QC_OPEN_NOFOLLOW) ? O_NOFOLLOW : 0),
                               flags & QC_OPEN_CONFINED, &st);
    if (r < 0)
        goto fail;
    img->fd = r;
    img->dev = st.st_dev;
    img->ino = st.st_ino;
    img->st = st;
    if ((r = qc_sys_size(ctx, img->fd, path, &img->file_size, &img->blockdev)) < 0)
        goto fail;
    if (!fmt) {
        uint8_t m[4] = {0};
        if ((r = qc_pread_full(ctx, img->fd, path, m, 4, 0)) < 0)
            goto fail;
        fmt = img->file_size >= 72 && qc_be32(m) == QC_MAGIC ? QC_FMT_QCOW2 : QC_FMT_RAW;
    }
    img->fmt = fmt;
    if (fmt == QC_FMT_RAW) {
        img->size = qc_align_up(img->file_size, 512);
    } else if ((r = open_qcow2(img)) < 0) {
        goto fail;
    }
    if (img->data_fd < 0)
        img->data_fd = img->fd;
    *out = img;
    return 0;
fail:
    qc_image_free_one(img);
    return r;
}

void qc_image_free_one(qc_image *img)
{
    if (!img)
        return;
    qc_ctx *ctx = img->ctx;
    qc_cache_free(&img->l2c);
    qc_cache_free(&img->rbc);
    for (uint32_t i = 0; i < img->nsnaps; i++) {
        free(img->snaps[i].id);
        free(img->snaps[i].name);
        free(img->snaps[i].extra);
    }
    free(img->snaps);
    for (uint32_t i = 0; i < img->nbitmaps; i++)
        free(img->bitmaps[i].name);
    free(img->bitmaps);
    free(img->l1);
    free(img->meta);
    free(img->reftable);
    free(img->zbuf);
    free(img->frees);
    qc_header_clear(&img->hdr);
    if (img->data_fd >= 0 && img->data_fd != img->fd)
        qc_sys_close(ctx, img->data_fd);
    qc_sys_close(ctx, img->fd);
    free(img->filename);
    free(img->backing_full);
    free(img);
}

uint64_t qc_image_size(const qc_image *img) { return img->size; }
const char *qc_image_filename(const qc_image *img) { return img->filename; }
const char *qc_image_format(const qc_image *img) { return qc_format_name(img->fmt); }
qc_image *qc_image_backing(const qc_image *img) { return img->backing; }
