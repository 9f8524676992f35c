/* cluster.c - L1/L2 lookup, refcount lookup, compressed clusters. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define corrupt(img, fmt, ...)                                                  \
    qc_fail((img)->ctx, QC_ERR_FORMAT, 0, (img)->filename, "read",              \
            "'%s': corrupt image: " fmt, (img)->filename, __VA_ARGS__)

/* L2 table of the L1 entry covering guest offset off; NULL table = unallocated. */
static int get_l2(qc_image *img, uint64_t l1i, uint8_t **l2)
{
    *l2 = NULL;
    if (l1i >= img->l1_size)
        return 0;
    uint64_t off = img->l1[l1i] & QC_OFFSET_MASK;
    if (!off)
        return 0;
    if (off & (img->cluster_size - 1))
        return corrupt(img, "L2 table offset %#llx is not cluster aligned (L1 index %llu)", (unsigned long long)off, (unsigned long long)l1i);
    return qc_cache_get(img, &img->l2c, off, l2, "L2 table");
}

const char *qc_classify(const qc_image *img, uint64_t e, uint64_t bm, unsigned sc,
                        int *kind, uint64_t *host)
{
    bool data_file = img->hdr.incompat & QC_INCOMPAT_DATA_FILE;
    *host = e & QC_OFFSET_MASK;
    if (e & QC_OFLAG_COMPRESSED) {
        *kind = QC_SC_COMPRESSED;
        *host = e & ~(QC_OFLAG_COPIED | QC_OFLAG_COMPRESSED);
        return NULL;
    }
    bool has_host = *host || (data_file && (e & QC_OFLAG_COPIED));
    if (has_host && (*host & (img->cluster_size - 1)))
        return "cluster offset is not cluster aligned";
    if (!img->ext_l2) {
        if (e & QC_OFLAG_ZERO)
            *kind = has_host ? QC_SC_ZERO_ALLOC : QC_SC_ZERO;
        else
            *kind = has_host ? QC_SC_NORMAL : QC_SC_UNALLOC;
        return NULL;
    }
    uint32_t alloc = (uint32_t)bm, zero = (uint32_t)(bm >> 32);
    if (has_host) {
        if (alloc & zero)
            return "subcluster is both allocated and zero";
        if (zero >> sc & 1)
            *kind = QC_SC_ZERO_ALLOC;
        else if (alloc >> sc & 1)
            *kind = QC_SC_NORMAL;
        else
            *kind = QC_SC_UNALLOC_ALLOC;
    } else {
        if (alloc)
            return "allocated subclusters without a host cluster";
        *kind = (zero >> sc & 1) ? QC_SC_ZERO : QC_SC_UNALLOC;
    }
    return NULL;
}

void qc_l2_entry(const qc_image *img, const uint8_t *l2, uint64_t i, uint64_t *e, uint64_t *bm)
{
    const uint8_t *p = l2 + i * img->l2_entry_size;
    *e = qc_be64(p);
    *bm = img->ext_l2 ? qc_be64(p + 8) : 0;
}

/*
 * The one parser of a compressed cluster descriptor (QEMU's layout): the
 * compressed data starts at host byte *off and runs to the end of its
 * last 512-byte sector, *len bytes from *off. e: the L2 entry or the
 * descriptor (the flag bits are ignored).
 */
static void compressed_desc(const qc_image *img, uint64_t e, uint64_t *off, uint64_t *len)
{
    uint32_t x = 62 - (img->cluster_bits - 8);
    e &= ~(QC_OFLAG_COPIED | QC_OFLAG_COMPRESSED);
    *off = e & ((1ull << x) - 1);
    uint64_t sectors = ((e >> x) & ((1ull << (img->cluster_bits - 8)) - 1)) + 1;
    *len = sectors * 512 - (*off & 511);
}

void qc_compressed_range(const qc_image *img, uint64_t e, uint64_t *off, uint64_t *len)
{
    compressed_desc(img, e, off, len);
    *len += *off & 511;
    *off &= ~511ull;
}

