/*
 * refcount.c - refcounts: lookup, update, cluster allocation, new refcount
 * blocks, refcount table growth, and frees deferred until the references
 * to a cluster are gone from the disk.
 *
 * Ordering: an increase may reach the disk any time (a crash then leaks);
 * a decrease only after the L2/L1 change that dropped the reference is
 * durable (qc_flush applies deferred frees last). A new refcount block is
 * written and synced before the refcount table entry that points to it.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void qc_rb_put(unsigned b, uint8_t *rb, uint64_t i, uint64_t v)
{
    if (b < 8) {
        unsigned per = 8 / b, sh = (unsigned)(i % per) * b;
        uint8_t mask = (uint8_t)(((1u << b) - 1) << sh);
        rb[i / per] = (uint8_t)((rb[i / per] & ~mask) | ((v << sh) & mask));
        return;
    }
    switch (b) {
    case 8: rb[i] = (uint8_t)v; break;
    case 16: qc_put16(rb + 2 * i, (uint16_t)v); break;
    case 32: qc_put32(rb + 4 * i, (uint32_t)v); break;
    default: qc_put64(rb + 8 * i, v); break;
    }
}

uint64_t qc_refcount_max(const qc_image *img)
{
    return img->refcount_bits == 64 ? (uint64_t)INT64_MAX : (1ull << img->refcount_bits) - 1;
}

static int load(qc_image *img) { return img->reftable ? 0 : qc_image_load_tables(img); }

int qc_refcount_block(qc_image *img, uint64_t rti, const uint8_t **rb)
{
    *rb = NULL;
    int r = load(img);
    if (r < 0 || rti >= img->rt_entries)
        return r;
    uint64_t rbo = img->reftable[rti] & QC_RT_OFFSET_MASK;
    if (!rbo)
        return 0;
    if (rbo & (img->cluster_size - 1))
        return qc_fail(img->ctx, QC_ERR_FORMAT, 0, img->filename, "read",
                       "'%s': corrupt image: refcount block offset %#llx is not cluster aligned",
                       img->filename, (unsigned long long)rbo);
    uint8_t *b;
    if ((r = qc_cache_get(img, &img->rbc, rbo, &b, "refcount block")) == 0)
        *rb = b;
    return r;
}

int qc_refcount_get(qc_image *img, uint64_t cluster, uint64_t *rc)
{
    const uint8_t *rb;
    int r = qc_refcount_block(img, cluster >> img->rb_bits, &rb);
    *rc = rb ? qc_rb_get(img, rb, cluster & ((1ull << img->rb_bits) - 1)) : 0;
    return r;
}

/* Mark reftable entries [i, i+1) to be written at the next flush. */
static void rt_dirty(qc_image *img, uint64_t i)
{
    if (img->shadow)
        return; /* a shadow update writes a whole new table at its commit */
    if (img->rbc.parent_lo > i)
        img->rbc.parent_lo = i;
    if (img->rbc.parent_hi < i + 1)
        img->rbc.parent_hi = i + 1;
}

/* A new, self-describing refcount block at the first cluster of its range. */
static int create_refblock(qc_image *img, uint64_t rti)
{
    uint64_t at = (rti << img->rb_bits) << img->cluster_bits;
    /* No block means no cluster of the range is in use; a corrupt image may lie. */
    int r = qc_overlap_check(img, at, img->cluster_size, QC_META_DATA);
    if (r < 0)
        return r;
    uint8_t *rb;
    if ((r = qc_cache_new(img, &img->rbc, at, &rb)) < 0)
        return r;
    qc_rb_put(img->refcount_bits, rb, 0, 1);
    img->reftable[rti] = at;
    qc_meta_added(img, at, QC_META_REFBLOCK);
    rt_dirty(img, rti);
    if (img->shadow)
        qc_shadow_mark(img, rti);
    return 0;
}

/*
 * Grow the refcount table so that it has at least min_entries entries.
 * Called when allocation reaches clusters the table does not cover, so the
 * first uncovered cluster is free: the new blocks and table go there,
 * covering themselves. The header switches to the new table only once it
 * is durable; the old table is freed afterwards.
 */
