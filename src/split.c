/*
 * split.c - the guest view of one internal snapshot as a qcow2 file of
 * its own, standalone or on a backing file that shows another snapshot of
 * the same image.
 *
 * Two L2 entries naming the same host cluster hold the same data, so the
 * snapshot is compared with the backing's snapshot table by table, entry
 * by entry, and only clusters whose entries differ are read: an L1 entry
 * both share skips a whole L2 range unread.
 *
 * Next to a running QEMU (shared lock only) this is safe because of what
 * QEMU does to a snapshot's clusters: none. Every cluster a snapshot
 * references is either its alone (refcount 1, and no active table points
 * at it, so no guest write reaches it) or shared (refcount > 1, and QEMU
 * copies a shared cluster before writing, never rewriting it in place).
 * QEMU changes only COPIED flags in a snapshot's L2 tables, which the
 * comparison masks. What can still happen is that the snapshot is deleted
 * meanwhile (QMP snapshot-delete or delvm): its clusters are then freed and
 * may be reused for new data. So the snapshot's table entry (ID, name, L1
 * table, date) is read again after the copy; if it is gone or different,
 * the new file is dropped and the split fails.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct split_stats {
    uint64_t clusters, compared, ranges_skipped, copied, zeroed, bytes_read;
} split_stats;

/* An L1 table and the size it describes: a snapshot's, or the active one. */
typedef struct view {
    uint64_t *l1;
    uint32_t l1_size;
    uint64_t size;
} view;

static int entry_at(qc_image *img, const view *v, uint64_t c, uint64_t *e, uint64_t *bm)
{
    uint64_t l1i = c >> img->l2_bits;
    *e = *bm = 0;
    if (l1i >= v->l1_size || !(v->l1[l1i] & QC_OFFSET_MASK))
        return 0;
    uint8_t *l2;
    uint64_t off = v->l1[l1i] & QC_OFFSET_MASK;
    if ((off & (img->cluster_size - 1)) || qc_past(off, img->cluster_size, img->file_size))
        return qc_fail(img->ctx, QC_ERR_FORMAT, 0, img->filename, "split", "'%s': corrupt image: L2 table offset %#llx",
                       img->filename, (unsigned long long)off);
    int r = qc_cache_get(img, &img->l2c, off, &l2, "L2 table");
    if (r == 0) {
        qc_l2_entry(img, l2, c & ((1ull << img->l2_bits) - 1), e, bm);
        *e &= ~QC_OFLAG_COPIED; /* the one bit QEMU may change under us */
    }
    return r;
}

/* Read guest cluster c of view v (through the image's backing chain). */
static int read_view(qc_image *img, const view *v, uint64_t c, uint8_t *buf, size_t n, split_stats *st)
{
    uint64_t *l1 = img->l1, size = img->size;
    uint32_t l1n = img->l1_size;
    img->l1 = v->l1;
    img->l1_size = v->l1_size;
    img->size = v->size;
    int r = qc_image_read(img, buf, c << img->cluster_bits, n);
    img->l1 = l1;
    img->l1_size = l1n;
    img->size = size;
    st->bytes_read += n;
    return r;
}

/*
 * Write the clusters of s that differ from b into out (an open image of
 * the same cluster size and L2 kind, empty, whose backing shows b; b = NULL:
 * out shows what the source's backing shows).
 */
