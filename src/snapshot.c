/*
 * snapshot.c - internal snapshots: the image's snapshot table, as
 * `qemu-img snapshot -c/-a/-d/-l` keeps it.
 *
 * Refcounts follow QEMU's convention: a cluster counts once per L1 table
 * (active or snapshot) whose tree reaches it, so taking a snapshot adds one
 * to every L2 table and data cluster of the active tree, and COPIED (bit
 * 63) marks the active entries whose cluster has refcount 1. Every
 * operation is a shadow update (shadow.c): tables whose flags change are
 * written anew, never in place, and one header write makes the new state
 * visible. A crash leaves the image as before or as after, never between.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QC_SNAP_EXTRA 24u     /* the extra data QEMU knows: vm state size, disk size, icount */
#define QC_SNAP_NAME_MAX 255u /* qemu-img keeps at most this much of a name */

int qc_snapshot_find(const qc_image *img, const char *id_or_name)
{
    for (uint32_t i = 0; i < img->nsnaps; i++)
        if (!strcmp(img->snaps[i].id, id_or_name))
            return (int)i;
    for (uint32_t i = 0; i < img->nsnaps; i++)
        if (!strcmp(img->snaps[i].name, id_or_name))
            return (int)i;
    return -1;
}

static int corrupt(qc_image *img, const char *what, uint64_t v)
{
    return qc_fail(img->ctx, QC_ERR_FORMAT, 0, img->filename, "snapshot", "'%s': corrupt image: %s %#llx", img->filename,
                   what, (unsigned long long)v);
}

int qc_snapshot_l1(qc_image *img, const qc_snapshot *s, uint64_t **l1)
{
    uint64_t *t = qc_calloc(img->ctx, (size_t)s->l1_size + 1, 8);
    if (!t)
        return QC_ERR_NOMEM;
    int r = s->l1_size ? qc_pread_exact(img->ctx, img->fd, img->filename, t, (size_t)s->l1_size * 8, s->l1_offset,
                                        "snapshot L1 table")
                       : 0;
    for (uint32_t i = 0; i < s->l1_size; i++)
        t[i] = qc_be64((uint8_t *)&t[i]);
    if (r < 0)
        free(t);
    else
        *l1 = t;
    return r;
}

/* An L2 table offset read from an L1 entry: cluster aligned, past the header, inside the file. */
static int l2_ok(qc_image *img, uint64_t off)
{
    if ((off & (img->cluster_size - 1)) || off < img->cluster_size || qc_past(off, img->cluster_size, img->file_size))
        return corrupt(img, "L2 table offset", off);
    return 0;
}

/*
 * Copy of the L2 table at off: the cached one if loaded (it may be newer
 * than the file), else read straight into buf. A walk reads each table
 * once: filling a cache slot would only cost a fresh buffer's pages.
 */
static int l2_copy(qc_image *img, uint64_t off, uint8_t *buf)
{
    int r = l2_ok(img, off);
    if (r < 0)
        return r;
    const uint8_t *t = qc_cache_peek(&img->l2c, off);
    if (t) {
        memcpy(buf, t, (size_t)img->cluster_size);
        return 0;
    }
    return qc_pread_exact(img->ctx, img->fd, img->filename, buf, (size_t)img->cluster_size, off, "L2 table");
}

/*
 * The L2 table buf written at a new cluster y, at once: nothing reads it
 * before the commit, which makes it durable with the rest.
 */
static int l2_write_new(qc_image *img, const uint8_t *buf, uint64_t *y)
{
    uint64_t cs = img->cluster_size;
    int r = qc_alloc_clusters(img, 1, y);
    if (r == 0)
        r = qc_overlap_check(img, *y, cs, QC_META_DATA);
    if (r < 0)
        return r;
    qc_cache_forget(&img->l2c, *y);
    r = qc_pwrite_full(img->ctx, img->fd, img->filename, buf, (size_t)cs, *y);
    img->unsynced = true;
    if (r == 0)
        qc_meta_added(img, *y, QC_META_L2);
    return r;
}

/*
 * Add delta to the refcounts of the clusters the entries of L2 table t
 * reach, in runs of contiguous clusters: data written in order lies in
 * order, so a table of 8192 entries is typically a few updates of a
 * refcount block, not 8192 lookups.
 */