static int grow_reftable(qc_image *img, uint64_t min_entries)
{
    if (img->shadow)
        return qc_shadow_grow(img, min_entries);
    qc_ctx *ctx = img->ctx;
    uint64_t per = img->cluster_size / 8;
    uint64_t entries = qc_align_up(qc_max(min_entries, img->rt_entries) * 2, per);
    uint64_t k = entries / per; /* table clusters */
    if (k * img->cluster_size > QC_MAX_REFTABLE_BYTES)
        return qc_fail(ctx, QC_ERR_NOSPC, 0, img->filename, "write",
                       "'%s': refcount table would exceed its maximum size", img->filename);
    uint64_t rb_entries = 1ull << img->rb_bits;
    uint64_t first = img->rt_entries; /* first uncovered range */
    uint64_t s = first << img->rb_bits, m = 1;
    while ((m + k + rb_entries - 1) / rb_entries > m)
        m++;
    if (first + m > entries)
        return qc_fail(ctx, QC_ERR_INVALID, 0, img->filename, "write", "refcount table growth miscomputed");
    int r = qc_image_room(img, (s + m + k) << img->cluster_bits);
    if (r < 0)
        return r;

    uint64_t *nt = qc_calloc(ctx, entries, 8);
    uint8_t *buf = qc_calloc(ctx, 1, (size_t)img->cluster_size);
    r = (nt && buf) ? 0 : QC_ERR_NOMEM;
    /* Flush what is pending first, so the new table copies a durable state. */
    if (r == 0)
        r = qc_cache_durable(img, &img->rbc);
    if (r < 0)
        goto out;
    memcpy(nt, img->reftable, img->rt_entries * 8);
    /* m refcount blocks at s.., covering ranges first..first+m-1; table after them. */
    for (uint64_t j = 0; j < m && r == 0; j++) {
        memset(buf, 0, (size_t)img->cluster_size);
        for (uint64_t c = s; c < s + m + k; c++)
            if ((c >> img->rb_bits) == first + j)
                qc_rb_put(img->refcount_bits, buf, c & (rb_entries - 1), 1);
        nt[first + j] = (s + j) << img->cluster_bits;
        r = qc_pwrite_full(ctx, img->fd, img->filename, buf, (size_t)img->cluster_size,
                           (s + j) << img->cluster_bits);
    }
    uint64_t t_off = (s + m) << img->cluster_bits;
    if (r == 0)
        r = qc_write_u64s(img, nt, entries, t_off);
    img->unsynced = true;
    if (r == 0)
        r = qc_img_sync(img);
    if (r < 0)
        goto out;
    uint64_t old_off = img->hdr.rt_offset, old_clusters = img->hdr.rt_clusters;
    img->hdr.rt_offset = t_off;
    img->hdr.rt_clusters = (uint32_t)k;
    if ((r = qc_header_write(img)) < 0 || (r = qc_img_sync(img)) < 0) {
        img->hdr.rt_offset = old_off;
        img->hdr.rt_clusters = (uint32_t)old_clusters;
        goto out;
    }
    free(img->reftable);
    img->reftable = nt;
    qc_meta_changed(img);
    nt = NULL;
    img->rt_entries = entries;
    r = qc_free_later(img, old_off, old_clusters * img->cluster_size);
out:
    free(nt);
    free(buf);
    return r;
}

/*
 * The refcount block of range rti, loaded and ready to change: made when
 * missing (or 1 unless make), copied first in a shadow update. rb is valid
 * until the next use of the refcount cache.
 */
static int block_for_change(qc_image *img, uint64_t rti, bool make, uint8_t **rb)
{
    int r = 0;
    if (rti >= img->rt_entries || !(img->reftable[rti] & QC_RT_OFFSET_MASK)) {
        if (!make)
            return 1;
        if (rti >= img->rt_entries && (r = grow_reftable(img, rti + 1)) < 0)
            return r;
        if (!(img->reftable[rti] & QC_RT_OFFSET_MASK) && (r = create_refblock(img, rti)) < 0)
            return r;
    }
    /* a shadow update never changes a block of the committed structure */
    if (img->shadow && (r = qc_shadow_cow(img, rti)) < 0)
        return r;
    return qc_cache_get(img, &img->rbc, img->reftable[rti] & QC_RT_OFFSET_MASK, rb, "refcount block");
}

/*
 * Add delta to entries [i, e) of block rb, all or none: the first entry
 * that would leave the counts' range, or UINT64_MAX.
 */
