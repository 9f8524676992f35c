/*
 * bridge.c - a volume's snapshots moved between the two worlds, offline:
 * internal snapshots (one qcow2 file with a snapshot table) to a volume
 * chain (snap-NAME-FILE files), and back.
 *
 * To external: each internal snapshot, in the order they were taken, is
 * split out (split.c) onto the file of the one before, so each file holds
 * only what differs from its predecessor; the live disk becomes a new FILE
 * on the newest. To internal: a new file takes each external snapshot in
 * turn, parents first: apply the parent's internal snapshot, write the
 * snapshot's own layer, take an internal snapshot of it; then the live
 * disk's layer on its parent. Both build every new file under a temporary
 * name first, then journal the renames that put them in place, so an
 * interrupted conversion is undone (before the renames) or completed
 * (after) by the next operation on the volume.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* DIR/.BASE.convert-TAG: the temporary files of a conversion. */
static char *tmp_file(qc_volume *v, const char *tag)
{
    size_t n = strlen(v->base) + strlen(tag) + 16;
    char *e = qc_malloc(v->ctx, n);
    if (!e)
        return NULL;
    snprintf(e, n, ".%s.convert-%s", v->base, tag);
    char *p = qc_volume_file(v, e);
    free(e);
    return p;
}

static json_object *journal(const char *op, const char *phase, char **tmp, size_t ntmp, char **from, char **to,
                            size_t nplace, char **remove, size_t nremove)
{
    json_object *j = json_object_new_object(), *a;
    json_object_object_add(j, "op", json_object_new_string(op));
    json_object_object_add(j, "snap", json_object_new_string(""));
    json_object_object_add(j, "phase", json_object_new_string(phase));
    a = json_object_new_array();
    for (size_t i = 0; i < ntmp; i++)
        json_object_array_add(a, json_object_new_string(tmp[i]));
    json_object_object_add(j, "tmp", a);
    a = json_object_new_array();
    for (size_t i = 0; i < nplace; i++) {
        json_object *p = json_object_new_array();
        json_object_array_add(p, json_object_new_string(from[i]));
        json_object_array_add(p, json_object_new_string(to[i]));
        json_object_array_add(a, p);
    }
    json_object_object_add(j, "place", a);
    a = json_object_new_array();
    for (size_t i = 0; i < nremove; i++)
        json_object_array_add(a, json_object_new_string(remove[i]));
    json_object_object_add(j, "remove", a);
    return j;
}

/* Build done: journal the renames, then do them. */
static int place(qc_volume *v, const char *op, char **from, char **to, size_t n, char **remove, size_t nremove)
{
    json_object *j = journal(op, "place", NULL, 0, from, to, n, remove, nremove);
    int r = qc_journal_write(v, j);
    if (r == 0)
        r = qc_bridge_finish(v, j);
    json_object_put(j);
    return r;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; l && i < n; i++)
        free(l[i]);
    free(l);
}

/* Lock the volume and finish what was interrupted. */
static int begin(qc_ctx *ctx, qc_volume *v, const char *volume, const qc_convert_opts *co)
{
    qc_volume_opts vo;
    qc_volume_opts_init(&vo);
    if (co->lock_timeout_ms)
        vo.lock_timeout_ms = co->lock_timeout_ms;
    return qc_volume_begin(ctx, v, volume, &vo);
}

/*
 * A failure while building (j, the build journal, still set) is undone;
 * one while placing leaves its journal for the next operation to complete.
 */
static int end(qc_volume *v, json_object *j, int r)
{
    qc_ctx *ctx = v->ctx;
    if (r < 0 && j && v->journaled) {
        qc_error e;
        qc_err_keep(ctx, &e);
        if (qc_bridge_finish(v, j) == 0)
            qc_journal_clear(v);
        qc_err_restore(ctx, &e, r);
    } else if (r == 0 && v->journaled) {
        r = qc_journal_clear(v);
    } else if (r < 0) {
        v->journaled = false;
    }
    json_object_put(j);
    qc_error e;
    qc_err_keep(ctx, &e);
    qc_volume_close(v);
    return qc_err_restore(ctx, &e, r);
}

/* ---- internal -> external -------------------------------------------- */