static int table_ref(qc_image *img, const uint8_t *t, int delta)
{
    uint64_t cs = img->cluster_size, end = qc_align_up(img->file_size, cs), first = 0, n = 0;
    int r;
    for (uint64_t j = 0; j < 1ull << img->l2_bits; j++) {
        uint64_t e = qc_be64(t + j * img->l2_entry_size), off = e & QC_OFFSET_MASK, len = cs;
        if (e & QC_OFLAG_COMPRESSED)
            qc_compressed_range(img, e, &off, &len);
        else if (!off)
            continue;
        else if (off & (cs - 1))
            return corrupt(img, "data cluster offset", off);
        if (off < cs || qc_past(off, len, end))
            return corrupt(img, "data cluster offset", off);
        uint64_t c = off >> img->cluster_bits, k = ((off + len - 1) >> img->cluster_bits) - c + 1;
        if (n && c == first + n) {
            n += k;
            continue;
        }
        if (n && (r = qc_refcount_add_run(img, first, n, delta)) < 0)
            return r;
        first = c;
        n = k;
    }
    return n ? qc_refcount_add_run(img, first, n, delta) : 0;
}

/* Add delta to every L2 table and data cluster the L1 table l1 reaches. */
static int tree_ref(qc_image *img, const uint64_t *l1, uint64_t n, int delta, uint8_t *buf, qc_meter *m)
{
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = l1[i] & QC_OFFSET_MASK;
        int r = qc_meter_add(img->ctx, m, 1ull << (img->cluster_bits + img->l2_bits), img->filename);
        if (!off || r < 0) {
            if (r < 0)
                return r;
            continue;
        }
        if ((r = l2_copy(img, off, buf)) < 0 || (r = table_ref(img, buf, delta)) < 0 ||
            (r = qc_refcount_add(img, off >> img->cluster_bits, delta)) < 0)
            return r;
    }
    return 0;
}

/* Add delta to the clusters of [off, off+len) (a table). */
static int range_ref(qc_image *img, uint64_t off, uint64_t len, int delta)
{
    uint64_t c = off >> img->cluster_bits;
    return len ? qc_refcount_add_run(img, c, ((off + len - 1) >> img->cluster_bits) - c + 1, delta) : 0;
}

/* A new table of n host-endian entries in free clusters. */
static int write_table(qc_image *img, const uint64_t *t, uint64_t n, uint64_t *at)
{
    uint64_t bytes = qc_align_up(qc_max(n, 1) * 8, img->cluster_size);
    int r = qc_alloc_clusters(img, bytes >> img->cluster_bits, at);
    if (r == 0)
        r = qc_overlap_check(img, *at, n * 8, QC_META_DATA);
    return r < 0 ? r : qc_write_u64s(img, t, n, *at);
}

static size_t entry_size(const qc_snapshot *s)
{
    return (size_t)qc_align_up(40 + qc_max(QC_SNAP_EXTRA, s->extra_len) + strlen(s->id) + strlen(s->name), 8);
}

/*
 * The snapshot table of v[0..n) in new clusters, as QEMU writes it: the
 * known extra data in full, unknown extra data after it kept verbatim.
 */
static int write_snap_table(qc_image *img, const qc_snapshot *v, uint32_t n, uint64_t *at, uint64_t *bytes)
{
    size_t len = 0;
    *at = 0;
    *bytes = 0;
    for (uint32_t i = 0; i < n; i++)
        len += entry_size(&v[i]);
    if (!n)
        return 0;
    if (len > QC_MAX_SNAPSHOT_TABLE)
        return qc_fail(img->ctx, QC_ERR_NOSPC, 0, img->filename, "snapshot", "'%s': snapshot table would be too large",
                       img->filename);
    uint8_t *b = qc_calloc(img->ctx, 1, len);
    if (!b)
        return QC_ERR_NOMEM;
    uint8_t *p = b;
    for (uint32_t i = 0; i < n; i++) {
        const qc_snapshot *s = &v[i];
        uint32_t extra = (uint32_t)qc_max(QC_SNAP_EXTRA, s->extra_len);
        size_t il = strlen(s->id), nl = strlen(s->name);
        qc_put64(p, s->l1_offset);
        qc_put32(p + 8, s->l1_size);
        qc_put16(p + 12, (uint16_t)il);
        qc_put16(p + 14, (uint16_t)nl);
        qc_put32(p + 16, s->date_sec);
        qc_put32(p + 20, s->date_nsec);
        qc_put64(p + 24, s->vm_clock_ns);
        /* a state too large for 32 bits reads as none to old readers, as QEMU writes it */
        qc_put32(p + 32, s->vm_state_size <= 0xffffffffu ? (uint32_t)s->vm_state_size : 0);
        qc_put32(p + 36, extra);
        qc_put64(p + 40, s->vm_state_size);
        qc_put64(p + 48, s->disk_size);
        qc_put64(p + 56, s->has_icount ? s->icount : UINT64_MAX);
        if (s->extra_len > QC_SNAP_EXTRA)
            memcpy(p + 40 + QC_SNAP_EXTRA, s->extra + QC_SNAP_EXTRA, s->extra_len - QC_SNAP_EXTRA);
        memcpy(p + 40 + extra, s->id, il);
        memcpy(p + 40 + extra + il, s->name, nl);
        p += entry_size(s);
    }
    int r = qc_alloc_clusters(img, qc_align_up(len, img->cluster_size) >> img->cluster_bits, at);
    if (r == 0)
        r = qc_overlap_check(img, *at, len, QC_META_DATA);
    if (r == 0)
        r = qc_pwrite_full(img->ctx, img->fd, img->filename, b, len, *at);
    img->unsynced = true;
    free(b);
    *bytes = len;
    return r;
}