static uint64_t rb_add(const qc_image *img, uint8_t *rb, uint64_t i, uint64_t e, int64_t delta)
{
    uint64_t max = qc_refcount_max(img);
    if (img->refcount_bits == 16) {
        /* QEMU's default width, in loops the compiler can vectorise */
        uint64_t lo = UINT16_MAX, hi = 0;
        for (uint64_t j = i; j < e; j++) {
            uint64_t v = qc_be16(rb + 2 * j);
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        if (delta < 0 ? lo >= (uint64_t)-delta : max - hi >= (uint64_t)delta) {
            for (uint64_t j = i; j < e; j++)
                qc_put16(rb + 2 * j, (uint16_t)(qc_be16(rb + 2 * j) + delta));
            return UINT64_MAX;
        }
    }
    for (uint64_t j = i; j < e; j++) {
        uint64_t v = qc_rb_get(img, rb, j);
        if (delta < 0 ? v < (uint64_t)-delta : max - v < (uint64_t)delta)
            return j;
    }
    if (delta)
        for (uint64_t j = i; j < e; j++)
            qc_rb_put(img->refcount_bits, rb, j, qc_rb_get(img, rb, j) + (uint64_t)delta);
    return UINT64_MAX;
}

int qc_refcount_add_run(qc_image *img, uint64_t first, uint64_t n, int64_t delta)
{
    int r = load(img);
    uint64_t per = 1ull << img->rb_bits;
    while (r == 0 && n) {
        uint64_t i = first & (per - 1), k = qc_min(n, per - i), bad;
        uint8_t *rb;
        if ((r = block_for_change(img, first >> img->rb_bits, delta >= 0, &rb)) != 0)
            break; /* 1: no block, every count is 0 */
        if ((bad = rb_add(img, rb, i, i + k, delta)) != UINT64_MAX) {
            first += bad - i;
            if (delta > 0)
                return qc_fail(img->ctx, QC_ERR_UNSUPPORTED, 0, img->filename, "write",
                               "'%s': refcount of cluster %llu would overflow %u bits", img->filename,
                               (unsigned long long)first, img->refcount_bits);
            r = 1;
            break;
        }
        qc_cache_mark_dirty(&img->rbc, rb);
        first += k;
        n -= k;
    }
    if (r > 0)
        return qc_fail(img->ctx, QC_ERR_FORMAT, 0, img->filename, "write",
                       "'%s': corrupt image: refcount of cluster %llu would drop below zero",
                       img->filename, (unsigned long long)first);
    return r;
}

int qc_refcount_add(qc_image *img, uint64_t cluster, int64_t delta)
{
    return qc_refcount_add_run(img, cluster, 1, delta);
}

/* First run of n clusters with refcount 0 at or after the hint (and, in a
 * shadow update, free in the committed structure too). */
int qc_find_free(qc_image *img, uint64_t n, uint64_t *start)
{
    uint64_t c = img->free_hint, run = 0, s = c;
    for (;;) {
        uint64_t rti = c >> img->rb_bits;
        if (rti >= img->rt_entries) {
            *start = run ? s : c; /* everything past the table is free */
            return 0;
        }
        if (!(img->reftable[rti] & QC_RT_OFFSET_MASK)) {
            /* a whole range without a block is free */
            uint64_t next = (rti + 1) << img->rb_bits;
            if (!run)
                s = c;
            run += next - c;
            c = next;
        } else {
            uint64_t rc;
            int r = qc_refcount_get(img, c, &rc);
            if (r < 0)
                return r;
            if (!rc && img->shadow && (r = qc_shadow_used(img, c, &rc)) < 0)
                return r;
            if (rc) {
                run = 0;
            } else {
                if (!run)
                    s = c;
                run++;
            }
            c++;
        }
        if (run >= n) {
            *start = s;
            return 0;
        }
    }
}

int qc_alloc_clusters(qc_image *img, uint64_t n, uint64_t *host)
{
    int r = load(img);
    if (r < 0)
        return r;
    for (int tries = 0;; tries++) {
        uint64_t s;
        if (tries > 64)
            return qc_fail(img->ctx, QC_ERR_FORMAT, 0, img->filename, "write",
                           "'%s': could not find free clusters (refcounts inconsistent?)", img->filename);
        if ((r = qc_find_free(img, n, &s)) < 0)
            return r;
        /* a block device cannot grow: refuse before anything is written */
        if ((r = qc_image_room(img, (s + n) << img->cluster_bits)) < 0)
            return r;
        /* Make sure refcount blocks exist for the run; they may land in it. */
        bool moved = false;
        for (uint64_t rti = s >> img->rb_bits; rti <= (s + n - 1) >> img->rb_bits && !moved; rti++) {
            if (rti >= img->rt_entries) {
                if ((r = grow_reftable(img, ((s + n - 1) >> img->rb_bits) + 1)) < 0)
                    return r;
                moved = true;
            } else if (!(img->reftable[rti] & QC_RT_OFFSET_MASK)) {
                if ((r = create_refblock(img, rti)) < 0)
                    return r;
                moved = (rti << img->rb_bits) >= s;
            }
            /* a shadow update copies the block first: the copy may take a cluster of the run */
            if (!moved && img->shadow && (r = qc_shadow_cow(img, rti)) != 0) {
                if (r < 0)
                    return r;
                moved = true;
            }
        }
        if (moved)
            continue;
        /* A zero refcount on live metadata: allocating would overwrite it. */
        if ((r = qc_overlap_check(img, s << img->cluster_bits, n << img->cluster_bits, QC_META_DATA)) < 0)
            return r;
        for (uint64_t c = s; c < s + n; c++)
            if ((r = qc_refcount_add(img, c, 1)) < 0)
                return r;
        img->free_hint = s + n;
        *host = s << img->cluster_bits;
        return 0;
    }
}

int qc_free_later(qc_image *img, uint64_t off, uint64_t bytes)
{
    if (!bytes)
        return 0;
    if (img->nfree == img->free_cap) {
        size_t cap = img->free_cap ? img->free_cap * 2 : 64;
        void *n = qc_realloc(img->ctx, img->frees, cap * sizeof(*img->frees));
        if (!n)
            return qc_fail(img->ctx, QC_ERR_NOMEM, ENOMEM, img->filename, "write", "Out of memory");
        img->frees = n;
        img->free_cap = cap;
    }
    img->frees[img->nfree].off = off;
    img->frees[img->nfree].bytes = bytes;
    img->nfree++;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * Give freed clusters' space back to the host: one hole per run, and a
 * run that ends the file shortens it; on a block device one discard per
 * run. Failure is harmless (space only).
 */
void qc_release(qc_image *img, uint64_t *c, size_t n)
{
    qc_ctx *ctx = img->ctx;
    qsort(c, n, sizeof(*c), cmp_u64);
    if (img->blockdev) {
        for (size_t i = 0, j; i < n; i = j) {
            for (j = i + 1; j < n && c[j] <= c[j - 1] + 1; j++)
                ;
            uint64_t end = qc_min(c[j - 1] + 1, img->file_size >> img->cluster_bits);
            if (end > c[i])
                qc_sys_discard(ctx, img->fd, c[i] << img->cluster_bits, (end - c[i]) << img->cluster_bits);
        }
        return;
    }
    struct stat st; /* the file grows as clusters are written: ask, do not remember */
    if (ctx->io->fstat(ctx->io_user, img->fd, &st) < 0)
        return;
    img->file_size = (uint64_t)st.st_size;
    uint64_t file_clusters = (img->file_size + img->cluster_size - 1) >> img->cluster_bits;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && c[j] <= c[j - 1] + 1)
            j++;
        uint64_t first = c[i], end = c[j - 1] + 1;
        /* a corrupt image's refcounts may free live metadata: keep its bytes */
        if (!qc_overlap_may_release(img, first << img->cluster_bits, (end - first) << img->cluster_bits)) {
            i = j;
            continue;
        }
        if (end >= file_clusters && first < file_clusters) {
            if (ctx->io->ftruncate(ctx->io_user, img->fd, first << img->cluster_bits) == 0) {
                img->file_size = first << img->cluster_bits;
                file_clusters = first;
            }
        } else if (first < file_clusters) {
            ctx->io->fallocate(ctx->io_user, img->fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
                               first << img->cluster_bits, (end - first) << img->cluster_bits);
        }
        i = j;
    }
}

