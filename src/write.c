/*
 * write.c - guest writes, write-zeroes and discard on the top image, with
 * copy-on-write from the backing chain and from internal snapshots.
 *
 * Data goes to clusters the L2 entry does not yet point to (or in place
 * into clusters we own alone, COPIED); L2/L1 changes wait in the cache and
 * reach the disk only through qc_flush's ordering.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define ALL_ALLOC 0x00000000ffffffffull
#define ALL_ZERO 0xffffffff00000000ull

/* Guest data into the image file; it becomes durable at the next sync. */
static int data_write(qc_image *img, const void *buf, size_t len, uint64_t off)
{
    int r = qc_overlap_check(img, off, len, QC_META_DATA);
    if (r < 0)
        return r;
    img->unsynced = true;
    return qc_pwrite_full(img->ctx, img->fd, img->filename, buf, len, off);
}

static int refuse(qc_image *img, int code, const char *why)
{
    return qc_fail(img->ctx, code, 0, img->filename, "write", "'%s': %s", img->filename, why);
}

/* Remove persistent bitmaps: they would be stale after our writes. */
static int drop_bitmaps(qc_image *img)
{
    qc_header *h = &img->hdr;
    h->has_bitmaps_ext = false;
    h->autoclear &= ~QC_AUTOCLEAR_BITMAPS;
    int r = qc_header_write(img);
    if (r == 0)
        r = qc_img_sync(img);
    if (r < 0)
        return r;
    /* Nothing references them now; give their clusters back. */
    for (uint32_t i = 0; i < img->nbitmaps && r == 0; i++) {
        qc_bitmap *b = &img->bitmaps[i];
        uint64_t *t = qc_calloc(img->ctx, b->table_size, 8);
        if (!t)
            return QC_ERR_NOMEM;
        r = qc_pread_exact(img->ctx, img->fd, img->filename, t, (size_t)b->table_size * 8, b->table_offset,
                           "bitmap table");
        for (uint32_t j = 0; j < b->table_size && r == 0; j++) {
            uint64_t off = qc_be64((uint8_t *)&t[j]) & QC_OFFSET_MASK;
            if (off)
                r = qc_free_later(img, off, img->cluster_size);
        }
        free(t);
        if (r == 0)
            r = qc_free_later(img, b->table_offset, (uint64_t)b->table_size * 8);
    }
    if (r == 0 && h->bitmap_dir_offset)
        r = qc_free_later(img, h->bitmap_dir_offset, h->bitmap_dir_size);
    if (r == 0)
        r = qc_flush(img);
    return r;
}

int qc_write_prepare(qc_image *img)
{
    if (img->write_ready)
        return 0;
    if (!(img->flags & QC_OPEN_RDWR))
        return refuse(img, QC_ERR_INVALID, "image is open read-only");
    if (img->fmt == QC_FMT_RAW) {
        img->write_ready = true;
        return 0;
    }
    qc_header *h = &img->hdr;
    if (h->incompat & QC_INCOMPAT_CORRUPT)
        return refuse(img, QC_ERR_FORMAT, "image is marked corrupt; refusing to write (check -r all)");
    if (h->incompat & QC_INCOMPAT_DATA_FILE)
        return refuse(img, QC_ERR_UNSUPPORTED, "writing images with an external data file is not supported");
    int r = qc_image_load_tables(img);
    if (r == 0)
        r = qc_overlap_fixed(img);
    if (r < 0)
        return r;
    img->l1_dirty_lo = img->rbc.parent_lo = UINT64_MAX;
    img->l1_dirty_hi = img->rbc.parent_hi = 0;
    img->write_ready = true;
    if (h->incompat & QC_INCOMPAT_DIRTY) {
        /* Lazy refcounts were in use when QEMU stopped: rebuild them. */
        if ((r = qc_rebuild_refcounts(img)) < 0)
            goto fail;
        h->incompat &= ~QC_INCOMPAT_DIRTY;
        if ((r = qc_header_write(img)) < 0 || (r = qc_img_sync(img)) < 0)
            goto fail;
    }
    if (h->has_bitmaps_ext && (r = drop_bitmaps(img)) < 0)
        goto fail;
    return 0;
fail:
    img->write_ready = false;
    return r;
}