static int by_date(const void *a, const void *b)
{
    const qc_snapshot *x = *(const qc_snapshot *const *)a, *y = *(const qc_snapshot *const *)b;
    if (x->date_sec != y->date_sec)
        return x->date_sec < y->date_sec ? -1 : 1;
    if (x->date_nsec != y->date_nsec)
        return x->date_nsec < y->date_nsec ? -1 : 1;
    unsigned long i = strtoul(x->id, NULL, 10), k = strtoul(y->id, NULL, 10);
    return i < k ? -1 : i > k;
}

/* The external name of internal snapshot s: its own, or as names maps it ("OLD=NEW" entries). */
static const char *ext_name(const qc_snapshot *s, const char *const *names, size_t nnames)
{
    size_t l = strlen(s->name);
    for (size_t i = 0; i < nnames; i++)
        if (!strncmp(names[i], s->name, l) && names[i][l] == '=')
            return names[i] + l + 1;
    return s->name;
}

int qc_volume_to_external(qc_ctx *ctx, const char *volume, const qc_convert_opts *co)
{
    qc_volume v;
    int r = begin(ctx, &v, volume, co);
    if (r < 0)
        return r;
    qc_image *src = NULL;
    qc_snapshot **order = NULL;
    char **tmp = NULL, **to = NULL, **bname = NULL;
    size_t n = 0, ntmp = 0;
    json_object *j = NULL;
    /* the write lock: no VM may use the volume while it changes */
    if ((r = qc_image_open(ctx, &src, volume, NULL, QC_OPEN_RDWR)) < 0)
        goto out;
    if (src->fmt != QC_FMT_QCOW2) {
        r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, volume, "convert", "'%s' is not a qcow2 image", volume);
        goto out;
    }
    if (src->hdr.backing_name && qc_volume_is_snap_entry(&v, src->hdr.backing_name)) {
        r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, volume, "convert",
                    "'%s' already has external snapshots; convert a volume without them", volume);
        goto out;
    }
    n = src->nsnaps;
    if (!n)
        goto out; /* nothing to convert */
    order = qc_calloc(ctx, n, sizeof(*order));
    tmp = qc_calloc(ctx, n + 1, sizeof(char *));
    to = qc_calloc(ctx, n + 1, sizeof(char *));
    bname = qc_calloc(ctx, n + 1, sizeof(char *));
    if (!order || !tmp || !to || !bname) {
        r = QC_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = &src->snaps[i];
    qsort(order, n, sizeof(*order), by_date);
    /* every name must be a valid and free volume snapshot name, every state disposable */
    char bad[2048] = "";
    size_t bl = 0;
    for (size_t i = 0; i < n; i++) {
        const char *nm = ext_name(order[i], co->names, co->nnames);
        bool dup = false;
        for (size_t k = 0; k < i; k++)
            dup |= !strcasecmp(nm, ext_name(order[k], co->names, co->nnames));
        if (!qc_volume_name_valid(nm) || dup) {
            char b[300];
            bl += (size_t)snprintf(bad + bl, bl < sizeof(bad) ? sizeof(bad) - bl : 0, "%s'%s'", bl ? ", " : "",
                                   qc_printable(nm, b, sizeof(b)));
            continue;
        }
        if (order[i]->vm_state_size && !co->drop_vm_state) {
            r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, volume, "convert",
                        "'%s': snapshot '%s' holds VM state, which external snapshot files cannot keep; "
                        "delete it or allow dropping the state",
                        volume, order[i]->name);
            goto out;
        }
        if (!(bname[i] = qc_volume_snap_name(&v, nm)) || !(to[i] = qc_volume_file(&v, bname[i]))) {
            r = QC_ERR_NOMEM;
            goto out;
        }
        struct stat st;
        if (ctx->io->stat(ctx->io_user, to[i], &st) == 0) {
            r = qc_fail(ctx, QC_ERR_EXISTS, EEXIST, to[i], "convert", "'%s' already exists", to[i]);
            goto out;
        }
    }
    if (bl) {
        r = qc_fail(ctx, QC_ERR_INVALID, 0, volume, "convert",
                    "'%s': internal snapshot names that are not valid (or unique) volume snapshot names: %s "
                    "(letters, digits, '_' and '-', starting with a letter, at most 40; give new names as OLD=NEW)",
                    volume, bad);
        goto out;
    }
    for (size_t i = 0; i <= n; i++) {
        char tag[32];
        snprintf(tag, sizeof(tag), "%zu", i);
        if (!(tmp[i] = tmp_file(&v, tag))) {
            r = QC_ERR_NOMEM;
            goto out;
        }
    }
    ntmp = n + 1;
    to[n] = qc_strdup(ctx, volume);
    j = journal("to-external", "build", tmp, ntmp, NULL, NULL, 0, NULL, 0);
    if (!to[n] || (r = qc_journal_write(&v, j)) < 0)
        goto out;
    for (size_t i = 0; i <= n && r == 0; i++) {
        ctx->io->unlink(ctx->io_user, tmp[i]);
        /* snapshot i on snapshot i-1; the live disk on the newest */
        r = qc_split_to(src, i < n ? order[i]->id : NULL, i ? order[i - 1]->id : NULL, tmp[i], i ? bname[i - 1] : NULL,
                        "qcow2", NULL);
        if (r == 0 && i < n)
            qc_snap_set_date(ctx, tmp[i], order[i]->date_sec);
    }
    qc_image_close(src); /* releases the volume before it is replaced */
    src = NULL;
    if (r == 0) {
        json_object_put(j);
        j = NULL; /* from here on a failure is completed by the next operation, not undone */
        r = place(&v, "to-external", tmp, to, ntmp, NULL, 0);
    }
