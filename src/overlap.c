/*
 * overlap.c - the last defence against a corrupt image whose L1 or L2
 * entries or refcounts point new data or tables at metadata. Every data
 * write, table write-back and allocation is checked against the header,
 * the L1 and refcount tables, the snapshot table and snapshot L1 tables,
 * and every active L2 table and refcount block (QEMU's default overlap
 * check covers the same), so a corrupt image is refused instead of being
 * made worse.
 *
 * L2 tables and refcount blocks are kept as one sorted list of
 * (cluster << 1 | kind), built on first use and kept up to date as tables
 * are added; its size is bounded by the L1 and refcount tables already in
 * memory.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t key(const qc_image *img, uint64_t off, int kind)
{
    return ((off >> img->cluster_bits) << 1) | (uint64_t)(kind == QC_META_REFBLOCK);
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
            m[n++] = key(img, img->l1[i] & QC_OFFSET_MASK, QC_META_L2);
    for (uint64_t i = 0; i < img->rt_entries; i++)
        if (img->reftable[i] & QC_RT_OFFSET_MASK)
            m[n++] = key(img, img->reftable[i] & QC_RT_OFFSET_MASK, QC_META_REFBLOCK);
    qsort(m, n, sizeof(*m), cmp_u64);
    img->meta = m;
    img->meta_n = n;
    img->meta_cap = cap;
    img->meta_valid = true;
    return 0;
}

/* Index of the first listed key >= k. */
static size_t lower_bound(const qc_image *img, uint64_t k)
{
    size_t lo = 0, hi = img->meta_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (img->meta[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void qc_meta_added(qc_image *img, uint64_t off, int kind)
{
    if (!img->meta_valid)
        return;
    if (img->meta_n == img->meta_cap) {
        img->meta_valid = false; /* rebuilt, larger, on next use */
        return;
    }
    uint64_t k = key(img, off, kind);
    size_t i = lower_bound(img, k);
    memmove(img->meta + i + 1, img->meta + i, (img->meta_n - i) * sizeof(*img->meta));
    img->meta[i] = k;
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

/* The structure at a fixed place (header, L1, refcount, snapshot tables) in [off, off+len). */
static const char *fixed_at(const qc_image *img, uint64_t off, uint64_t len)
{
    const qc_header *h = &img->hdr;
    if (hits(off, len, 0, img->cluster_size))
        return "header";
    if (hits(off, len, h->l1_offset, (uint64_t)h->l1_size * 8))
        return "L1 table";
    if (hits(off, len, h->rt_offset, (uint64_t)h->rt_clusters << img->cluster_bits))
        return "refcount table";
    if (hits(off, len, h->snapshots_offset, img->snap_table_bytes))
        return "snapshot table";
    for (uint32_t i = 0; i < img->nsnaps; i++)
        if (hits(off, len, img->snaps[i].l1_offset, (uint64_t)img->snaps[i].l1_size * 8))
            return "L1 table of an internal snapshot";
    return NULL;
}

static int refuse(qc_image *img, uint64_t off, const char *what)
{
    return qc_fail(img->ctx, QC_ERR_FORMAT, 0, img->filename, "write",
                   "'%s': corrupt image: writing at offset %#llx would overwrite its %s; "
                   "refused (see 'qcow2-chain check')",
                   img->filename, (unsigned long long)off, what);
}

/* The metadata in [off, off+len) other than self's kind, or NULL; *r < 0 on failure. */
static const char *meta_at(qc_image *img, uint64_t off, uint64_t len, int self, int *r)
{
    *r = 0;
    /* the L1 and refcount tables are known apart from each other (qc_overlap_fixed) */
    const char *what = self == QC_META_TABLE ? NULL : fixed_at(img, off, len);
    if (what)
        return what;
    if (!img->meta_valid && (*r = build(img)) < 0)
        return NULL;
    uint64_t first = off >> img->cluster_bits, last = (off + len - 1) >> img->cluster_bits;
    for (size_t i = lower_bound(img, first << 1); i < img->meta_n && (img->meta[i] >> 1) <= last; i++) {
        int kind = (img->meta[i] & 1) ? QC_META_REFBLOCK : QC_META_L2;
        if (kind != self)
            return kind == QC_META_L2 ? "L2 table" : "refcount block";
    }
    return NULL;
}

int qc_overlap_check(qc_image *img, uint64_t off, uint64_t len, int self)
{
    if (!len || img->fmt != QC_FMT_QCOW2) /* raw: all data */
        return 0;
    int r;
    const char *what = meta_at(img, off, len, self, &r);
    return what ? refuse(img, off, what) : r;
}

/*
 * A data reference is dropped: a corrupt entry may name metadata, whose
 * refcount would then fall and whose space would be punched out.
 */
int qc_overlap_free(qc_image *img, uint64_t off, uint64_t len)
{
    if (!len || img->fmt != QC_FMT_QCOW2)
        return 0;
    int r;
    const char *what = meta_at(img, off, len, QC_META_DATA, &r);
    if (!what)
        return r;
    return qc_fail(img->ctx, QC_ERR_FORMAT, 0, img->filename, "write",
                   "'%s': corrupt image: an L2 entry points guest data at host offset %#llx, where "
                   "writing or freeing it would overwrite its %s; refused (see 'qcow2-chain check')",
                   img->filename, (unsigned long long)off, what);
}

/* May freed space [off, off+len) be given back to the host? Never over live metadata. */
bool qc_overlap_may_release(qc_image *img, uint64_t off, uint64_t len)
{
    int r;
    return !meta_at(img, off, len, QC_META_DATA, &r) && r == 0;
}

/* Before the first write: the fixed structures must not overlap each other. */
int qc_overlap_fixed(qc_image *img)
{
    const qc_header *h = &img->hdr;
    uint64_t l1 = h->l1_offset, l1_len = (uint64_t)h->l1_size * 8;
    uint64_t rt = h->rt_offset, rt_len = (uint64_t)h->rt_clusters << img->cluster_bits;
    uint64_t st = h->snapshots_offset, st_len = img->snap_table_bytes, cs = img->cluster_size;
    const char *clash = hits(l1, l1_len, 0, cs)       ? "L1 table overlaps its header"
                        : hits(rt, rt_len, 0, cs)     ? "refcount table overlaps its header"
                        : hits(l1, l1_len, rt, rt_len) ? "L1 table overlaps its refcount table"
                        : hits(l1, l1_len, st, st_len) ? "L1 table overlaps its snapshot table"
                        : hits(rt, rt_len, st, st_len) ? "refcount table overlaps its snapshot table"
                                                       : NULL;
    for (uint32_t i = 0; !clash && i < img->nsnaps; i++) {
        uint64_t s = img->snaps[i].l1_offset, s_len = (uint64_t)img->snaps[i].l1_size * 8;
        if (hits(l1, l1_len, s, s_len) || hits(rt, rt_len, s, s_len))
            clash = "L1 or refcount table overlaps the L1 table of an internal snapshot";
    }
    if (!clash)
        return 0;
    return qc_fail(img->ctx, QC_ERR_FORMAT, 0, img->filename, "write",
                   "'%s': corrupt image: its %s; refused (see 'qcow2-chain check')", img->filename, clash);
}