/* The L2 table for L1 index l1i, allocated or unshared for writing. */
static int l2_for_write(qc_image *img, uint64_t l1i, uint8_t **l2)
{
    if (l1i >= img->l1_size)
        return refuse(img, QC_ERR_FORMAT, "L1 table does not cover the write");
    uint64_t e = img->l1[l1i], old = e & QC_OFFSET_MASK;
    if (old & (img->cluster_size - 1))
        return qc_fail(img->ctx, QC_ERR_FORMAT, 0, img->filename, "write",
                       "'%s': corrupt image: L2 table offset %#llx is not cluster aligned (L1 index %llu); "
                       "refused (see 'qcow2-chain check')",
                       img->filename, (unsigned long long)old, (unsigned long long)l1i);
    if (old && (e & QC_OFLAG_COPIED))
        return qc_cache_get(img, &img->l2c, old, l2, "L2 table");
    uint8_t *copy = NULL;
    int r;
    if (old) {
        /* Shared with an internal snapshot: copy the table first. */
        uint8_t *t;
        if ((r = qc_cache_get(img, &img->l2c, old, &t, "L2 table")) < 0)
            return r;
        if (!(copy = qc_malloc(img->ctx, (size_t)img->cluster_size)))
            return QC_ERR_NOMEM;
        memcpy(copy, t, (size_t)img->cluster_size);
    }
    uint64_t host;
    if ((r = qc_alloc_clusters(img, 1, &host)) == 0 && (r = qc_cache_new(img, &img->l2c, host, l2)) == 0) {
        if (copy)
            memcpy(*l2, copy, (size_t)img->cluster_size);
        img->l1[l1i] = host | QC_OFLAG_COPIED;
        qc_meta_added(img, host, QC_META_L2);
        qc_l1_dirty(img, l1i);
        if (old)
            r = qc_free_later(img, old, img->cluster_size);
    }
    free(copy);
    return r;
}

static void set_entry(qc_image *img, uint8_t *l2, uint64_t i, uint64_t e, uint64_t bm)
{
    uint8_t *p = l2 + i * img->l2_entry_size;
    qc_put64(p, e);
    if (img->ext_l2)
        qc_put64(p + 8, bm);
    qc_cache_mark_dirty(&img->l2c, l2);
}

/* Where guest offset off's entry lives: L1 index, index in the L2 table. */
static void locate(const qc_image *img, uint64_t off, uint64_t *l1i, uint64_t *idx)
{
    *l1i = off >> (img->cluster_bits + img->l2_bits);
    *idx = (off >> img->cluster_bits) & ((1ull << img->l2_bits) - 1);
}

/* Host bytes entry e refers to (none: *len = 0). */
static void entry_range(const qc_image *img, uint64_t e, uint64_t *off, uint64_t *len)
{
    *off = e & QC_OFFSET_MASK;
    *len = *off ? img->cluster_size : 0;
    if (e & QC_OFLAG_COMPRESSED)
        qc_compressed_range(img, e, off, len);
}

/*
 * Before anything changes: an entry reads refuse (unaligned host offset,
 * contradictory bitmap) or one that names metadata (whose space a write
 * would overwrite or free) stops the write, as QEMU stops it.
 */
static int check_entry(qc_image *img, uint64_t off, uint64_t e, uint64_t bm)
{
    int kind;
    uint64_t host, len;
    const char *why = qc_classify(img, e, bm, 0, &kind, &host);
    if (why)
        return qc_fail(img->ctx, QC_ERR_FORMAT, 0, img->filename, "write",
                       "'%s': corrupt image: %s (guest offset %#llx, L2 entry %#llx); refused (see 'qcow2-chain check')",
                       img->filename, why, (unsigned long long)(off & ~(img->cluster_size - 1)), (unsigned long long)e);
    entry_range(img, e, &host, &len);
    return qc_overlap_free(img, host, len);
}