static int copy_diff(qc_image *src, const view *s, const view *b, qc_image *out, split_stats *st)
{
    qc_ctx *ctx = src->ctx;
    uint64_t cs = src->cluster_size, per = 1ull << src->l2_bits;
    uint64_t n = (s->size + cs - 1) >> src->cluster_bits;
    size_t tmpsz = 1 << 20;
    uint8_t *buf = qc_malloc(ctx, (size_t)cs), *tmp = qc_malloc(ctx, tmpsz);
    int r = buf && tmp ? 0 : QC_ERR_NOMEM;
    qc_meter m;
    qc_meter_start(ctx, &m, s->size);
    st->clusters = n;
    uint64_t run_c = 0, run_h = 0, run_n = 0; /* contiguous normal clusters pending */
    for (uint64_t c = 0; c < n && r == 0;) {
        uint64_t l1i = c >> src->l2_bits;
        uint64_t se = l1i < s->l1_size ? s->l1[l1i] & QC_OFFSET_MASK : 0;
        uint64_t be = b && l1i < b->l1_size ? b->l1[l1i] & QC_OFFSET_MASK : 0;
        uint64_t range_end = qc_min(n, (l1i + 1) * per);
        bool in_b = !b || (range_end << src->cluster_bits) <= b->size;
        if (se == be && in_b) {
            /* the same L2 table, or both unallocated: nothing differs in this range */
            st->ranges_skipped++;
            r = qc_meter_add(ctx, &m, (range_end - c) * cs, src->filename);
            c = range_end;
            continue;
        }
        for (; c < range_end && r == 0; c++) {
            uint64_t e, bm, x = 0, xbm = 0;
            if ((r = entry_at(src, s, c, &e, &bm)) < 0 || (b && (r = entry_at(src, b, c, &x, &xbm)) < 0))
                break;
            st->compared++;
            bool past_b = b && ((c + 1) << src->cluster_bits) > b->size;
            if (e == x && bm == xbm && !past_b)
                continue; /* same host cluster or same zero/unallocated state: same data */
            uint64_t host = e & QC_OFFSET_MASK;
            uint64_t len = qc_min(cs, s->size - (c << src->cluster_bits));
            bool normal = !(e & QC_OFLAG_COMPRESSED) && host &&
                          (src->ext_l2 ? bm == 0xffffffffull : !(e & QC_OFLAG_ZERO)) && len == cs;
            if (normal) {
                if (run_n && (run_c + run_n != c || run_h + run_n * cs != host)) {
                    r = qc_write_clusters_copy(out, run_c << src->cluster_bits, run_n, src->data_fd, src->filename,
                                               run_h, tmp, tmpsz);
                    st->bytes_read += run_n * cs;
                    st->copied += run_n;
                    run_n = 0;
                }
                if (!run_n) {
                    run_c = c;
                    run_h = host;
                }
                run_n++;
                continue;
            }
            if ((r = read_view(src, s, c, buf, (size_t)len, st)) < 0)
                break;
            if (qc_buf_is_zero(buf, (size_t)len)) {
                if (past_b && (!b || (c << src->cluster_bits) >= b->size))
                    continue; /* past the backing's end a new file reads zeros anyway */
                r = qc_image_write_zeroes(out, c << src->cluster_bits, len, 0);
                st->zeroed++;
            } else {
                r = qc_image_write(out, buf, c << src->cluster_bits, (size_t)len);
                st->copied++;
            }
        }
        if (r == 0)
            r = qc_meter_add(ctx, &m, 0, src->filename);
    }
    if (r == 0 && run_n) {
        r = qc_write_clusters_copy(out, run_c << src->cluster_bits, run_n, src->data_fd, src->filename, run_h, tmp,
                                   tmpsz);
        st->bytes_read += run_n * cs;
        st->copied += run_n;
    }
    free(buf);
    free(tmp);
    return r;
}

/* The view of snapshot id_or_name (NULL: the active image). */
static int get_view(qc_image *img, const char *id_or_name, view *v, int *index)
{
    memset(v, 0, sizeof(*v));
    *index = -1;
    if (!id_or_name) {
        int r = qc_image_load_tables(img);
        if (r < 0)
            return r;
        v->l1 = qc_calloc(img->ctx, (size_t)img->l1_size + 1, 8);
        if (!v->l1)
            return QC_ERR_NOMEM;
        memcpy(v->l1, img->l1, (size_t)img->l1_size * 8);
        v->l1_size = img->l1_size;
        v->size = img->size;
        return 0;
    }
    int i = qc_snapshot_find(img, id_or_name);
    if (i < 0) {
        char b[300];
        return qc_fail(img->ctx, QC_ERR_NOTFOUND, ENOENT, img->filename, "split", "'%s': snapshot '%s' does not exist",
                       img->filename, qc_printable(id_or_name, b, sizeof(b)));
    }
    *index = i;
    v->l1_size = img->snaps[i].l1_size;
    v->size = img->snaps[i].disk_size;
    return qc_snapshot_l1(img, &img->snaps[i], &v->l1);
}

/* Is snapshot s still in the file's table, unchanged? (It may have been deleted meanwhile.) */
static int still_there(qc_ctx *ctx, const char *path, const qc_snapshot *s)
{
    qc_image *img;
    int r = qc_image_open(ctx, &img, path, NULL, QC_OPEN_NO_BACKING | QC_OPEN_SHARE);
    if (r < 0)
        return r;
    int i = qc_snapshot_find(img, s->id);
    const qc_snapshot *t = i >= 0 ? &img->snaps[i] : NULL;
    bool same = t && !strcmp(t->id, s->id) && !strcmp(t->name, s->name) && t->l1_offset == s->l1_offset &&
                t->l1_size == s->l1_size && t->date_sec == s->date_sec && t->date_nsec == s->date_nsec &&
                !(img->hdr.incompat & QC_INCOMPAT_CORRUPT);
    qc_image_close(img);
    if (!same)
        r = qc_fail(ctx, QC_ERR_BUSY, 0, path, "split",
                    "'%s': snapshot '%s' was deleted or replaced while it was copied; the copy is dropped", path, s->name);
    return r;
}

