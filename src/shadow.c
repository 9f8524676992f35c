/*
 * shadow.c - metadata updates that become visible in one header write.
 *
 * An internal snapshot operation changes refcounts, L1 and L2 tables and
 * the snapshot table together. Done in place in QEMU's order, a crash can
 * leave a refcount and the COPIED flag that mirrors it disagreeing, which
 * qemu-img check reports as corruption. A shadow update writes nothing the
 * committed image uses: a refcount block is copied to a free cluster before
 * its first change (qc_shadow_cow), new clusters must be free in both the
 * committed and the new structure (qc_shadow_used), and the caller writes
 * new tables to new clusters. Commit writes the new refcount table, makes
 * all of it durable, and then switches the header: the L1 table, refcount
 * table and snapshot table fields all lie in its first sector. A crash
 * before that leaves the image exactly as it was, not even leaked
 * clusters; after it, exactly as the operation leaves it.
 *
 * Memory: the committed refcount table and one byte per table entry.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int qc_shadow_begin(qc_image *img)
{
    /* everything pending reaches the disk first: the committed state is the file */
    int r = qc_flush(img);
    if (r < 0)
        return r;
    struct qc_shadow *sh = qc_calloc(img->ctx, 1, sizeof(*sh));
    if (!sh)
        return QC_ERR_NOMEM;
    sh->old_entries = img->rt_entries;
    sh->cow_len = img->rt_entries;
    sh->old_rt = qc_malloc(img->ctx, (size_t)img->rt_entries * 8);
    sh->cow = qc_calloc(img->ctx, (size_t)sh->cow_len + 1, 1);
    if (!sh->old_rt || !sh->cow) {
        free(sh->old_rt);
        free(sh->cow);
        free(sh);
        return QC_ERR_NOMEM;
    }
    memcpy(sh->old_rt, img->reftable, (size_t)img->rt_entries * 8);
    img->shadow = sh;
    /* new tables go past the end: no scan of the whole refcount structure for
     * a free cluster (the space they replace is freed at the commit). A
     * device's end is its capacity: there they take free clusters inside. */
    if (!img->blockdev)
        img->free_hint = qc_max(img->free_hint, (img->file_size + img->cluster_size - 1) >> img->cluster_bits);
    return 0;
}

static void shadow_free(qc_image *img)
{
    struct qc_shadow *sh = img->shadow;
    img->shadow = NULL;
    if (sh) {
        free(sh->old_rt);
        free(sh->cow);
        free(sh);
    }
}