/* The (writable) L2 table holding off's entry, its index and the entry, checked. */
static int entry_for_write(qc_image *img, uint64_t off, uint8_t **l2, uint64_t *idx, uint64_t *e, uint64_t *bm)
{
    uint64_t l1i;
    locate(img, off, &l1i, idx);
    int r = l2_for_write(img, l1i, l2);
    if (r == 0) {
        qc_l2_entry(img, *l2, *idx, e, bm);
        r = check_entry(img, off, *e, *bm);
    }
    return r;
}

/* The entry points at a cluster only this image uses: writes may go in place. */
static bool owned(uint64_t e)
{
    return (e & QC_OFFSET_MASK) && !(e & QC_OFLAG_COMPRESSED) && (e & QC_OFLAG_COPIED);
}

int qc_unref_entry(qc_image *img, uint64_t e)
{
    uint64_t off, len;
    entry_range(img, e, &off, &len);
    int r = qc_overlap_free(img, off, len);
    return r < 0 ? r : qc_free_later(img, off, len);
}

/* What guest bytes [off, off+len) read from the layers below img. */
static int read_below(qc_image *img, uint8_t *buf, uint64_t off, size_t len)
{
    qc_image *b = img->backing;
    uint64_t m = b && off < b->size ? qc_min(len, b->size - off) : 0;
    int r = m ? qc_image_read(b, buf, off, (size_t)m) : 0;
    memset(buf + m, 0, len - m);
    return r;
}

/*
 * The current content of guest cluster cstart as this image shows it:
 * from the old host cluster, a compressed cluster, zeros or the backing.
 */
static int current_cluster(qc_image *img, uint64_t cstart, uint64_t e, uint64_t bm, uint8_t *buf)
{
    size_t cs = (size_t)img->cluster_size;
    if (e & QC_OFLAG_COMPRESSED) {
        int r = qc_read_compressed(img, e & ~(QC_OFLAG_COPIED | QC_OFLAG_COMPRESSED));
        if (r == 0)
            memcpy(buf, img->zbuf, cs);
        return r;
    }
    uint64_t host = e & QC_OFFSET_MASK;
    if (!img->ext_l2) {
        if (e & QC_OFLAG_ZERO) {
            memset(buf, 0, cs);
            return 0;
        }
        return host ? qc_pread_full(img->ctx, img->fd, img->filename, buf, cs, host)
                    : read_below(img, buf, cstart, cs);
    }
    size_t sc = cs / 32;
    for (unsigned i = 0; i < 32; i++) {
        uint8_t *p = buf + i * sc;
        int r = 0;
        if (bm >> (32 + i) & 1)
            memset(p, 0, sc);
        else if (bm >> i & 1)
            r = qc_pread_full(img->ctx, img->fd, img->filename, p, sc, host + i * sc);
        else
            r = read_below(img, p, cstart + i * sc, sc);
        if (r < 0)
            return r;
    }
    return 0;
}

/*
 * Write [off, off+len) inside one guest cluster. data == NULL writes zeros.
 */