out:
    qc_image_close(src);
    free(order);
    free_list(tmp, ntmp);
    free_list(to, n + 1);
    free_list(bname, n + 1);
    return end(&v, j, r);
}

/* ---- external -> internal -------------------------------------------- */

/* Write the layer of file src (its own clusters, data and zeros) into the open image dst. */
static int copy_layer(qc_ctx *ctx, const char *src_path, qc_image *dst)
{
    qc_image *src;
    int r = qc_image_open(ctx, &src, src_path, NULL, QC_OPEN_SHARE);
    if (r < 0)
        return r;
    if (src->size > dst->size && (r = qc_image_grow(dst, src->size)) < 0)
        goto out;
    size_t bufsz = 1 << 20;
    uint8_t *buf = qc_malloc(ctx, bufsz);
    if (!buf) {
        r = QC_ERR_NOMEM;
        goto out;
    }
    for (uint64_t off = 0; off < src->size && r == 0;) {
        uint64_t len, map;
        int fl;
        if ((r = qc_layer_status(src, off, qc_min(src->size - off, bufsz), &len, &fl, &map)) < 0)
            break;
        if (fl & QC_BS_ZERO && (fl & QC_BS_ALLOCATED))
            r = qc_image_write_zeroes(dst, off, len, 0);
        else if (fl & QC_BS_DATA && (r = qc_image_read(src, buf, off, (size_t)len)) == 0)
            r = qc_image_write(dst, buf, off, (size_t)len);
        off += len;
    }
    free(buf);
out:
    qc_image_close(src);
    return r;
}