static json_object *stats_json(const split_stats *st, uint64_t cs)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "clusters", json_object_new_int64((int64_t)st->clusters));
    json_object_object_add(o, "cluster-size", json_object_new_int64((int64_t)cs));
    json_object_object_add(o, "compared-entries", json_object_new_int64((int64_t)st->compared));
    json_object_object_add(o, "skipped-tables", json_object_new_int64((int64_t)st->ranges_skipped));
    json_object_object_add(o, "copied-clusters", json_object_new_int64((int64_t)st->copied));
    json_object_object_add(o, "zeroed-clusters", json_object_new_int64((int64_t)st->zeroed));
    json_object_object_add(o, "bytes-read", json_object_new_int64((int64_t)st->bytes_read));
    return o;
}

int qc_split_to(qc_image *src, const char *snap, const char *base, const char *tmp, const char *backing,
                const char *backing_fmt, json_object **stats)
{
    qc_ctx *ctx = src->ctx;
    view s, b;
    int si, bi;
    split_stats st = {0};
    bool has_base = base != NULL;
    int r = get_view(src, snap, &s, &si);
    if (r < 0)
        return r;
    memset(&b, 0, sizeof(b));
    if (has_base && (r = get_view(src, *base ? base : NULL, &b, &bi)) < 0) {
        free(s.l1);
        return r;
    }
    qc_create_opts o;
    qc_create_opts_init(&o);
    o.size = s.size;
    o.cluster_size = (uint32_t)src->cluster_size;
    o.extended_l2 = src->ext_l2;
    o.compression_type = src->hdr.compression_type;
    o.refcount_bits = qc_max(src->refcount_bits, 16); /* room for later snapshots */
    /* no base: the new file reads what the source's own backing file shows */
    o.backing = has_base ? backing : src->hdr.backing_name;
    o.backing_fmt = has_base ? backing_fmt : src->hdr.backing_fmt;
    o.backing_unchecked = true;
    qc_image *out = NULL;
    r = qc_create_direct(ctx, tmp, &o);
    if (r == 0)
        r = qc_image_open(ctx, &out, tmp, "qcow2", QC_OPEN_RDWR | QC_OPEN_NO_BACKING);
    if (r == 0)
        r = qc_write_prepare(out);
    if (r == 0)
        r = copy_diff(src, &s, has_base ? &b : NULL, out, &st);
    if (r == 0)
        r = qc_image_flush(out);
    qc_image_close(out);
    if (r < 0 && si >= 0 && r != QC_ERR_NOMEM) {
        /* tables that turned to garbage mid-copy: say why, if the snapshot went meanwhile */
        qc_error e;
        qc_err_keep(ctx, &e);
        if (still_there(ctx, src->filename, &src->snaps[si]) == 0)
            qc_err_restore(ctx, &e, r);
    } else if (r == 0 && si >= 0) {
        r = still_there(ctx, src->filename, &src->snaps[si]);
    }
    if (r == 0 && has_base && bi >= 0)
        r = still_there(ctx, src->filename, &src->snaps[bi]);
    if (r == 0 && stats)
        *stats = stats_json(&st, src->cluster_size);
    free(s.l1);
    free(b.l1);
    return r;
}

int qc_snapshot_split(qc_ctx *ctx, json_object **stats, const char *path, const char *snap, const char *out,
                      const qc_split_opts *so)
{
    if (stats)
        *stats = NULL;
    if (so && so->base && (!so->backing || !so->backing_fmt))
        return qc_fail(ctx, QC_ERR_INVALID, 0, out, "split", "'%s': a base needs the backing file name and format", out);
    qc_image *src;
    int r = qc_image_open(ctx, &src, path, NULL, QC_OPEN_SHARE);
    if (r < 0)
        return r;
    if (src->fmt != QC_FMT_QCOW2) {
        qc_image_close(src);
        return qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "split", "'%s' is not a qcow2 image", path);
    }
    size_t n = strlen(out) + 64;
    char *tmp = qc_malloc(ctx, n);
    if (!tmp) {
        qc_image_close(src);
        return QC_ERR_NOMEM;
    }
    const char *slash = strrchr(out, '/');
    int dl = slash ? (int)(slash - out) + 1 : 0;
    snprintf(tmp, n, "%.*s.%s.split-%d", dl, out, out + dl, (int)getpid());
    struct stat st;
    if (ctx->io->stat(ctx->io_user, out, &st) == 0) {
        r = qc_fail(ctx, QC_ERR_EXISTS, EEXIST, out, "split", "'%s' already exists", out);
    } else {
        ctx->io->unlink(ctx->io_user, tmp);
        r = qc_split_to(src, snap, so ? so->base : NULL, tmp, so ? so->backing : NULL, so ? so->backing_fmt : NULL,
                        stats);
        if (r == 0)
            r = qc_commit_temp(ctx, tmp, out);
        if (r < 0) {
            qc_error e;
            qc_err_keep(ctx, &e);
            ctx->io->unlink(ctx->io_user, tmp);
            qc_err_restore(ctx, &e, r);
            if (stats) {
                json_object_put(*stats);
                *stats = NULL;
            }
        }
    }
    free(tmp);
    qc_image_close(src);
    return r;
}