static int write_in_cluster(qc_image *img, uint64_t off, const uint8_t *data, size_t len, uint8_t *tmp)
{
    size_t cs = (size_t)img->cluster_size;
    uint64_t cstart = off & ~(img->cluster_size - 1);
    size_t in = (size_t)(off - cstart);
    uint8_t *l2;
    uint64_t idx, e, bm;
    int r = entry_for_write(img, off, &l2, &idx, &e, &bm);
    if (r < 0)
        return r;
    uint64_t host = e & QC_OFFSET_MASK;
    bool compressed = e & QC_OFLAG_COMPRESSED;
    bool own = owned(e);

    if (!img->ext_l2) {
        bool zero = e & QC_OFLAG_ZERO;
        if (own && !zero) { /* in place */
            if (data)
                return data_write(img, data, len, host + in);
            memset(tmp, 0, len);
            return data_write(img, tmp, len, host + in);
        }
        if (in || len < cs) {
            if ((r = current_cluster(img, cstart, e, bm, tmp)) < 0)
                return r;
        }
        if (data)
            memcpy(tmp + in, data, len);
        else
            memset(tmp + in, 0, len);
        uint64_t nh = host;
        if (!own && (r = qc_alloc_clusters(img, 1, &nh)) < 0)
            return r;
        if ((r = data_write(img, tmp, cs, nh)) < 0)
            return r;
        set_entry(img, l2, idx, nh | QC_OFLAG_COPIED, 0);
        return own ? 0 : qc_unref_entry(img, e);
    }

    /* Extended L2: only the touched subclusters change. */
    size_t sc = cs / 32;
    unsigned first = (unsigned)(in / sc), last = (unsigned)((in + len - 1) / sc);
    uint64_t touched = 0;
    for (unsigned i = first; i <= last; i++)
        touched |= 1ull << i;
    if (compressed || (host && !own)) {
        /* Shared or compressed: the whole current view moves to a new cluster. */
        uint64_t nh;
        if ((r = current_cluster(img, cstart, e, bm, tmp)) < 0 || (r = qc_alloc_clusters(img, 1, &nh)) < 0)
            return r;
        if (data)
            memcpy(tmp + in, data, len);
        else
            memset(tmp + in, 0, len);
        if ((r = data_write(img, tmp, cs, nh)) < 0)
            return r;
        set_entry(img, l2, idx, nh | QC_OFLAG_COPIED, ALL_ALLOC);
        return qc_unref_entry(img, e);
    }
    uint64_t nh = host;
    if (!own && (r = qc_alloc_clusters(img, 1, &nh)) < 0)
        return r;
    /* Partial head and tail subclusters keep what they show now. */
    size_t a = first * sc, b = (last + 1) * sc;
    for (unsigned k = 0; k < 2; k++) {
        unsigned i = k ? last : first;
        bool partial = k ? in + len < b : in > a;
        if (!partial || (k && first == last && in > a))
            continue;
        uint8_t *q = tmp + (size_t)i * sc;
        if (bm >> (32 + i) & 1)
            memset(q, 0, sc);
        else if (bm >> i & 1)
            r = qc_pread_full(img->ctx, img->fd, img->filename, q, sc, host + (uint64_t)i * sc);
        else
            r = read_below(img, q, cstart + (uint64_t)i * sc, sc);
        if (r < 0)
            return r;
    }
    if (data)
        memcpy(tmp + in, data, len);
    else
        memset(tmp + in, 0, len);
    if ((r = data_write(img, tmp + a, b - a, nh + a)) < 0)
        return r;
    uint64_t nbm = (bm | touched) & ~(touched << 32);
    if (nbm != bm || nh != host)
        set_entry(img, l2, idx, nh | QC_OFLAG_COPIED, nbm);
    return 0;
}

/* Split [off, off+len) at cluster boundaries and apply fn to each piece. */
static int check_range(qc_image *img, uint64_t off, uint64_t len)
{
    if (qc_past(off, len, img->size))
        return qc_fail(img->ctx, QC_ERR_INVALID, 0, img->filename, "write",
                       "'%s': write of %llu bytes at %llu is past the end of the image (%llu bytes)",
                       img->filename, (unsigned long long)len, (unsigned long long)off,
                       (unsigned long long)img->size);
    return qc_write_prepare(img);
}