/* Apply deferred frees (their references are durably gone). */
int qc_apply_frees(qc_image *img)
{
    uint64_t *zero = NULL;
    size_t nz = 0, cap = 0;
    bool lost = false;
    int r = 0;
    for (size_t i = 0; i < img->nfree && r == 0; i++) {
        uint64_t first = img->frees[i].off >> img->cluster_bits;
        uint64_t last = (img->frees[i].off + img->frees[i].bytes - 1) >> img->cluster_bits;
        for (uint64_t c = first; c <= last && r == 0; c++) {
            uint64_t rc;
            if ((r = qc_refcount_add(img, c, -1)) < 0 || (r = qc_refcount_get(img, c, &rc)) < 0)
                break;
            if (rc)
                continue;
            if (c < img->free_hint)
                img->free_hint = c;
            qc_cache_forget(&img->l2c, c << img->cluster_bits);
            if (nz == cap && !lost) {
                uint64_t *n = qc_realloc(img->ctx, zero, (cap ? cap * 2 : 256) * sizeof(*n));
                lost = !n; /* then only the space release is lost */
                zero = n ? n : zero;
                cap = n ? (cap ? cap * 2 : 256) : cap;
            }
            if (nz < cap)
                zero[nz++] = c;
        }
    }
    img->nfree = 0;
    if (r == 0 && nz)
        qc_release(img, zero, nz);
    free(zero);
    return r;
}