/* The snapshot table without entry skip (-1: all), with extra appended (NULL: none). */
static int new_snap_table(qc_image *img, int skip, const qc_snapshot *extra, qc_switch *sw)
{
    uint32_t n = 0;
    qc_snapshot *v = qc_calloc(img->ctx, img->nsnaps + 1, sizeof(*v));
    if (!v)
        return QC_ERR_NOMEM;
    for (uint32_t i = 0; i < img->nsnaps; i++)
        if ((int)i != skip)
            v[n++] = img->snaps[i];
    if (extra)
        v[n++] = *extra;
    uint64_t bytes;
    int r = write_snap_table(img, v, n, &sw->snapshots_offset, &bytes);
    free(v);
    /* the old table is free once the header points at the new one */
    if (r == 0 && img->hdr.nb_snapshots)
        r = range_ref(img, img->hdr.snapshots_offset, img->snap_table_bytes, -1);
    sw->snapshots = true;
    sw->nb_snapshots = n;
    return r;
}

/* ---- create ---------------------------------------------------------- */

/*
 * The snapshot keeps the committed active L1 table and the L2 tables it
 * points to. The active image gets a new L1 table; each of its L2 tables
 * that still marks clusters COPIED is written anew without the flag (the
 * snapshot's copy keeps it: flags of inactive tables mean nothing, QEMU and
 * apply recompute them), the others are shared.
 */
static int do_create(qc_image *img, qc_snapshot *sn, qc_switch *sw, uint64_t **out_l1, qc_meter *m)
{
    uint64_t n = img->l1_size, per = 1ull << img->l2_bits, cs = img->cluster_size;
    uint64_t *nl1 = qc_calloc(img->ctx, (size_t)n + 1, 8);
    uint8_t *buf = qc_malloc(img->ctx, (size_t)cs);
    int r = nl1 && buf ? 0 : QC_ERR_NOMEM;
    for (uint64_t i = 0; i < n && r == 0; i++) {
        uint64_t e = img->l1[i], off = e & QC_OFFSET_MASK;
        if ((r = qc_meter_add(img->ctx, m, 1ull << (img->cluster_bits + img->l2_bits), img->filename)) < 0 || !off)
            continue;
        if ((r = l2_copy(img, off, buf)) < 0)
            break;
        if ((r = table_ref(img, buf, 1)) < 0)
            break;
        bool copy = e & QC_OFLAG_COPIED;
        for (uint64_t j = 0; j < per; j++) {
            uint8_t *p = buf + j * img->l2_entry_size;
            uint64_t le = qc_be64(p);
            if (le & QC_OFLAG_COPIED) {
                copy = true;
                qc_put64(p, le & ~QC_OFLAG_COPIED);
            }
        }
        if (!copy) {
            r = qc_refcount_add(img, off >> img->cluster_bits, 1);
            nl1[i] = off;
            continue;
        }
        uint64_t y;
        if ((r = l2_write_new(img, buf, &y)) == 0)
            nl1[i] = y | QC_OFLAG_COPIED;
    }
    if (r == 0 && n)
        r = write_table(img, nl1, n, &sw->l1_offset);
    sw->l1_size = (uint32_t)n;
    sn->l1_offset = n ? img->hdr.l1_offset : 0;
    sn->l1_size = (uint32_t)n;
    if (r == 0)
        r = new_snap_table(img, -1, sn, sw);
    free(buf);
    if (r < 0)
        free(nl1);
    else
        *out_l1 = nl1;
    return r;
}