int qc_image_write(qc_image *img, const void *buf, uint64_t off, size_t len)
{
    int r = check_range(img, off, len);
    if (r < 0 || !len)
        return r;
    if (img->fmt == QC_FMT_RAW)
        return data_write(img, buf, len, off);
    uint8_t *tmp = qc_malloc(img->ctx, (size_t)img->cluster_size);
    if (!tmp)
        return QC_ERR_NOMEM;
    const uint8_t *p = buf;
    while (len && r == 0) {
        size_t n = (size_t)qc_min(len, img->cluster_size - (off & (img->cluster_size - 1)));
        r = write_in_cluster(img, off, p, n, tmp);
        p += n;
        off += n;
        len -= n;
    }
    free(tmp);
    return r;
}

/* Does the chain below img read as zeros over [off, off+len)? */
static int below_is_zero(qc_image *img, uint64_t off, uint64_t len, bool *zero)
{
    *zero = true;
    qc_image *b = img->backing;
    if (!b && !img->hdr.backing_name)
        return 0;
    if (!b) {
        *zero = false;
        return 0;
    }
    while (len && off < b->size) {
        uint64_t n, map;
        int fl;
        unsigned depth;
        qc_image *layer;
        int r = qc_chain_status(b, off, qc_min(len, b->size - off), &n, &fl, &map, &depth, &layer);
        if (r < 0)
            return r;
        if (!(fl & QC_BS_ZERO)) {
            *zero = false;
            return 0;
        }
        off += n;
        len -= n;
    }
    return 0;
}

/* Make one whole guest cluster read as zeros without writing data. */
static int zero_cluster(qc_image *img, uint64_t cstart, bool unmap, uint8_t *tmp)
{
    uint64_t l1i, idx, e, bm;
    locate(img, cstart, &l1i, &idx);
    if (img->hdr.version < 3) {
        /* No zero flag: unallocate if below reads zeros, else write zeros. */
        bool z;
        int r = below_is_zero(img, cstart, img->cluster_size, &z);
        if (r < 0)
            return r;
        if (!z)
            return write_in_cluster(img, cstart, NULL, (size_t)img->cluster_size, tmp);
        uint8_t *l2t;
        if (!(img->l1[l1i] & QC_OFFSET_MASK))
            return 0;
        if ((r = entry_for_write(img, cstart, &l2t, &idx, &e, &bm)) < 0)
            return r;
        if (!e)
            return 0;
        set_entry(img, l2t, idx, 0, 0);
        return qc_unref_entry(img, e);
    }
    uint8_t *l2;
    int r = entry_for_write(img, cstart, &l2, &idx, &e, &bm);
    if (r < 0)
        return r;
    uint64_t host = e & QC_OFFSET_MASK;
    bool own = owned(e);
    uint64_t ne, nbm = 0;
    bool drop;
    if (own && !unmap) { /* keep the allocation, mark it zero */
        ne = host | QC_OFLAG_COPIED | (img->ext_l2 ? 0 : QC_OFLAG_ZERO);
        nbm = ALL_ZERO;
        drop = false;
    } else {
        ne = img->ext_l2 ? 0 : QC_OFLAG_ZERO;
        nbm = ALL_ZERO;
        drop = true;
    }
    if (ne == e && (!img->ext_l2 || nbm == bm))
        return 0;
    set_entry(img, l2, idx, ne, nbm);
    return drop ? qc_unref_entry(img, e) : 0;
}

/* Zero subclusters [first, last] of an extended-L2 cluster by bitmap only. */
static int zero_subclusters(qc_image *img, uint64_t cstart, unsigned first, unsigned last)
{
    uint8_t *l2;
    uint64_t idx, e, bm;
    int r = entry_for_write(img, cstart, &l2, &idx, &e, &bm);
    if (r < 0)
        return r;
    if (e & QC_OFLAG_COMPRESSED)
        return 1; /* caller writes zero data instead */
    uint64_t mask = 0;
    for (unsigned i = first; i <= last; i++)
        mask |= 1ull << i;
    uint64_t nbm = (bm & ~mask) | (mask << 32);
    if (nbm != bm)
        set_entry(img, l2, idx, e, nbm);
    return 0;
}