/* ---- the shadow mode of a shadow update (shadow.c): hooks of the updates above ---- */

void qc_shadow_mark(qc_image *img, uint64_t rti)
{
    if (rti < img->shadow->cow_len)
        img->shadow->cow[rti] = 1;
}

int qc_shadow_grow(qc_image *img, uint64_t min_entries)
{
    struct qc_shadow *sh = img->shadow;
    uint64_t per = img->cluster_size / 8;
    uint64_t entries = qc_align_up(qc_max(min_entries, img->rt_entries) * 2, per);
    if (entries * 8 > QC_MAX_REFTABLE_BYTES)
        return qc_fail(img->ctx, QC_ERR_NOSPC, 0, img->filename, "snapshot",
                       "'%s': refcount table would exceed its maximum size", img->filename);
    uint64_t *t = qc_realloc(img->ctx, img->reftable, (size_t)entries * 8);
    uint8_t *c = t ? qc_realloc(img->ctx, sh->cow, (size_t)entries) : NULL;
    if (t)
        img->reftable = t;
    if (!t || !c)
        return qc_fail(img->ctx, QC_ERR_NOMEM, ENOMEM, img->filename, "snapshot", "Out of memory");
    memset(t + img->rt_entries, 0, (size_t)(entries - img->rt_entries) * 8);
    memset(c + sh->cow_len, 0, (size_t)(entries - sh->cow_len));
    sh->cow = c;
    sh->cow_len = entries;
    img->rt_entries = entries;
    qc_meta_changed(img);
    return 0;
}

/* The committed refcount of cluster, for clusters the new structure counts as free. */
int qc_shadow_used(qc_image *img, uint64_t cluster, uint64_t *rc)
{
    struct qc_shadow *sh = img->shadow;
    uint64_t rti = cluster >> img->rb_bits;
    *rc = 0;
    if (rti >= sh->old_entries || !(sh->old_rt[rti] & QC_RT_OFFSET_MASK) || !sh->cow[rti])
        return 0; /* same block in both: already known free */
    uint8_t *rb;
    int r = qc_cache_get(img, &img->rbc, sh->old_rt[rti] & QC_RT_OFFSET_MASK, &rb, "refcount block");
    if (r == 0)
        *rc = qc_rb_get(img, rb, cluster & ((1ull << img->rb_bits) - 1));
    return r;
}

/*
 * Block rti is about to change: if it is a committed one, give the range a
 * copy at a free cluster first (returns 1 then). The copy takes over the
 * cached block's buffer (unchanged until now: this is its first change);
 * the committed block stays as it is on disk. The copy's own refcount and
 * the old block's release are ordinary (shadowed) updates.
 */
int qc_shadow_cow(qc_image *img, uint64_t rti)
{
    struct qc_shadow *sh = img->shadow;
    if (rti >= sh->old_entries || sh->cow[rti] || !(sh->old_rt[rti] & QC_RT_OFFSET_MASK))
        return 0;
    uint64_t old = sh->old_rt[rti] & QC_RT_OFFSET_MASK, cs = img->cluster_size;
    sh->cow[rti] = 1;
    /* a free cluster whose range already has a block (making one may take the cluster) */
    uint64_t y;
    int r;
    for (;;) {
        if ((r = qc_find_free(img, 1, &y)) < 0)
            return r;
        uint64_t ry = y >> img->rb_bits;
        if (ry < img->rt_entries && (img->reftable[ry] & QC_RT_OFFSET_MASK))
            break;
        if ((r = qc_refcount_add(img, y, 0)) < 0)
            return r;
    }
    if ((r = qc_overlap_check(img, y << img->cluster_bits, cs, QC_META_DATA)) < 0)
        return r;
    img->free_hint = y + 1;
    if ((r = qc_cache_move(img, &img->rbc, old, y << img->cluster_bits, "refcount block")) < 0)
        return r;
    img->reftable[rti] = y << img->cluster_bits;
    qc_meta_added(img, y << img->cluster_bits, QC_META_REFBLOCK);
    if ((r = qc_refcount_add(img, y, 1)) == 0)
        r = qc_refcount_add(img, old >> img->cluster_bits, -1);
    return r < 0 ? r : 1;
}