/* Forget every change: the file still holds the committed state. */
void qc_shadow_abort(qc_image *img)
{
    qc_cache *caches[2] = {&img->l2c, &img->rbc};
    for (int k = 0; k < 2; k++)
        for (unsigned i = 0; caches[k]->slots && i < caches[k]->cap; i++) {
            caches[k]->slots[i].off = 0;
            caches[k]->slots[i].dirty = false;
        }
    struct qc_shadow *sh = img->shadow;
    if (sh) {
        free(img->reftable);
        img->reftable = sh->old_rt; /* hand the committed table back */
        sh->old_rt = NULL;
        img->rt_entries = sh->old_entries;
    }
    shadow_free(img);
    img->free_hint = 0;
    img->l1_dirty_lo = img->rbc.parent_lo = UINT64_MAX;
    img->l1_dirty_hi = img->rbc.parent_hi = 0;
    img->nfree = 0;
    qc_meta_changed(img);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool listed(const uint64_t *v, size_t n, uint64_t x)
{
    return bsearch(&x, v, n, sizeof(*v), cmp_u64) != NULL;
}

/* Count j went from nonzero (block old) to zero (block now). */
static inline bool freed(const qc_image *img, const uint8_t *old, const uint8_t *now, uint64_t j)
{
    if (img->refcount_bits == 16) /* the common width, without a call per count */
        return (old[2 * j] | old[2 * j + 1]) && !(now[2 * j] | now[2 * j + 1]);
    return qc_rb_get(img, old, j) && !qc_rb_get(img, now, j);
}

/*
 * After the switch: give the host back the space of clusters the update
 * freed (committed count > 0, new count 0), as QEMU discards them. The old
 * blocks it compares with are released last. All of it in one list, so
 * that neighbouring runs become one hole (each hole punched costs the file
 * system a journal transaction); the list holds at most a block's worth
 * of freed clusters and the old blocks. Failure costs space only.
 */
static void release_freed(qc_image *img, struct qc_shadow *sh)
{
    uint64_t per = 1ull << img->rb_bits, nold = 0;
    uint64_t *olds = qc_malloc(img->ctx, (size_t)(sh->old_entries + 1) * 8);
    uint64_t *run = qc_malloc(img->ctx, (size_t)(per + sh->old_entries + 1) * 8);
    if (!olds || !run)
        goto out;
    for (uint64_t i = 0; i < sh->old_entries; i++)
        if (sh->cow[i] && (sh->old_rt[i] & QC_RT_OFFSET_MASK))
            olds[nold++] = (sh->old_rt[i] & QC_RT_OFFSET_MASK) >> img->cluster_bits;
    qsort(olds, (size_t)nold, 8, cmp_u64);
    uint8_t *old = qc_malloc(img->ctx, (size_t)img->cluster_size), *rb;
    size_t n = 0;
    for (uint64_t i = 0; old && i < sh->old_entries; i++) {
        if (!sh->cow[i] || !(sh->old_rt[i] & QC_RT_OFFSET_MASK))
            continue;
        /* the committed block and the new one side by side */
        if (qc_cache_get(img, &img->rbc, sh->old_rt[i] & QC_RT_OFFSET_MASK, &rb, "refcount block") < 0)
            break;
        memcpy(old, rb, (size_t)img->cluster_size);
        if (qc_cache_get(img, &img->rbc, img->reftable[i] & QC_RT_OFFSET_MASK, &rb, "refcount block") < 0)
            break;
        for (uint64_t j = 0; j < per; j++)
            if (freed(img, old, rb, j) && !listed(olds, (size_t)nold, i * per + j)) {
                if (n == per) { /* full: release what is listed */
                    qc_release(img, run, n);
                    n = 0;
                }
                run[n++] = i * per + j;
            }
    }
    free(old);
    for (uint64_t i = 0; i < nold; i++) {
        qc_cache_forget(&img->rbc, olds[i] << img->cluster_bits);
        run[n++] = olds[i];
    }
    if (n)
        qc_release(img, run, n);
out:
    free(olds);
    free(run);
}

int qc_shadow_commit(qc_image *img, const qc_switch *sw)
{
    qc_header *h = &img->hdr;
    uint64_t cs = img->cluster_size;
    /* the committed refcount table is free in the new structure */
    int r = 0;
    for (uint64_t c = 0; c < h->rt_clusters && r == 0; c++)
        r = qc_refcount_add(img, (h->rt_offset >> img->cluster_bits) + c, -1);
    /* the new one covers itself: allocating it may grow it */
    uint64_t at = 0, k = 0;
    while (r == 0) {
        k = (img->rt_entries * 8 + cs - 1) / cs;
        if ((r = qc_alloc_clusters(img, k, &at)) < 0)
            break;
        if ((img->rt_entries * 8 + cs - 1) / cs <= k)
            break;
        for (uint64_t c = 0; c < k && r == 0; c++) /* grown meanwhile: again, larger */
            r = qc_refcount_add(img, (at >> img->cluster_bits) + c, -1);
    }
    /* tables, then blocks, then the table of blocks: all new, all durable */
    if (r == 0)
        r = qc_cache_flush(img, &img->l2c);
    if (r == 0)
        r = qc_cache_flush(img, &img->rbc);
    uint64_t *t = NULL;
    if (r == 0 && !(t = qc_calloc(img->ctx, (size_t)(k * cs / 8), 8)))
        r = QC_ERR_NOMEM;
    if (r == 0) {
        memcpy(t, img->reftable, (size_t)img->rt_entries * 8);
        r = qc_overlap_check(img, at, k * cs, QC_META_DATA);
        if (r == 0)
            r = qc_write_u64s(img, t, k * cs / 8, at);
    }
    free(t);
    if (r == 0) {
        img->unsynced = true;
        r = qc_img_sync(img);
    }
    if (r < 0) {
        qc_shadow_abort(img);
        return r;
    }
    /* the switch: one write of the header */
    qc_header old = *h;
    h->rt_offset = at;
    h->rt_clusters = (uint32_t)k;
    if (sw->l1_offset) {
        h->l1_offset = sw->l1_offset;
        h->l1_size = sw->l1_size;
    }
    if (sw->snapshots) {
        h->nb_snapshots = sw->nb_snapshots;
        h->snapshots_offset = sw->nb_snapshots ? sw->snapshots_offset : 0;
    }
    if (sw->size)
        h->size = sw->size;
    if ((r = qc_header_write(img)) == 0)
        r = qc_img_sync(img);
    if (r < 0) {
        /* the header may or may not have reached the disk: only the old state is known */
        h->rt_offset = old.rt_offset;
        h->rt_clusters = old.rt_clusters;
        h->l1_offset = old.l1_offset;
        h->l1_size = old.l1_size;
        h->nb_snapshots = old.nb_snapshots;
        h->snapshots_offset = old.snapshots_offset;
        h->size = old.size;
        qc_shadow_abort(img);
        img->write_ready = false; /* nothing more goes to this file */
        return r;
    }
    struct qc_shadow *sh = img->shadow;
    img->shadow = NULL;
    img->free_hint = 0;
    release_freed(img, sh);
    img->shadow = sh;
    shadow_free(img);
    qc_meta_changed(img);
    return qc_img_sync(img);
}