static int open_rw(qc_ctx *ctx, qc_image **img, const char *path)
{
    int r = qc_image_open(ctx, img, path, NULL, QC_OPEN_RDWR | QC_OPEN_NO_BACKING);
    if (r < 0)
        return r;
    if ((*img)->fmt != QC_FMT_QCOW2) {
        qc_image_close(*img);
        *img = NULL;
        return qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "snapshot",
                       "'%s' is not a qcow2 image; internal snapshots need qcow2", path);
    }
    if ((r = qc_write_prepare(*img)) == 0)
        r = qc_shadow_begin(*img);
    if (r < 0) {
        qc_image_close(*img);
        *img = NULL;
    }
    return r;
}

/* Commit, or forget; then close. */
static int finish(qc_image *img, int r, const qc_switch *sw)
{
    qc_ctx *ctx = img->ctx;
    if (r == 0)
        r = qc_shadow_commit(img, sw);
    else
        qc_shadow_abort(img);
    qc_error e;
    qc_err_keep(ctx, &e);
    if (r < 0)
        img->write_ready = false; /* nothing more reaches the file */
    qc_image_close(img);
    return qc_err_restore(ctx, &e, r);
}

static void replace_l1(qc_image *img, uint64_t *l1, uint32_t n)
{
    free(img->l1);
    img->l1 = l1;
    img->l1_size = n;
    qc_meta_changed(img);
}

int qc_snapshot_create(qc_ctx *ctx, const char *path, const char *name)
{
    return qc_snapshot_create_dated(ctx, path, name, -1);
}

int qc_snapshot_create_dated(qc_ctx *ctx, const char *path, const char *name, int64_t date_sec)
{
    char b[300];
    size_t nl = strlen(name);
    if (!nl || nl > QC_SNAP_NAME_MAX)
        return qc_fail(ctx, QC_ERR_INVALID, 0, path, "snapshot", "'%s': invalid snapshot name '%s' (1 to %u bytes)",
                       path, qc_printable(name, b, sizeof(b)), QC_SNAP_NAME_MAX);
    qc_image *img;
    int r = open_rw(ctx, &img, path);
    if (r < 0)
        return r;
    qc_switch sw = {0};
    uint64_t *nl1 = NULL;
    qc_snapshot sn = {0};
    char id[24];
    if (qc_snapshot_find(img, name) >= 0) {
        r = qc_fail(ctx, QC_ERR_EXISTS, EEXIST, path, "snapshot", "'%s': snapshot '%s' already exists", path,
                    qc_printable(name, b, sizeof(b)));
    } else if (img->nsnaps >= QC_MAX_SNAPSHOTS) {
        r = qc_fail(ctx, QC_ERR_NOSPC, 0, path, "snapshot", "'%s': too many internal snapshots", path);
    } else {
        /* the next ID after the highest, as QEMU numbers them */
        unsigned long max = 0;
        for (uint32_t i = 0; i < img->nsnaps; i++) {
            unsigned long v = strtoul(img->snaps[i].id, NULL, 10);
            max = v > max ? v : max;
        }
        snprintf(id, sizeof(id), "%lu", max + 1);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sn.id = id;
        sn.name = (char *)name;
        sn.date_sec = (uint32_t)(date_sec >= 0 ? date_sec : ts.tv_sec);
        sn.date_nsec = date_sec >= 0 ? 0 : (uint32_t)(ts.tv_nsec / 1000 * 1000); /* QEMU's clock has microseconds */
        sn.disk_size = img->size;
        qc_meter m;
        qc_meter_start(ctx, &m, (uint64_t)img->l1_size << (img->cluster_bits + img->l2_bits)); /* guest bytes walked */
        r = do_create(img, &sn, &sw, &nl1, &m);
    }
    if (r == 0)
        replace_l1(img, nl1, sw.l1_size); /* what the image is after the switch */
    else
        free(nl1);
    return finish(img, r, &sw);
}

/* ---- apply ----------------------------------------------------------- */

/*
 * The active tree becomes the snapshot's: its L2 tables and clusters gain
 * a reference, the old active tree loses one, a new active L1 table points
 * at the snapshot's tables. Every cluster of the new tree is then shared
 * with the snapshot, so no COPIED flag is set anywhere in it; flags the
 * snapshot's tables still carry are cleared in place (the committed image
 * reads those tables only as the snapshot's, where flags mean nothing).
 */