int qc_volume_to_internal(qc_ctx *ctx, const char *volume, const qc_convert_opts *co)
{
    qc_volume v;
    int r = begin(ctx, &v, volume, co);
    if (r < 0)
        return r;
    qc_vtree t;
    memset(&t, 0, sizeof(t));
    int *order = NULL;
    char **remove = NULL, *tmp = NULL;
    size_t nrem = 0, n = 0;
    json_object *j = NULL;
    if ((r = qc_vtree_scan(&v, &t)) < 0)
        goto out;
    /* snapshots parents first, each generation in the order they were taken */
    order = qc_calloc(ctx, t.count + 1, sizeof(int));
    remove = qc_calloc(ctx, t.count + 1, sizeof(char *));
    bool *done = qc_calloc(ctx, t.count + 1, sizeof(bool));
    if (!order || !remove || !done) {
        free(done);
        r = QC_ERR_NOMEM;
        goto out;
    }
    int root = -1;
    for (size_t i = 0; i < t.count && r == 0; i++) {
        qc_vnode *x = &t.n[i];
        if (x->kind == QC_VN_STRAY)
            r = qc_fail(ctx, QC_ERR_FORMAT, 0, x->path, "convert", "'%s': unreadable snapshot file (%s); not converting",
                        x->path, x->error ? x->error : "?");
        else if ((x->kind == QC_VN_SNAPSHOT || x->kind == QC_VN_CURRENT) &&
                 (x->parent < 0 || t.n[x->parent].kind == QC_VN_EXTERNAL)) {
            if (root >= 0)
                r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, volume, "convert",
                            "'%s': snapshots on more than one base; not converting", volume);
            root = (int)i;
        }
    }
    for (bool more = true; r == 0 && more;) {
        more = false;
        int best = -1;
        for (size_t i = 0; i < t.count; i++) {
            qc_vnode *x = &t.n[i];
            if (x->kind != QC_VN_SNAPSHOT || done[i] || (x->parent >= 0 && t.n[x->parent].kind == QC_VN_SNAPSHOT &&
                                                          !done[x->parent]))
                continue;
            if (best < 0 || x->date < t.n[best].date ||
                (x->date == t.n[best].date && strcmp(x->name, t.n[best].name) < 0))
                best = (int)i;
        }
        if (best >= 0) {
            done[best] = true;
            order[n++] = best;
            more = true;
        }
    }
    free(done);
    if (r < 0 || !n)
        goto out; /* no external snapshots: nothing to do */
    /* the new file: the root's layout and backing (a linked clone's base stays the base) */
    qc_vnode *rt = &t.n[root];
    if (!(tmp = tmp_file(&v, "internal"))) {
        r = QC_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < t.count; i++)
        if (t.n[i].kind == QC_VN_SNAPSHOT && !(remove[nrem++] = qc_strdup(ctx, t.n[i].path))) {
            r = QC_ERR_NOMEM;
            goto out;
        }
    /* every file that changes or goes must be free of users */
    for (size_t i = 0; i < t.count && r == 0; i++) {
        if (t.n[i].kind != QC_VN_SNAPSHOT && t.n[i].kind != QC_VN_CURRENT)
            continue;
        qc_image *img;
        if ((r = qc_image_open(ctx, &img, t.n[i].path, NULL, QC_OPEN_RDWR | QC_OPEN_NO_BACKING)) == 0)
            qc_image_close(img);
    }
    j = journal("to-internal", "build", &tmp, 1, NULL, NULL, 0, NULL, 0);
    if (r < 0 || (r = qc_journal_write(&v, j)) < 0)
        goto out;
    qc_image *root_img;
    uint32_t cs = 65536;
    bool ext = false;
    if ((r = qc_image_open(ctx, &root_img, rt->path, NULL, QC_OPEN_SHARE | QC_OPEN_NO_BACKING)) < 0)
        goto out;
    if (root_img->fmt == QC_FMT_QCOW2) {
        cs = (uint32_t)root_img->cluster_size;
        ext = root_img->ext_l2;
    }
    qc_image_close(root_img);
    qc_create_opts o;
    qc_create_opts_init(&o);
    o.size = rt->size;
    o.cluster_size = cs;
    o.extended_l2 = ext;
    o.backing = rt->parent >= 0 ? rt->backing : NULL;
    o.backing_fmt = rt->parent >= 0 ? rt->backing_fmt : NULL;
    o.backing_unchecked = true;
    ctx->io->unlink(ctx->io_user, tmp);
    if ((r = qc_create_direct(ctx, tmp, &o)) < 0)
        goto out;
    /* each snapshot on its parent's internal snapshot, then the live disk on its parent */
    for (size_t k = 0; k <= n && r == 0; k++) {
        int xi = k < n ? order[k] : 0; /* n[0] is current */
        qc_vnode *x = &t.n[xi];
        if (x->parent >= 0 && t.n[x->parent].kind == QC_VN_SNAPSHOT)
            r = qc_snapshot_apply(ctx, tmp, t.n[x->parent].name);
        qc_image *dst = NULL;
        if (r == 0)
            r = qc_image_open(ctx, &dst, tmp, "qcow2", QC_OPEN_RDWR);
        if (r == 0)
            r = copy_layer(ctx, x->path, dst);
        if (r == 0)
            r = qc_image_flush(dst);
        qc_image_close(dst);
        if (r == 0 && k < n)
            r = qc_snapshot_create_dated(ctx, tmp, x->name, x->date);
    }
    if (r == 0) {
        char *vol = qc_strdup(ctx, volume);
        json_object_put(j);
        j = NULL; /* from here on a failure is completed by the next operation, not undone */
        r = vol ? place(&v, "to-internal", &tmp, &vol, 1, remove, nrem) : QC_ERR_NOMEM;
        free(vol);
    }
out:
    free(order);
    free_list(remove, nrem);
    free(tmp);
    qc_vtree_free(&t);
    return end(&v, j, r);
}