int qc_extent(qc_image *img, uint64_t off, uint64_t max, uint64_t *len,
              int *kind, uint64_t *host)
{
    uint64_t end = qc_min(img->size, off + max);
    if (img->fmt == QC_FMT_RAW) {
        *kind = QC_SC_NORMAL;
        *host = off;
        *len = end - off;
        return 0;
    }
    uint32_t cover_bits = img->cluster_bits + img->l2_bits;
    uint64_t l1i = off >> cover_bits;
    uint8_t *l2;
    int r = img->l1 ? 0 : qc_image_load_tables(img);
    if (r == 0)
        r = get_l2(img, l1i, &l2);
    if (r < 0)
        return r;
    if (!l2) {
        /* Whole L2 ranges unallocated: run on over empty L1 entries. */
        uint64_t i = l1i + 1;
        while (i < img->l1_size && (i << cover_bits) < end && !(img->l1[i] & QC_OFFSET_MASK))
            i++;
        *kind = QC_SC_UNALLOC;
        *host = 0;
        *len = qc_min(end, i << cover_bits) - off;
        return 0;
    }
    uint64_t table_end = qc_min(end, (l1i + 1) << cover_bits);
    uint64_t entries = 1ull << img->l2_bits;
    uint64_t ci = (off >> img->cluster_bits) & (entries - 1);
    unsigned sc = (unsigned)((off >> img->sc_bits) & ((1u << (img->cluster_bits - img->sc_bits)) - 1));
    uint64_t e, bm, h0;
    qc_l2_entry(img, l2, ci, &e, &bm);
    const char *why = qc_classify(img, e, bm, sc, kind, &h0);
    if (why)
        return corrupt(img, "%s (guest offset %#llx, L2 entry %#llx)", why, (unsigned long long)((l1i << cover_bits) + (ci << img->cluster_bits)), (unsigned long long)e);
    uint64_t scs = 1ull << img->sc_bits;
    /* Walk on subcluster by subcluster while the kind (and host contiguity) holds. */
    uint64_t pos = (off & ~(scs - 1)) + scs;
    if (*kind == QC_SC_COMPRESSED) {
        pos = (off & ~(img->cluster_size - 1)) + img->cluster_size;
        *host = h0;
    } else {
        bool hosted = *kind == QC_SC_NORMAL || *kind == QC_SC_ZERO_ALLOC || *kind == QC_SC_UNALLOC_ALLOC;
        uint64_t cstart = off & ~(img->cluster_size - 1);
        *host = hosted ? h0 + (off - cstart) : 0;
        while (pos < table_end) {
            uint64_t c = (pos >> img->cluster_bits) & (entries - 1);
            unsigned s = (unsigned)((pos >> img->sc_bits) & ((1u << (img->cluster_bits - img->sc_bits)) - 1));
            uint64_t ne, nbm, nh;
            int k;
            qc_l2_entry(img, l2, c, &ne, &nbm);
            if (qc_classify(img, ne, nbm, s, &k, &nh) || k != *kind)
                break;
            if (hosted && nh != h0 + ((pos & ~(img->cluster_size - 1)) - cstart))
                break;
            /* a cluster whose subclusters are all alike is one step, not 32 */
            uint32_t a = (uint32_t)nbm, z = (uint32_t)(nbm >> 32);
            bool uniform = s == 0 && ((a == 0 && z == 0) || (a == 0xffffffffu && z == 0) || (a == 0 && z == 0xffffffffu));
            pos += !img->ext_l2 || uniform || (ne & QC_OFLAG_COMPRESSED) ? img->cluster_size : scs;
        }
    }
    *len = qc_min(pos, table_end) - off;
    return 0;
}

int qc_read_compressed(qc_image *img, uint64_t desc)
{
    if (img->zbuf && img->zbuf_desc == desc)
        return 0;
    uint64_t off, clen;
    compressed_desc(img, desc, &off, &clen);
    if (off >= img->file_size || off < img->cluster_size)
        return corrupt(img, "compressed cluster at %#llx (%llu bytes) lies outside the file", (unsigned long long)off, (unsigned long long)clen);
    if (!img->zbuf && !(img->zbuf = qc_malloc(img->ctx, img->cluster_size)))
        return QC_ERR_NOMEM;
    img->zbuf_desc = 0;
    uint8_t *in = qc_malloc(img->ctx, (size_t)clen);
    if (!in)
        return QC_ERR_NOMEM;
    /* The sector count may overshoot the end of the file: that part reads as zeros. */
    int r = qc_pread_full(img->ctx, img->fd, img->filename, in, (size_t)clen, off);
    if (r == 0)
        r = qc_inflate(img->ctx, img->hdr.compression_type, in, (size_t)clen, img->zbuf,
                       (size_t)img->cluster_size, img->filename);
    free(in);
    if (r == 0)
        img->zbuf_desc = desc;
    return r;
}