int qc_image_write_zeroes(qc_image *img, uint64_t off, uint64_t len, unsigned flags)
{
    int r = check_range(img, off, len);
    if (r < 0 || !len)
        return r;
    if (img->fmt == QC_FMT_RAW) {
        uint8_t z[65536] = {0};
        while (len && r == 0) {
            size_t n = (size_t)qc_min(len, sizeof(z));
            r = data_write(img, z, n, off);
            off += n;
            len -= n;
        }
        return r;
    }
    uint8_t *tmp = qc_malloc(img->ctx, (size_t)img->cluster_size);
    if (!tmp)
        return QC_ERR_NOMEM;
    uint64_t cs = img->cluster_size, scs = 1ull << img->sc_bits;
    while (len && r == 0) {
        uint64_t cstart = off & ~(cs - 1);
        uint64_t n = qc_min(len, cstart + cs - off);
        bool whole = off == cstart && n == cs;
        if (whole) {
            r = zero_cluster(img, cstart, flags & QC_ZERO_UNMAP, tmp);
        } else if (img->ext_l2 && img->hdr.version >= 3) {
            /* whole subclusters by bitmap, partial ones as data */
            uint64_t a = qc_align_up(off, scs), b = (off + n) & ~(scs - 1);
            if (a < b) {
                r = zero_subclusters(img, cstart, (unsigned)((a - cstart) / scs), (unsigned)((b - cstart) / scs - 1));
                if (r == 1)
                    r = write_in_cluster(img, off, NULL, (size_t)n, tmp);
                else {
                    if (r == 0 && a > off)
                        r = write_in_cluster(img, off, NULL, (size_t)(a - off), tmp);
                    if (r == 0 && off + n > b)
                        r = write_in_cluster(img, b, NULL, (size_t)(off + n - b), tmp);
                }
            } else {
                r = write_in_cluster(img, off, NULL, (size_t)n, tmp);
            }
        } else {
            r = write_in_cluster(img, off, NULL, (size_t)n, tmp);
        }
        off += n;
        len -= n;
    }
    free(tmp);
    return r;
}

int qc_image_discard(qc_image *img, uint64_t off, uint64_t len)
{
    int r = check_range(img, off, len);
    if (r < 0 || !len)
        return r;
    if (img->fmt == QC_FMT_RAW)
        return 0; /* advisory; a raw file keeps its data */
    /* As QEMU: v2 images with a backing file cannot discard (data would show through). */
    if (img->hdr.version < 3 && img->hdr.backing_name)
        return 0;
    uint64_t cs = img->cluster_size;
    uint64_t a = qc_align_up(off, cs), b = (off + len) & ~(cs - 1);
    if (off + len == img->size && (img->size & (cs - 1)))
        b = off + len > a ? qc_align_up(off + len, cs) : b; /* the partial last cluster */
    for (uint64_t c = a; c < b && r == 0; c += cs) {
        uint64_t l1i, idx, e, bm;
        locate(img, c, &l1i, &idx);
        if (!(img->l1[l1i] & QC_OFFSET_MASK) && !img->hdr.backing_name)
            continue;
        uint8_t *l2;
        if ((r = entry_for_write(img, c, &l2, &idx, &e, &bm)) < 0)
            break;
        bool allocated = (e & QC_OFLAG_COMPRESSED) || (e & QC_OFFSET_MASK);
        uint64_t ne = e, nbm = bm;
        if (img->hdr.backing_name || allocated) {
            if (img->ext_l2) {
                ne = 0;
                nbm = ALL_ZERO;
            } else {
                ne = img->hdr.version >= 3 ? QC_OFLAG_ZERO : 0;
            }
        }
        if (ne == e && nbm == bm)
            continue;
        set_entry(img, l2, idx, ne, nbm);
        r = qc_unref_entry(img, e);
    }
    return r;
}