static int do_apply(qc_image *img, const qc_snapshot *s, qc_switch *sw, uint64_t **out_l1, qc_meter *m)
{
    uint64_t per = 1ull << img->l2_bits, cs = img->cluster_size;
    uint64_t cover = 1ull << (img->cluster_bits + img->l2_bits);
    uint64_t need = (s->disk_size + cover - 1) / cover;
    uint64_t n = qc_max(qc_max(img->l1_size, s->l1_size), need);
    if (n * 8 > QC_MAX_L1_BYTES)
        return corrupt(img, "snapshot disk size", s->disk_size);
    uint64_t *sl1 = NULL, *nl1 = qc_calloc(img->ctx, (size_t)n + 1, 8);
    uint8_t *buf = qc_malloc(img->ctx, (size_t)cs);
    int r = nl1 && buf ? qc_snapshot_l1(img, s, &sl1) : QC_ERR_NOMEM;
    for (uint64_t i = 0; i < s->l1_size && r == 0; i++) {
        uint64_t off = sl1[i] & QC_OFFSET_MASK;
        if ((r = qc_meter_add(img->ctx, m, 1ull << (img->cluster_bits + img->l2_bits), img->filename)) < 0 || !off)
            continue;
        if ((r = l2_copy(img, off, buf)) < 0)
            break;
        if ((r = table_ref(img, buf, 1)) < 0)
            break;
        bool flagged = false;
        for (uint64_t j = 0; j < per; j++) {
            uint8_t *p = buf + j * img->l2_entry_size;
            uint64_t le = qc_be64(p);
            flagged |= !!(le & QC_OFLAG_COPIED);
            qc_put64(p, le & ~QC_OFLAG_COPIED);
        }
        if (r == 0 && flagged) {
            uint8_t *t;
            if ((r = qc_cache_get(img, &img->l2c, off, &t, "L2 table")) == 0) {
                memcpy(t, buf, (size_t)cs);
                qc_cache_mark_dirty(&img->l2c, t);
            }
        }
        if (r == 0)
            r = qc_refcount_add(img, off >> img->cluster_bits, 1);
        nl1[i] = off;
    }
    /* the old active tree and its L1 table lose their reference */
    if (r == 0)
        r = tree_ref(img, img->l1, img->l1_size, -1, buf, m);
    if (r == 0)
        r = range_ref(img, img->hdr.l1_offset, (uint64_t)img->l1_size * 8, -1);
    if (r == 0)
        r = write_table(img, nl1, n, &sw->l1_offset);
    sw->l1_size = (uint32_t)n;
    sw->size = s->disk_size;
    free(sl1);
    free(buf);
    if (r < 0)
        free(nl1);
    else
        *out_l1 = nl1;
    return r;
}

static int not_found(qc_ctx *ctx, const char *path, const char *name)
{
    char b[300];
    return qc_fail(ctx, QC_ERR_NOTFOUND, ENOENT, path, "snapshot", "'%s': snapshot '%s' does not exist", path,
                   qc_printable(name, b, sizeof(b)));
}

int qc_snapshot_apply(qc_ctx *ctx, const char *path, const char *id_or_name)
{
    qc_image *img;
    int r = open_rw(ctx, &img, path);
    if (r < 0)
        return r;
    qc_switch sw = {0};
    uint64_t *nl1 = NULL;
    int i = qc_snapshot_find(img, id_or_name);
    if (i < 0)
        r = not_found(ctx, path, id_or_name);
    else {
        qc_meter m;
        qc_meter_start(ctx, &m, ((uint64_t)img->snaps[i].l1_size + img->l1_size) << (img->cluster_bits + img->l2_bits));
        r = do_apply(img, &img->snaps[i], &sw, &nl1, &m);
    }
    if (r == 0)
        replace_l1(img, nl1, sw.l1_size);
    return finish(img, r, &sw);
}

/* ---- delete ---------------------------------------------------------- */

/*
 * After the snapshot's references are gone, active clusters it shared may
 * be down to refcount 1 and need COPIED again. Tables that change are
 * written anew (in place the committed image would show the flag on a
 * cluster it still shares), and so is the L1 table if anything changes.
 */
