/*
 * refwalk.c - the refcount walk under check and repair, with qemu-img
 * check's counts: every cluster's refcount against the references found by
 * walking the metadata (header, tables, L2, data, compressed clusters,
 * internal snapshots, refcount structures, bitmaps); refcounts rebuilt
 * from them (repair, and images QEMU left dirty).
 *
 * References are counted in windows of host clusters so memory stays
 * bounded whatever the image size; a large image is walked several times.
 */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW (8u << 20) /* clusters counted per pass (32 MiB of counters) */
#define MAX_MESSAGES 1000

typedef struct walk {
    qc_image *img;
    bool with_refstruct;   /* count refcount table and blocks */
    bool stats;            /* first pass: count errors and fragmentation */
    uint64_t lo, hi;       /* window of clusters */
    uint32_t *refs;
    uint64_t end;          /* highest referenced cluster + 1 (inside the file) */
    bool beyond;           /* something points past the end of the file */
    uint64_t file_clusters;
    /* results */
    uint64_t corruptions, check_errors, allocated, fragmented, compressed, next_contig;
    json_object *messages;
} walk;

static void msg(walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msg(walk *w, const char *fmt, ...)
{
    if (!w->stats || !w->messages || json_object_array_length(w->messages) >= MAX_MESSAGES)
        return;
    char b[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof(b), fmt, ap);
    va_end(ap);
    json_object_array_add(w->messages, json_object_new_string(b));
}

static void corrupt(walk *w, const char *fmt, uint64_t a)
{
    if (!w->stats)
        return;
    w->corruptions++;
    msg(w, fmt, (unsigned long long)a);
}

/*
 * One reference to every cluster touched by [off, off+len). References
 * reaching a cluster or more past the end of the file are corruptions (as
 * in qemu-img check) and are not counted.
 */
static void ref(walk *w, uint64_t off, uint64_t len)
{
    if (!len)
        return;
    qc_image *img = w->img;
    uint64_t first = off >> img->cluster_bits, last = (off + len - 1) >> img->cluster_bits;
    if (last >= w->file_clusters) {
        w->beyond = true;
        if (w->stats) {
            w->corruptions++;
            msg(w, "ERROR: reference to region past the end of the file: offset %#llx size %#llx",
                (unsigned long long)off, (unsigned long long)len);
        }
        if (first >= w->file_clusters)
            return;
        last = w->file_clusters - 1;
    }
    if (last + 1 > w->end)
        w->end = last + 1;
    for (uint64_t c = qc_max(first, w->lo); c <= last && c < w->hi; c++)
        if (w->refs[c - w->lo] != UINT32_MAX)
            w->refs[c - w->lo]++;
}

static int read_table(qc_image *img, uint64_t off, uint64_t n, uint64_t **out)
{
    uint64_t *t = qc_calloc(img->ctx, n ? n : 1, 8);
    if (!t)
        return QC_ERR_NOMEM;
    int r = n ? qc_pread_full(img->ctx, img->fd, img->filename, t, (size_t)n * 8, off) : 0;
    for (uint64_t i = 0; i < n; i++)
        t[i] = qc_be64((uint8_t *)&t[i]);
    if (r < 0)
        free(t);
    else
        *out = t;
    return r;
}

static int walk_l2(walk *w, uint64_t l2off, bool active)
{
    qc_image *img = w->img;
    uint8_t *l2;
    int r = qc_cache_get(img, &img->l2c, l2off, &l2, "L2 table");
    if (r < 0)
        return r;
    uint64_t n = 1ull << img->l2_bits;
    for (uint64_t j = 0; j < n; j++) {
        uint64_t e, bm, o, len;
        qc_l2_entry(img, l2, j, &e, &bm);
        if (e & QC_OFLAG_COMPRESSED) {
            qc_compressed_range(img, e, &o, &len);
            ref(w, o, len);
            if (active && w->stats) {
                w->allocated++;
                w->compressed++;
            }
            if (e & QC_OFLAG_COPIED)
                corrupt(w, "ERROR: compressed cluster with COPIED flag (L2 entry %#llx)", e);
            continue;
        }
        uint64_t host = e & QC_OFFSET_MASK;
        if (img->ext_l2) {
            uint32_t alloc = (uint32_t)bm, zero = (uint32_t)(bm >> 32);
            if ((alloc & zero) || (!host && alloc))
                corrupt(w, "ERROR: invalid subcluster bitmap in L2 entry %#llx", e);
        }
        if (!host)
            continue;
        if (host & (img->cluster_size - 1)) {
            corrupt(w, "ERROR offset=%llx: Cluster is not properly aligned; L2 entry corrupted.", host);
            continue;
        }
        if (active && w->stats) {
            w->allocated++;
            if (w->next_contig && host != w->next_contig)
                w->fragmented++;
            w->next_contig = host + img->cluster_size;
        }
        ref(w, host, img->cluster_size);
    }
    return 0;
}

static int walk_l1(walk *w, const uint64_t *l1, uint64_t n, bool active)
{
    qc_image *img = w->img;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = l1[i] & QC_OFFSET_MASK;
        if (!off)
            continue;
        if (off & (img->cluster_size - 1)) {
            corrupt(w, "ERROR l2_offset=%llx: Table is not cluster aligned; L1 entry corrupted", off);
            continue;
        }
        ref(w, off, img->cluster_size);
        if (off >= img->file_size) {
            corrupt(w, "ERROR l2_offset=%llx: L2 table past the end of the file", off);
            continue;
        }
        int r = walk_l2(w, off, active);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Count every reference once into the current window. */
static int walk_all(walk *w)
{
    qc_image *img = w->img;
    qc_header *h = &img->hdr;
    int r;
    w->next_contig = 0;
    ref(w, 0, img->cluster_size);
    ref(w, h->l1_offset, (uint64_t)img->l1_size * 8);
    if ((r = walk_l1(w, img->l1, img->l1_size, true)) < 0)
        return r;
    if (h->nb_snapshots)
        ref(w, h->snapshots_offset, img->snap_table_bytes);
    for (uint32_t i = 0; i < img->nsnaps; i++) {
        qc_snapshot *s = &img->snaps[i];
        uint64_t *t;
        ref(w, s->l1_offset, (uint64_t)s->l1_size * 8);
        if ((r = read_table(img, s->l1_offset, s->l1_size, &t)) < 0)
            return r;
        r = walk_l1(w, t, s->l1_size, false);
        free(t);
        if (r < 0)
            return r;
    }
    if (w->with_refstruct) {
        ref(w, h->rt_offset, (uint64_t)h->rt_clusters * img->cluster_size);
        for (uint64_t i = 0; i < img->rt_entries; i++) {
            uint64_t off = img->reftable[i] & QC_RT_OFFSET_MASK;
            if (!off)
                continue;
            if (off & (img->cluster_size - 1))
                corrupt(w, "ERROR refcount block %llu is not cluster aligned; refcount table entry corrupted", i);
            else
                ref(w, off, img->cluster_size);
        }
    }
    if (h->has_bitmaps_ext) {
        ref(w, h->bitmap_dir_offset, h->bitmap_dir_size);
        for (uint32_t i = 0; i < img->nbitmaps; i++) {
            qc_bitmap *b = &img->bitmaps[i];
            uint64_t *t;
            ref(w, b->table_offset, (uint64_t)b->table_size * 8);
            if ((r = read_table(img, b->table_offset, b->table_size, &t)) < 0)
                return r;
            for (uint32_t j = 0; j < b->table_size; j++) {
                uint64_t off = t[j] & QC_OFFSET_MASK;
                if (off && (off & (img->cluster_size - 1)))
                    corrupt(w, "ERROR bitmap table entry %#llx is not cluster aligned", t[j]);
                else if (off)
                    ref(w, off, img->cluster_size);
            }
            free(t);
        }
    }
    return 0;
}

static int check_copied(qc_image *img, qc_check_result *res, json_object *messages);

/* Count, then compare with the stored refcounts; fix per mode. */
int qc_check_pass(qc_image *img, int repair, qc_check_result *res, json_object *messages)
{
    walk w;
    memset(&w, 0, sizeof(w));
    w.img = img;
    w.with_refstruct = true;
    w.messages = messages;
    w.file_clusters = (img->file_size + img->cluster_size - 1) >> img->cluster_bits;
    /* counters for the file's clusters (more windows if references reach further) */
    uint64_t win = qc_min(WINDOW, w.file_clusters + 1);
    w.refs = qc_calloc(img->ctx, win, sizeof(uint32_t));
    if (!w.refs)
        return QC_ERR_NOMEM;
    int r = 0;
    uint64_t highest = 0;
    memset(res, 0, sizeof(*res));
    for (uint64_t lo = 0;; lo += win) {
        w.lo = lo;
        w.hi = lo + win;
        w.stats = lo == 0;
        memset(w.refs, 0, win * sizeof(uint32_t));
        if ((r = walk_all(&w)) < 0)
            break;
        uint64_t n = qc_max(w.end, w.file_clusters);
        for (uint64_t c = lo; c < n && c < w.hi; c++) {
            uint64_t stored, found = w.refs[c - lo];
            if ((r = qc_refcount_get(img, c, &stored)) < 0) {
                res->check_errors++;
                r = 0;
                continue;
            }
            if (stored || found)
                highest = c + 1;
            if (stored == found)
                continue;
            if (stored > found) {
                if (repair >= 1) {
                    msg(&w, "Repairing cluster %llu refcount=%llu reference=%llu", (unsigned long long)c,
                        (unsigned long long)stored, (unsigned long long)found);
                    if ((r = qc_refcount_add(img, c, -(int64_t)(stored - found))) < 0)
                        break;
                    res->leaks_fixed++;
                    continue;
                }
                res->leaks++;
                msg(&w, "Leaked cluster %llu refcount=%llu reference=%llu", (unsigned long long)c,
                    (unsigned long long)stored, (unsigned long long)found);
            } else {
                res->corruptions++;
                msg(&w, "ERROR cluster %llu refcount=%llu reference=%llu", (unsigned long long)c,
                    (unsigned long long)stored, (unsigned long long)found);
            }
        }
        if (r < 0 || n <= w.hi)
            break;
    }
    free(w.refs);
    if (r == 0)
        r = check_copied(img, res, messages);
    res->corruptions += w.corruptions;
    res->allocated = w.allocated;
    res->fragmented = w.fragmented;
    res->compressed = w.compressed;
    res->end = highest << img->cluster_bits;
    return r;
}

/* COPIED must be set exactly where the refcount is 1 (active L1 and its L2s). */
static int fix_copied(qc_image *img, uint64_t *fixed)
{
    for (uint64_t i = 0; i < img->l1_size; i++) {
        uint64_t e = img->l1[i], off = e & QC_OFFSET_MASK, rc;
        if (!off || (off & (img->cluster_size - 1)))
            continue;
        int r = qc_refcount_get(img, off >> img->cluster_bits, &rc);
        if (r < 0)
            return r;
        uint64_t ne = rc == 1 ? e | QC_OFLAG_COPIED : e & ~QC_OFLAG_COPIED;
        if (ne != e) {
            img->l1[i] = ne;
            qc_l1_dirty(img, i);
            ++*fixed;
        }
        uint8_t *l2;
        if ((r = qc_cache_get(img, &img->l2c, off, &l2, "L2 table")) < 0)
            return r;
        for (uint64_t j = 0; j < (1ull << img->l2_bits); j++) {
            uint8_t *p = l2 + j * img->l2_entry_size;
            uint64_t le = qc_be64(p), host = le & QC_OFFSET_MASK;
            if ((le & QC_OFLAG_COMPRESSED) || !host || (host & (img->cluster_size - 1)))
                continue;
            if ((r = qc_refcount_get(img, host >> img->cluster_bits, &rc)) < 0)
                return r;
            /* the lookup may have evicted the table: fetch it again */
            if ((r = qc_cache_get(img, &img->l2c, off, &l2, "L2 table")) < 0)
                return r;
            p = l2 + j * img->l2_entry_size;
            uint64_t nle = rc == 1 ? le | QC_OFLAG_COPIED : le & ~QC_OFLAG_COPIED;
            if (nle != le) {
                qc_put64(p, nle);
                qc_cache_mark_dirty(&img->l2c, l2);
                ++*fixed;
            }
        }
    }
    return 0;
}

/*
 * QEMU's OFLAG_COPIED check over the active tables: the flag must be set
 * exactly where the refcount is 1. Each mismatch is a corruption.
 */
static int check_copied(qc_image *img, qc_check_result *res, json_object *messages)
{
    walk w;
    memset(&w, 0, sizeof(w));
    w.stats = true;
    w.messages = messages;
    for (uint64_t i = 0; i < img->l1_size; i++) {
        uint64_t e = img->l1[i], off = e & QC_OFFSET_MASK, rc;
        if (!off || (off & (img->cluster_size - 1)) || off >= img->file_size)
            continue;
        if (qc_refcount_get(img, off >> img->cluster_bits, &rc) < 0)
            continue;
        if ((rc == 1) != !!(e & QC_OFLAG_COPIED)) {
            res->corruptions++;
            msg(&w, "ERROR OFLAG_COPIED L2 cluster: l1_index=%llu l1_entry=%llx refcount=%llu",
                (unsigned long long)i, (unsigned long long)e, (unsigned long long)rc);
        }
        for (uint64_t j = 0; j < (1ull << img->l2_bits); j++) {
            uint8_t *l2;
            int r = qc_cache_get(img, &img->l2c, off, &l2, "L2 table");
            if (r < 0)
                return r;
            uint64_t le, bm;
            qc_l2_entry(img, l2, j, &le, &bm);
            uint64_t host = le & QC_OFFSET_MASK;
            if ((le & QC_OFLAG_COMPRESSED) || !host || (host & (img->cluster_size - 1)))
                continue;
            if (qc_refcount_get(img, host >> img->cluster_bits, &rc) < 0)
                continue;
            if ((rc == 1) != !!(le & QC_OFLAG_COPIED)) {
                res->corruptions++;
                msg(&w, "ERROR OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu",
                    (unsigned long long)le, (unsigned long long)rc);
            }
        }
    }
    return 0;
}

/*
 * Rebuild the refcount structure from the references: a new table and
 * blocks after everything in use, switched in by one header write. The
 * old structure is not referenced any more and so becomes free space.
 */
int qc_rebuild_refcounts(qc_image *img)
{
    qc_ctx *ctx = img->ctx;
    walk w;
    memset(&w, 0, sizeof(w));
    w.img = img;
    w.file_clusters = (img->file_size + img->cluster_size - 1) >> img->cluster_bits;
    int r = walk_all(&w); /* no window: finds the end */
    if (r < 0)
        return r;
    if (w.beyond)
        return qc_fail(ctx, QC_ERR_FORMAT, 0, img->filename, "repair",
                       "'%s': metadata points past the end of the file; refcounts cannot be rebuilt safely",
                       img->filename);
    uint64_t cs = img->cluster_size, rb_entries = 1ull << img->rb_bits;
    /* after everything in use and, in a file, after its end; a device cannot grow */
    uint64_t end = img->blockdev ? w.end : qc_max(w.end, w.file_clusters), nrb = 1, nrt = 1;
    for (;;) {
        uint64_t total = end + nrt + nrb;
        uint64_t b = (total + rb_entries - 1) / rb_entries, t = (b * 8 + cs - 1) / cs;
        if (b == nrb && t == nrt)
            break;
        nrb = b;
        nrt = t;
    }
    if (nrt * cs > QC_MAX_REFTABLE_BYTES)
        return qc_fail(ctx, QC_ERR_NOSPC, 0, img->filename, "repair", "'%s': refcount table would be too large", img->filename);
    if ((r = qc_image_room(img, (end + nrt + nrb) * cs)) < 0)
        return r;
    uint64_t rt_at = end, rb_at = end + nrt, total = end + nrt + nrb;
    uint64_t win = qc_min(qc_max(WINDOW / rb_entries, 1), nrb) * rb_entries;
    uint64_t *nt = qc_calloc(ctx, nrt * cs / 8, 8);
    uint8_t *blk = qc_calloc(ctx, 1, (size_t)cs);
    w.refs = qc_calloc(ctx, win, sizeof(uint32_t));
    if (!nt || !blk || !w.refs) {
        r = QC_ERR_NOMEM;
        goto out;
    }
    for (uint64_t lo = 0; lo < total && r == 0; lo += win) {
        w.lo = lo;
        w.hi = lo + win;
        memset(w.refs, 0, win * sizeof(uint32_t));
        if ((r = walk_all(&w)) < 0)
            break;
        for (uint64_t c = qc_max(lo, end); c < total && c < w.hi; c++)
            w.refs[c - lo]++; /* the new structure itself */
        for (uint64_t k = lo / rb_entries; k < nrb && k * rb_entries < w.hi && r == 0; k++) {
            memset(blk, 0, (size_t)cs);
            for (uint64_t i = 0; i < rb_entries; i++) {
                uint64_t v = w.refs[k * rb_entries + i - lo];
                if (v > qc_refcount_max(img)) {
                    r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, img->filename, "repair",
                                "'%s': a refcount exceeds %u bits", img->filename, img->refcount_bits);
                    break;
                }
                if (v)
                    qc_rb_put(img->refcount_bits, blk, i, v);
            }
            if (r < 0)
                break;
            nt[k] = (rb_at + k) * cs;
            r = qc_pwrite_full(ctx, img->fd, img->filename, blk, (size_t)cs, (rb_at + k) * cs);
        }
    }
    if (r < 0)
        goto out;
    r = qc_write_u64s(img, nt, nrt * cs / 8, rt_at * cs);
    img->unsynced = true;
    if (r == 0)
        r = qc_img_sync(img);
    if (r < 0)
        goto out;
    uint64_t old_off = img->hdr.rt_offset;
    uint32_t old_cl = img->hdr.rt_clusters;
    img->hdr.rt_offset = rt_at * cs;
    img->hdr.rt_clusters = (uint32_t)nrt;
    if ((r = qc_header_write(img)) < 0 || (r = qc_img_sync(img)) < 0) {
        img->hdr.rt_offset = old_off;
        img->hdr.rt_clusters = old_cl;
        goto out;
    }
    free(img->reftable);
    img->reftable = nt;
    qc_meta_changed(img);
    nt = NULL;
    img->rt_entries = nrt * cs / 8;
    img->rbc.parent_lo = UINT64_MAX;
    img->rbc.parent_hi = 0;
    img->free_hint = 0;
    qc_cache_free(&img->rbc);
    r = qc_cache_init(ctx, &img->rbc, (size_t)cs, ctx->cache_bytes / 4);
    if (r == 0)
        r = qc_sys_size(ctx, img->fd, img->filename, &img->file_size, NULL);
    uint64_t fixed = 0;
    if (r == 0)
        r = fix_copied(img, &fixed);
    if (r == 0)
        r = qc_flush(img);
out:
    free(nt);
    free(blk);
    free(w.refs);
    return r;
}