/* copy_file_range src -> img, falling back to read and write. */
static int copy_bytes(qc_image *img, int src_fd, const char *src_name, uint64_t src_off, uint64_t dst,
                      uint64_t len, uint8_t *tmp, size_t tmpsz)
{
    qc_ctx *ctx = img->ctx;
    uint64_t done = 0;
    int r = qc_overlap_check(img, dst, len, QC_META_DATA);
    if (r < 0)
        return r;
    img->unsynced = true;
    /* in steps, so that writeback of one overlaps the copy of the next */
    while (done < len) {
        ssize_t n = ctx->io->copy_range(ctx->io_user, src_fd, src_off + done, img->fd, dst + done,
                                        (size_t)qc_min(len - done, ctx->copy_step));
        if (n <= 0)
            break;
        done += (uint64_t)n;
        qc_copied(img, (uint64_t)n);
    }
    /* No in-kernel copy here (or a source shorter than claimed): plain read and write. */
    while (done < len) {
        size_t k = (size_t)qc_min(len - done, tmpsz);
        r = qc_pread_full(ctx, src_fd, src_name, tmp, k, src_off + done);
        if (r == 0)
            r = data_write(img, tmp, k, dst + done);
        if (r < 0)
            return r;
        done += k;
        qc_copied(img, k);
    }
    return 0;
}

/*
 * Point n whole guest clusters from cstart at clusters holding the bytes
 * of src_fd at src_off (contiguous), copied with copy_file_range: a
 * reflink or server-side copy where the filesystem can do it. New
 * clusters are allocated as one run so that one call moves them all.
 */
int qc_write_clusters_copy(qc_image *img, uint64_t cstart, uint64_t n, int src_fd, const char *src_name,
                           uint64_t src_off, uint8_t *tmp, size_t tmpsz)
{
    uint64_t cs = img->cluster_size;
    while (n) {
        /* a run inside one L2 table whose clusters are all fresh or all owned */
        uint8_t *l2;
        uint64_t l1i, idx, e, bm;
        locate(img, cstart, &l1i, &idx);
        int r = entry_for_write(img, cstart, &l2, &idx, &e, &bm);
        if (r < 0)
            return r;
        uint64_t room = qc_min(n, (1ull << img->l2_bits) - idx);
        bool own = owned(e);
        uint64_t k = 1;
        while (k < room) {
            uint64_t e2, bm2;
            qc_l2_entry(img, l2, idx + k, &e2, &bm2);
            if ((r = check_entry(img, cstart + k * cs, e2, bm2)) < 0)
                return r;
            bool own2 = owned(e2);
            /* a run of fresh clusters, or of owned ones contiguous on the host */
            if (own != own2 || (own && (e2 & QC_OFFSET_MASK) != (e & QC_OFFSET_MASK) + k * cs))
                break;
            k++;
        }
        uint64_t host;
        if (own)
            host = e & QC_OFFSET_MASK;
        else if ((r = qc_alloc_clusters(img, k, &host)) < 0)
            return r;
        if ((r = copy_bytes(img, src_fd, src_name, src_off, host, k * cs, tmp, tmpsz)) < 0)
            return r;
        if ((r = qc_cache_get(img, &img->l2c, img->l1[l1i] & QC_OFFSET_MASK, &l2, "L2 table")) < 0)
            return r;
        for (uint64_t i = 0; i < k; i++) {
            uint64_t old, obm;
            qc_l2_entry(img, l2, idx + i, &old, &obm);
            set_entry(img, l2, idx + i, (host + i * cs) | QC_OFLAG_COPIED, img->ext_l2 ? ALL_ALLOC : 0);
            if (!own && (r = qc_unref_entry(img, old)) < 0)
                return r;
        }
        cstart += k * cs;
        src_off += k * cs;
        n -= k;
    }
    return 0;
}