static int fix_copied(qc_image *img, qc_switch *sw, uint64_t **out_l1, uint8_t *buf, qc_meter *m)
{
    uint64_t n = img->l1_size, per = 1ull << img->l2_bits;
    uint64_t *nl1 = qc_calloc(img->ctx, (size_t)n + 1, 8);
    if (!nl1)
        return QC_ERR_NOMEM;
    memcpy(nl1, img->l1, (size_t)n * 8);
    bool changed = false;
    int r = 0;
    for (uint64_t i = 0; i < n && r == 0; i++) {
        uint64_t e = img->l1[i], off = e & QC_OFFSET_MASK, rc;
        if ((r = qc_meter_add(img->ctx, m, 1ull << (img->cluster_bits + img->l2_bits), img->filename)) < 0 || !off)
            continue;
        if ((r = l2_copy(img, off, buf)) < 0 || (r = qc_refcount_get(img, off >> img->cluster_bits, &rc)) < 0)
            break;
        bool table = false;
        const uint8_t *rb = NULL;
        uint64_t at = UINT64_MAX; /* the range rb covers: no other use of the refcount cache in this loop */
        for (uint64_t j = 0; j < per && r == 0 && rc == 1; j++) {
            uint8_t *p = buf + j * img->l2_entry_size;
            uint64_t le = qc_be64(p), host = le & QC_OFFSET_MASK, c = host >> img->cluster_bits;
            if ((le & QC_OFLAG_COMPRESSED) || !host)
                continue;
            if (c >> img->rb_bits != at && (r = qc_refcount_block(img, at = c >> img->rb_bits, &rb)) < 0)
                break;
            uint64_t drc = rb ? qc_rb_get(img, rb, c & ((1ull << img->rb_bits) - 1)) : 0;
            uint64_t ne = drc == 1 ? le | QC_OFLAG_COPIED : le & ~QC_OFLAG_COPIED;
            if (ne != le) {
                qc_put64(p, ne);
                table = true;
            }
        }
        if (r < 0)
            break;
        uint64_t ne = rc == 1 ? e | QC_OFLAG_COPIED : e & ~QC_OFLAG_COPIED;
        if (table) {
            uint64_t y;
            if ((r = l2_write_new(img, buf, &y)) < 0)
                break;
            r = qc_refcount_add(img, off >> img->cluster_bits, -1);
            ne = y | QC_OFLAG_COPIED;
        }
        if (ne != e) {
            nl1[i] = ne;
            changed = true;
        }
    }
    if (r == 0 && changed) {
        r = write_table(img, nl1, n, &sw->l1_offset);
        if (r == 0)
            r = range_ref(img, img->hdr.l1_offset, n * 8, -1);
        sw->l1_size = (uint32_t)n;
    }
    if (r < 0 || !changed)
        free(nl1);
    else
        *out_l1 = nl1;
    return r;
}

int qc_snapshot_delete(qc_ctx *ctx, const char *path, const char *id_or_name)
{
    qc_image *img;
    int r = open_rw(ctx, &img, path);
    if (r < 0)
        return r;
    qc_switch sw = {0};
    uint64_t *sl1 = NULL, *nl1 = NULL;
    uint8_t *buf = qc_malloc(ctx, (size_t)img->cluster_size);
    int i = qc_snapshot_find(img, id_or_name);
    if (!buf) {
        r = QC_ERR_NOMEM;
    } else if (i < 0) {
        r = not_found(ctx, path, id_or_name);
    } else {
        qc_snapshot *s = &img->snaps[i];
        qc_meter m;
        qc_meter_start(ctx, &m, ((uint64_t)s->l1_size + img->l1_size) << (img->cluster_bits + img->l2_bits));
        /* its tree (VM state included: it lies past the disk in the same tree) and its L1 table */
        if ((r = qc_snapshot_l1(img, s, &sl1)) == 0 && (r = tree_ref(img, sl1, s->l1_size, -1, buf, &m)) == 0 &&
            (r = range_ref(img, s->l1_offset, (uint64_t)s->l1_size * 8, -1)) == 0 &&
            (r = new_snap_table(img, i, NULL, &sw)) == 0)
            r = fix_copied(img, &sw, &nl1, buf, &m);
    }
    if (r == 0 && nl1)
        replace_l1(img, nl1, sw.l1_size);
    free(sl1);
    free(buf);
    return finish(img, r, &sw);
}

/* ---- list ------------------------------------------------------------ */

int qc_snapshot_list(qc_ctx *ctx, json_object **out, const char *path)
{
    qc_image *img;
    *out = NULL;
    int r = qc_image_open(ctx, &img, path, NULL, QC_OPEN_NO_BACKING | QC_OPEN_SHARE);
    if (r < 0)
        return r;
    *out = img->fmt == QC_FMT_QCOW2 ? qc_snapshots_json(img) : json_object_new_array();
    qc_image_close(img);
    return 0;
}
