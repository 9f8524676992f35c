/*
 * overlap.c - the last defence against a corrupt image whose L2 entries or
 * refcounts point new data at metadata. Every data write and every
 * allocation is checked against the header, the L1 and refcount tables,
 * the snapshot table and snapshot L1 tables, and every active L2 table and
 * refcount block (QEMU's default overlap check covers the same), so a
 * corrupt image is refused instead of being made worse.
 *
 * L2 tables and refcount blocks are kept as a sorted list of cluster
 * numbers, built on first use and kept up to date as tables are added;
 * its size is bounded by the L1 and refcount tables already in memory.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int build(qc_image *img)
{
    free(img->meta);
    img->meta = NULL;
    img->meta_n = img->meta_cap = 0;
    int r = qc_image_load_tables(img);
    if (r < 0)
        return r;
    size_t cap = (size_t)img->l1_size + (size_t)img->rt_entries + 16;
    uint64_t *m = qc_malloc(img->ctx, cap * sizeof(*m));
    if (!m)
        return QC_ERR_NOMEM;
    size_t n = 0;
    for (uint64_t i = 0; i < img->l1_size; i++)
        if (img->l1[i] & QC_OFFSET_MASK)
            m[n++] = (img->l1[i] & QC_OFFSET_MASK) >> img->cluster_bits;
    for (uint64_t i = 0; i < img->rt_entries; i++)
        if (img->reftable[i] & QC_RT_OFFSET_MASK)
            m[n++] = (img->reftable[i] & QC_RT_OFFSET_MASK) >> img->cluster_bits;
    qsort(m, n, sizeof(*m), cmp_u64);
    img->meta = m;
    img->meta_n = n;
    img->meta_cap = cap;
    img->meta_valid = true;
    return 0;
}

/* Index of the first listed cluster >= c. */
static size_t lower_bound(const qc_image *img, uint64_t c)
{
    size_t lo = 0, hi = img->meta_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (img->meta[mid] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void qc_meta_added(qc_image *img, uint64_t off)
{
    if (!img->meta_valid)
        return;
    if (img->meta_n == img->meta_cap) {
        img->meta_valid = false; /* rebuilt, larger, on next use */
        return;
    }
    uint64_t c = off >> img->cluster_bits;
    size_t i = lower_bound(img, c);
    memmove(img->meta + i + 1, img->meta + i, (img->meta_n - i) * sizeof(*img->meta));
    img->meta[i] = c;
    img->meta_n++;
}

void qc_meta_changed(qc_image *img)
{
    img->meta_valid = false;
}

static bool hits(uint64_t off, uint64_t len, uint64_t m_off, uint64_t m_len)
{
    return m_len && m_off < off + len && off < m_off + m_len;
}

/* The metadata structure in host bytes [off, off+len), or NULL. */
static int metadata_at(qc_image *img, uint64_t off, uint64_t len, const char **what)
{
    const qc_header *h = &img->hdr;
    *what = NULL;
    if (hits(off, len, 0, img->cluster_size))
        *what = "header";
    else if (hits(off, len, h->l1_offset, (uint64_t)h->l1_size * 8))
        *what = "L1 table";
    else if (hits(off, len, h->rt_offset, (uint64_t)h->rt_clusters << img->cluster_bits))
        *what = "refcount table";
    else if (hits(off, len, h->snapshots_offset, img->snap_table_bytes))
        *what = "snapshot table";
    for (uint32_t i = 0; !*what && i < img->nsnaps; i++)
        if (hits(off, len, img->snaps[i].l1_offset, (uint64_t)img->snaps[i].l1_size * 8))
            *what = "L1 table of an internal snapshot";
    if (*what)
        return 0;
    int r = img->meta_valid ? 0 : build(img);
    if (r < 0)
        return r;
    uint64_t first = off >> img->cluster_bits, last = (off + len - 1) >> img->cluster_bits;
    size_t i = lower_bound(img, first);
    if (i < img->meta_n && img->meta[i] <= last)
        *what = "L2 table or refcount block";
    return 0;
}

int qc_overlap_check(qc_image *img, uint64_t off, uint64_t len)
{
    const char *what;
    int r = len ? metadata_at(img, off, len, &what) : 0;
    if (r < 0 || !len || !what)
        return r;
    return qc_fail(img->ctx, QC_ERR_FORMAT, 0, img->filename, "write",
                   "'%s': corrupt image: writing at offset %#llx would overwrite its %s; "
                   "refused (see 'qcow2-chain check')",
                   img->filename, (unsigned long long)off, what);
}
