/*
 * volume.c - external snapshots of a volume: create, roll back to any
 * snapshot, delete anywhere in the tree, rename, list; each under the
 * volume's lock and intent journal (journal.c), each step idempotent so
 * that an interrupted operation is completed or undone by the next one.
 *
 * Volume FILE is the live disk; snapshot S is the file snap-S-FILE next to
 * it; images refer to their backing files by these relative names.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

void qc_volume_opts_init(qc_volume_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->cluster_size = 128 * 1024;
    o->extended_l2 = true;
    o->preallocation = 1;
    o->lock_timeout_ms = 10000;
}

int qc_volume_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 40 || !((name[0] | 32) >= 'a' && (name[0] | 32) <= 'z'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c | 32) >= 'a' && (c | 32) <= 'z') && !(c >= '0' && c <= '9') && c != '_' && c != '-')
            return 0;
    }
    return strcasecmp(name, "current") != 0;
}

static int bad_name(qc_ctx *ctx, const char *vol, const char *name)
{
    char b[128];
    return qc_fail(ctx, QC_ERR_INVALID, 0, vol, "snapshot",
                   "invalid snapshot name '%s' (letters, digits, '_' and '-', starting with a letter, "
                   "at most 40 characters; 'current' is reserved)",
                   qc_printable(name, b, sizeof(b)));
}

static bool exists(qc_ctx *ctx, const char *path, struct stat *st)
{
    struct stat s;
    return ctx->io->stat(ctx->io_user, path, st ? st : &s) == 0;
}

static int do_unlink(qc_volume *v, const char *path)
{
    qc_ctx *ctx = v->ctx;
    int r = ctx->io->unlink(ctx->io_user, path);
    if (r < 0 && r != -ENOENT)
        return qc_fail(ctx, qc_errno_code(-r), -r, path, "delete", "Could not remove '%s': %s", path, strerror(-r));
    return qc_sync_dir(ctx, path);
}

static int do_rename(qc_volume *v, const char *from, const char *to, unsigned flags)
{
    qc_ctx *ctx = v->ctx;
    int r = ctx->io->rename(ctx->io_user, from, to, flags);
    if (r < 0)
        return qc_fail(ctx, qc_errno_code(-r), -r, to, "rename", "Could not rename '%s' to '%s': %s", from, to,
                       strerror(-r));
    return qc_sync_dir(ctx, to);
}

/* The live disk must not be held by a VM for this operation. */
static int not_in_use(qc_ctx *ctx, const char *path)
{
    qc_image *img;
    int r = qc_image_open(ctx, &img, path, NULL, QC_OPEN_RDWR | QC_OPEN_NO_BACKING);
    if (r == 0)
        qc_image_close(img);
    return r;
}

/*
 * Size and format of a file, read without disturbing a VM that uses it.
 * Its backing name must pass the policy: no snapshot operation builds on a
 * file that refers outside the storage.
 */
static int peek(qc_ctx *ctx, const char *path, uint64_t *size, int *fmt, char **backing, char **bfmt)
{
    qc_image *img;
    int r = qc_image_open(ctx, &img, path, NULL, QC_OPEN_NO_BACKING | QC_OPEN_SHARE);
    if (r < 0)
        return r;
    if ((r = qc_backing_allowed(img)) < 0) {
        qc_image_close(img);
        return r;
    }
    *size = img->size;
    if (fmt)
        *fmt = img->fmt;
    if (backing)
        *backing = img->fmt == QC_FMT_QCOW2 && img->hdr.backing_name ? qc_strdup(ctx, img->hdr.backing_name) : NULL;
    if (bfmt)
        *bfmt = img->fmt == QC_FMT_QCOW2 && img->hdr.backing_fmt ? qc_strdup(ctx, img->hdr.backing_fmt) : NULL;
    qc_image_close(img);
    return 0;
}

/* A new overlay at tmp on backing name bname (size given, backing not opened). */
static int make_overlay(qc_volume *v, const char *tmp, const char *bname, const char *bfmt, uint64_t size,
                        const qc_volume_opts *so)
{
    qc_create_opts o;
    qc_create_opts_init(&o);
    o.size = size;
    o.cluster_size = so->cluster_size;
    o.extended_l2 = so->extended_l2;
    o.preallocation = so->extended_l2 ? so->preallocation : 0;
    o.backing = bname;
    o.backing_fmt = bfmt;
    o.backing_unchecked = true;
    v->ctx->io->unlink(v->ctx->io_user, tmp); /* leftover of an interrupted attempt */
    return qc_create_direct(v->ctx, tmp, &o);
}

static char *tmp_name(qc_volume *v, const char *what)
{
    size_t n = strlen(v->base) + strlen(what) + 8;
    char *e = qc_malloc(v->ctx, n), *p;
    if (!e)
        return NULL;
    snprintf(e, n, ".%s.%s", v->base, what);
    p = qc_volume_file(v, e);
    free(e);
    return p;
}

/* Guest bytes holding data in one layer (what moving that layer costs). */
static int allocated_bytes(qc_ctx *ctx, const char *path, uint64_t *bytes)
{
    qc_image *img;
    *bytes = 0;
    int r = qc_image_open(ctx, &img, path, NULL, QC_OPEN_NO_BACKING | QC_OPEN_SHARE);
    if (r < 0)
        return r;
    for (uint64_t off = 0; off < img->size && r == 0;) {
        uint64_t n, map;
        int fl;
        if ((r = qc_layer_status(img, off, img->size - off, &n, &fl, &map)) == 0) {
            if (fl & QC_BS_DATA)
                *bytes += n;
            off += n;
        }
    }
    qc_image_close(img);
    return r;
}

/*
 * Files in the volume's directory (of any volume) whose backing file is
 * the file st, except those listed in skip. Returns the first one found.
 */
static int find_user(qc_volume *v, const struct stat *st, char **skip, size_t nskip, char **user)
{
    qc_ctx *ctx = v->ctx;
    *user = NULL;
    DIR *d = opendir(v->dir);
    if (!d)
        return qc_fail(ctx, qc_errno_code(errno), errno, v->dir, "scan", "Could not list '%s': %s", v->dir,
                       strerror(errno));
    struct dirent *de;
    int r = 0;
    while (!*user && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char *p = qc_volume_file(v, de->d_name);
        if (!p) {
            r = QC_ERR_NOMEM;
            break;
        }
        bool skipped = false;
        for (size_t i = 0; i < nskip; i++)
            skipped |= !strcmp(skip[i], p);
        uint64_t size;
        int fmt;
        char *b = NULL;
        if (!skipped && peek(ctx, p, &size, &fmt, &b, NULL) == 0 && b) {
            char *full = qc_path_combine(ctx, p, b);
            struct stat bs;
            if (full && exists(ctx, full, &bs) && bs.st_dev == st->st_dev && bs.st_ino == st->st_ino) {
                *user = p;
                p = NULL;
            }
            free(full);
        }
        qc_ctx_clear_error(ctx);
        free(b);
        free(p);
    }
    closedir(d);
    return r;
}

/* ---- create ---------------------------------------------------------- */

static int create_steps(qc_volume *v, const char *snap, const char *sname, const char *tmp,
                        const qc_volume_opts *o)
{
    qc_ctx *ctx = v->ctx;
    uint64_t size;
    int fmt;
    int r = peek(ctx, v->path, &size, &fmt, NULL, NULL);
    if (r == 0 && fmt != QC_FMT_QCOW2)
        r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, v->path, "snapshot",
                    "'%s' is not a qcow2 image; external snapshots need qcow2 volumes", v->path);
    if (r == 0)
        r = make_overlay(v, tmp, sname, qc_format_name(fmt), size, o);
    if (r < 0)
        return r;
    /* The snapshot file appears as a second name of the live data... */
    r = ctx->io->link(ctx->io_user, v->path, snap);
    if (r < 0)
        return qc_fail(ctx, r == -EEXIST ? QC_ERR_EXISTS : qc_errno_code(-r), -r, snap, "snapshot",
                       "Could not create '%s': %s", snap, strerror(-r));
    /* (durable before the volume may refer to it) */
    if ((r = qc_sync_dir(ctx, snap)) < 0)
        return r;
    qc_snap_set_date(ctx, snap, (int64_t)time(NULL));
    /* ...then the new overlay takes the volume's name in one step: never a moment without it. */
    return do_rename(v, tmp, v->path, 0);
}

/* Undo an interrupted create: the volume must not stay linked to the snapshot name. */
static int create_undo(qc_volume *v, const char *snap, const char *tmp)
{
    qc_ctx *ctx = v->ctx;
    struct stat a, b;
    int r = 0;
    if (exists(ctx, snap, &b) && exists(ctx, v->path, &a) && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        r = do_unlink(v, snap);
    if (r == 0 && exists(ctx, tmp, NULL))
        r = do_unlink(v, tmp);
    return r;
}

/*
 * Create and rollback keep no journal: what they leave behind tells. A new
 * overlay still under its temporary name means the rename did not happen;
 * a create may then have linked the volume to a snapshot name already.
 */
static int recover_state(qc_volume *v)
{
    qc_ctx *ctx = v->ctx;
    char *tn = tmp_name(v, "new"), *tr = tmp_name(v, "rollback");
    int r = tn && tr ? 0 : QC_ERR_NOMEM;
    if (r == 0 && exists(ctx, tn, NULL)) {
        struct stat vs;
        DIR *d = exists(ctx, v->path, &vs) ? opendir(v->dir) : NULL;
        struct dirent *de;
        while (r == 0 && d && (de = readdir(d))) {
            if (!qc_volume_is_snap_entry(v, de->d_name))
                continue;
            char *p = qc_volume_file(v, de->d_name);
            struct stat ss;
            if (p && exists(ctx, p, &ss) && ss.st_dev == vs.st_dev && ss.st_ino == vs.st_ino)
                r = do_unlink(v, p);
            free(p);
        }
        if (d)
            closedir(d);
        if (r == 0)
            r = do_unlink(v, tn);
    }
    if (r == 0 && exists(ctx, tr, NULL))
        r = do_unlink(v, tr);
    free(tn);
    free(tr);
    return r;
}

/* ---- recovery -------------------------------------------------------- */

static const char *jstr(json_object *j, const char *k)
{
    json_object *o;
    return json_object_object_get_ex(j, k, &o) && json_object_is_type(o, json_type_string) ? json_object_get_string(o)
                                                                                            : NULL;
}

static int delete_finish(qc_volume *v, json_object *j);
static int rename_finish(qc_volume *v, json_object *j);

/* Is p this volume's file or one of its snapshot files (the only files a journal may name)? */
static bool own_file(qc_volume *v, const char *p)
{
    const char *b = strrchr(p, '/');
    b = b ? b + 1 : p;
    char *expect = qc_volume_file(v, b);
    bool same = expect && !strcmp(expect, p);
    free(expect);
    return same && (!strcmp(b, v->base) || qc_volume_is_snap_entry(v, b));
}

static bool journal_files_ok(qc_volume *v, json_object *j)
{
    static const char *keys[] = {"file", "to"};
    for (size_t i = 0; i < 2; i++)
        if (jstr(j, keys[i]) && !own_file(v, jstr(j, keys[i])))
            return false;
    json_object *kids;
    if (json_object_object_get_ex(j, "children", &kids)) {
        if (!json_object_is_type(kids, json_type_array))
            return false;
        for (size_t i = 0; i < json_object_array_length(kids); i++) {
            json_object *k = json_object_array_get_idx(kids, i);
            if (!json_object_is_type(k, json_type_string) || !own_file(v, json_object_get_string(k)))
                return false;
        }
    }
    return true;
}

/* Complete or undo what the journal says was interrupted. */
static int recover(qc_volume *v)
{
    json_object *j;
    int r = qc_journal_read(v, &j);
    if (r < 0 || !j)
        return r;
    const char *op = jstr(j, "op");
    if (!journal_files_ok(v, j)) {
        json_object_put(j);
        return qc_fail(v->ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal",
                       "'%s': journal names files that are not this volume's; not acting on it", v->journal_path);
    }
    if (!op) {
        r = qc_fail(v->ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal", "'%s': journal without an operation",
                    v->journal_path);
    } else if (!strcmp(op, "delete")) {
        r = delete_finish(v, j);
        snprintf(v->recovered, sizeof(v->recovered), "delete %s", jstr(j, "snap") ? jstr(j, "snap") : "");
    } else if (!strcmp(op, "rename")) {
        r = rename_finish(v, j);
    } else if (!strcmp(op, "to-external") || !strcmp(op, "to-internal")) {
        r = qc_bridge_finish(v, j); /* bridge.c */
    } else {
        r = qc_fail(v->ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal", "'%s': unknown operation '%s'",
                    v->journal_path, op);
    }
    if (r < 0 && r != QC_ERR_NOMEM) {
        /* Say that an earlier operation is what cannot be finished. */
        qc_error e = v->ctx->err;
        r = qc_fail(v->ctx, r, e.sys_errno, e.path, e.op, "'%s': an interrupted %s of snapshot '%s' cannot be finished yet: %s",
                    v->path, op ? op : "operation", jstr(j, "snap") ? jstr(j, "snap") : "?", e.msg);
    }
    json_object_put(j);
    return r == 0 ? qc_journal_clear(v) : r;
}

/* Lock the volume and finish any interrupted operation. */
static int begin(qc_ctx *ctx, qc_volume *v, const char *volume, const qc_volume_opts *o)
{
    struct stat st;
    if (!exists(ctx, volume, &st))
        return qc_fail(ctx, QC_ERR_NOTFOUND, ENOENT, volume, "snapshot", "volume '%s' does not exist", volume);
    int r = qc_volume_open(ctx, v, volume, o->lock_timeout_ms);
    if (r == 0 && ((r = recover_state(v)) < 0 || (r = recover(v)) < 0))
        qc_volume_close(v);
    return r;
}

int qc_volume_begin(qc_ctx *ctx, qc_volume *v, const char *volume, const qc_volume_opts *o)
{
    return begin(ctx, v, volume, o);
}

/* Check the name, lock the volume, finish what was interrupted. */
static int start(qc_ctx *ctx, qc_volume *v, const char *volume, const char *name, const qc_volume_opts *o)
{
    if (!qc_volume_name_valid(name))
        return bad_name(ctx, volume, name);
    return begin(ctx, v, volume, o);
}

static int finish(qc_volume *v, int r)
{
    qc_ctx *ctx = v->ctx;
    if (r == 0 && v->journaled)
        r = qc_journal_clear(v);
    qc_error e = ctx->err;
    qc_volume_close(v); /* clears v */
    if (r < 0)
        ctx->err = e;
    return r;
}

int qc_volume_snapshot(qc_ctx *ctx, const char *volume, const char *name, const qc_volume_opts *o)
{
    qc_volume v;
    int r = start(ctx, &v, volume, name, o);
    if (r < 0)
        return r;
    char *sname = qc_volume_snap_name(&v, name), *snap = sname ? qc_volume_file(&v, sname) : NULL;
    char *tmp = tmp_name(&v, "new");
    if (!snap || !tmp) {
        r = QC_ERR_NOMEM;
    } else if (exists(ctx, snap, NULL)) {
        r = qc_fail(ctx, QC_ERR_EXISTS, EEXIST, volume, "snapshot", "snapshot '%s' already exists", name);
    } else if ((r = create_steps(&v, snap, sname, tmp, o)) < 0) {
        qc_error e = ctx->err;
        create_undo(&v, snap, tmp); /* or the next operation does */
        ctx->err = e;
    }
    free(sname);
    free(snap);
    free(tmp);
    return finish(&v, r);
}

/* ---- rollback -------------------------------------------------------- */

int qc_volume_rollback(qc_ctx *ctx, const char *volume, const char *name, const qc_volume_opts *o)
{
    qc_volume v;
    int r = start(ctx, &v, volume, name, o);
    if (r < 0)
        return r;
    char *sname = qc_volume_snap_name(&v, name), *snap = sname ? qc_volume_file(&v, sname) : NULL;
    char *tmp = tmp_name(&v, "rollback");
    uint64_t size;
    int fmt;
    if (!snap || !tmp) {
        r = QC_ERR_NOMEM;
    } else if (!exists(ctx, snap, NULL)) {
        r = qc_fail(ctx, QC_ERR_NOTFOUND, ENOENT, volume, "rollback", "snapshot '%s' does not exist", name);
    } else if ((r = not_in_use(ctx, volume)) == 0 && (r = peek(ctx, snap, &size, &fmt, NULL, NULL)) == 0) {
        /* A fresh overlay on the snapshot replaces the volume in one rename. */
        r = make_overlay(&v, tmp, sname, qc_format_name(fmt), size, o);
        if (r == 0)
            r = do_rename(&v, tmp, volume, 0);
        if (r < 0 && exists(ctx, tmp, NULL)) {
            qc_error e = ctx->err;
            do_unlink(&v, tmp); /* or the next operation does */
            ctx->err = e;
        }
    }
    free(sname);
    free(snap);
    free(tmp);
    return finish(&v, r);
}

/* ---- delete ---------------------------------------------------------- */

/* File to gets the date of file from (recorded, so later writes do not change it). */
static void keep_date(qc_ctx *ctx, const char *from, const char *to)
{
    struct stat st;
    if (exists(ctx, from, &st))
        qc_snap_set_date(ctx, to, qc_snap_date(ctx, from, (int64_t)st.st_mtime));
}

static int delete_child(qc_volume *v, const char *how, const char *x, const char *child, const char *parent,
                        const char *parent_fmt)
{
    qc_ctx *ctx = v->ctx;
    if (!strcmp(how, "commit")) {
        /* The child's data goes into X; X then takes the child's name. */
        if (!exists(ctx, x, NULL))
            return 0; /* renamed already */
        int r = qc_commit(ctx, child, NULL, x, QC_COMMIT_KEEP);
        if (r < 0)
            return r;
        keep_date(ctx, child, x); /* X's file now stands for the child */
        return do_rename(v, x, child, 0);
    }
    /* stream: the child takes what it needs from X and skips X */
    char *b = NULL;
    uint64_t size;
    int r = peek(ctx, child, &size, NULL, &b, NULL);
    if (r < 0)
        return r;
    char *full = b ? qc_path_combine(ctx, child, b) : NULL;
    struct stat a, xs;
    bool on_x = full && exists(ctx, full, &a) && exists(ctx, x, &xs) && a.st_dev == xs.st_dev && a.st_ino == xs.st_ino;
    free(full);
    free(b);
    if (!on_x)
        return 0; /* done already */
    keep_date(ctx, child, child); /* the rebase changes its mtime, not its date */
    return qc_rebase(ctx, child, NULL, parent, *parent ? parent_fmt : NULL, 0);
}

/* Idempotent: redo each child step that is not done yet, then remove X. */
static int delete_finish(qc_volume *v, json_object *j)
{
    const char *x = jstr(j, "file"), *how = jstr(j, "how"), *parent = jstr(j, "parent"), *pfmt = jstr(j, "parent_fmt");
    json_object *kids;
    if (!x || !how || !parent || !json_object_object_get_ex(j, "children", &kids))
        return qc_fail(v->ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal", "'%s': incomplete delete journal",
                       v->journal_path);
    int r = 0;
    for (size_t i = 0; i < json_object_array_length(kids) && r == 0; i++)
        r = delete_child(v, how, x, json_object_get_string(json_object_array_get_idx(kids, i)), parent, pfmt);
    if (r == 0 && strcmp(how, "commit") && exists(v->ctx, x, NULL))
        r = do_unlink(v, x);
    return r;
}

int qc_volume_delete_snapshot(qc_ctx *ctx, const char *volume, const char *name, const qc_volume_opts *o)
{
    qc_volume v;
    int r = start(ctx, &v, volume, name, o);
    if (r < 0)
        return r;
    qc_vtree t;
    json_object *j = NULL;
    char **kids = NULL;
    size_t nk = 0;
    char *user = NULL;
    if ((r = qc_vtree_scan(&v, &t)) < 0)
        goto out;
    int xi = qc_vtree_find(&t, name);
    char again[96];
    snprintf(again, sizeof(again), "delete %s", name);
    if (xi < 0 && !strcmp(v.recovered, again))
        goto out; /* an interrupted delete of this very snapshot was just completed */
    if (xi < 0 || t.n[xi].kind != QC_VN_SNAPSHOT) {
        r = qc_fail(ctx, QC_ERR_NOTFOUND, ENOENT, volume, "delete", "snapshot '%s' does not exist", name);
        goto out;
    }
    qc_vnode *x = &t.n[xi];
    kids = qc_calloc(ctx, t.count, sizeof(*kids));
    if (!kids) {
        r = QC_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < t.count; i++)
        if (t.n[i].parent == xi)
            kids[nk++] = t.n[i].path;
    /* Nothing outside this volume's tree may still build on X. */
    struct stat xs = {.st_dev = x->dev, .st_ino = x->ino};
    if ((r = find_user(&v, &xs, kids, nk, &user)) < 0)
        goto out;
    if (user) {
        r = qc_fail(ctx, QC_ERR_BUSY, 0, x->path, "delete", "snapshot '%s' is the backing file of '%s'; not deleted",
                    name, user);
        goto out;
    }
    /* With o->running QEMU has merged the data already: only the file goes. */
    if (o->running && nk) {
        r = qc_fail(ctx, QC_ERR_BUSY, 0, x->path, "delete",
                    "snapshot '%s' is still the backing file of '%s'; not deleted", name, kids[0]);
        goto out;
    }
    const char *how = "stream";
    if (nk == 0) {
        how = "unlink";
    } else if (nk == 1) {
        /* Move the smaller layer: the child into X, or X into the child. */
        uint64_t cx, cc;
        if ((r = allocated_bytes(ctx, x->path, &cx)) < 0 || (r = allocated_bytes(ctx, kids[0], &cc)) < 0)
            goto out;
        int force = o->delete_method;
        how = force == QC_DELETE_COMMIT ? "commit" : force == QC_DELETE_STREAM ? "stream" : cc < cx ? "commit" : "stream";
    }
    /* Every file the delete writes or replaces must be free before the journal says anything. */
    for (size_t i = 0; i < nk; i++)
        if ((r = not_in_use(ctx, kids[i])) < 0)
            goto out;
    if (nk && (r = not_in_use(ctx, x->path)) < 0)
        goto out;
    j = json_object_new_object();
    json_object_object_add(j, "op", json_object_new_string("delete"));
    json_object_object_add(j, "snap", json_object_new_string(name));
    json_object_object_add(j, "file", json_object_new_string(x->path));
    json_object_object_add(j, "how", json_object_new_string(how));
    json_object_object_add(j, "parent", json_object_new_string(x->backing ? x->backing : ""));
    if (x->backing_fmt)
        json_object_object_add(j, "parent_fmt", json_object_new_string(x->backing_fmt));
    json_object *ka = json_object_new_array();
    for (size_t i = 0; i < nk; i++)
        json_object_array_add(ka, json_object_new_string(kids[i]));
    json_object_object_add(j, "children", ka);
    if ((r = qc_journal_write(&v, j)) == 0)
        r = delete_finish(&v, j);
out:
    json_object_put(j);
    free(kids);
    free(user);
    qc_vtree_free(&t);
    return finish(&v, r);
}

/* ---- rename ---------------------------------------------------------- */

/* Roll forward: the new name exists, the child refers to it, the old name is gone. */
static int rename_finish(qc_volume *v, json_object *j)
{
    qc_ctx *ctx = v->ctx;
    const char *from = jstr(j, "file"), *to = jstr(j, "to"), *to_name = jstr(j, "to_name"), *fmt = jstr(j, "fmt");
    json_object *kids;
    if (!from || !to || !to_name || !fmt || !json_object_object_get_ex(j, "children", &kids))
        return qc_fail(ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal", "'%s': incomplete rename journal",
                       v->journal_path);
    int r = 0;
    if (exists(ctx, from, NULL) && !exists(ctx, to, NULL)) {
        r = ctx->io->link(ctx->io_user, from, to);
        r = r < 0 ? qc_fail(ctx, qc_errno_code(-r), -r, to, "rename", "Could not create '%s': %s", to, strerror(-r))
                  : qc_sync_dir(ctx, to);
    }
    for (size_t i = 0; i < json_object_array_length(kids) && r == 0; i++) {
        r = qc_rebase(ctx, json_object_get_string(json_object_array_get_idx(kids, i)), NULL, to_name, fmt,
                      QC_REBASE_UNSAFE);
        /* A child a running QEMU holds gets its new backing name from QEMU
         * (change-backing-file), as in Proxmox's running-VM delete. */
        if (r == QC_ERR_LOCKED) {
            qc_ctx_clear_error(ctx);
            r = 0;
        }
    }
    if (r == 0 && exists(ctx, from, NULL) && exists(ctx, to, NULL))
        r = do_unlink(v, from);
    return r;
}

/*
 * Renames that involve "current", as Proxmox's running-VM flows use them:
 * snapshot -> current puts the snapshot file in the volume's place in one
 * rename (QEMU has merged the volume into it); current -> snapshot turns
 * the volume into that snapshot, leaving no volume (the caller's wish).
 */
static int rename_current(qc_ctx *ctx, const char *volume, const char *from, const char *to, const qc_volume_opts *o)
{
    bool to_cur = !strcasecmp(to, "current");
    const char *snap = to_cur ? from : to;
    qc_volume v;
    int r = start(ctx, &v, volume, snap, o);
    if (r < 0)
        return r;
    char *sname = qc_volume_snap_name(&v, snap), *sfile = sname ? qc_volume_file(&v, sname) : NULL;
    if (!sfile) {
        r = QC_ERR_NOMEM;
    } else if (to_cur) {
        if (!exists(ctx, sfile, NULL))
            r = qc_fail(ctx, QC_ERR_NOTFOUND, ENOENT, volume, "rename", "snapshot '%s' does not exist", snap);
        else
            r = do_rename(&v, sfile, volume, 0); /* atomic: the volume is never missing */
    } else if (exists(ctx, sfile, NULL)) {
        r = qc_fail(ctx, QC_ERR_EXISTS, EEXIST, volume, "rename", "target snapshot '%s' already exists", snap);
    } else {
        r = do_rename(&v, volume, sfile, QC_RENAME_NOREPLACE);
        if (r == 0)
            qc_snap_set_date(ctx, sfile, (int64_t)time(NULL)); /* taken now */
    }
    free(sname);
    free(sfile);
    return finish(&v, r);
}

int qc_volume_rename_snapshot(qc_ctx *ctx, const char *volume, const char *from, const char *to, const qc_volume_opts *o)
{
    if (!strcasecmp(from, "current") != !strcasecmp(to, "current"))
        return rename_current(ctx, volume, from, to, o);
    if (!qc_volume_name_valid(to))
        return bad_name(ctx, volume, to);
    qc_volume v;
    int r = start(ctx, &v, volume, from, o);
    if (r < 0)
        return r;
    qc_vtree t;
    char *tname = qc_volume_snap_name(&v, to), *tpath = tname ? qc_volume_file(&v, tname) : NULL;
    json_object *j = NULL;
    if (!tpath) {
        r = QC_ERR_NOMEM;
        memset(&t, 0, sizeof(t));
        goto out;
    }
    if ((r = qc_vtree_scan(&v, &t)) < 0)
        goto out;
    int fi = qc_vtree_find(&t, from);
    if (fi < 0 || t.n[fi].kind != QC_VN_SNAPSHOT) {
        r = qc_fail(ctx, QC_ERR_NOTFOUND, ENOENT, volume, "rename", "snapshot '%s' does not exist", from);
        goto out;
    }
    if (exists(ctx, tpath, NULL)) {
        r = qc_fail(ctx, QC_ERR_EXISTS, EEXIST, volume, "rename", "target snapshot '%s' already exists", to);
        goto out;
    }
    j = json_object_new_object();
    json_object_object_add(j, "op", json_object_new_string("rename"));
    json_object_object_add(j, "snap", json_object_new_string(from));
    json_object_object_add(j, "file", json_object_new_string(t.n[fi].path));
    json_object_object_add(j, "to", json_object_new_string(tpath));
    json_object_object_add(j, "to_name", json_object_new_string(tname));
    json_object_object_add(j, "fmt", json_object_new_string(qc_format_name(t.n[fi].fmt)));
    json_object *ka = json_object_new_array();
    for (size_t i = 0; i < t.count; i++)
        if (t.n[i].parent == fi)
            json_object_array_add(ka, json_object_new_string(t.n[i].path));
    json_object_object_add(j, "children", ka);
    if ((r = qc_journal_write(&v, j)) == 0)
        r = rename_finish(&v, j);
out:
    json_object_put(j);
    free(tname);
    free(tpath);
    qc_vtree_free(&t);
    return finish(&v, r);
}

/* ---- list and repair ------------------------------------------------- */

int qc_volume_list(qc_ctx *ctx, json_object **out, const char *volume, const qc_volume_opts *o)
{
    qc_volume v;
    *out = NULL;
    int r = begin(ctx, &v, volume, o);
    if (r < 0)
        return r;
    qc_vtree t;
    if ((r = qc_vtree_scan(&v, &t)) == 0)
        *out = qc_vtree_json(&t, volume);
    qc_vtree_free(&t);
    qc_volume_close(&v);
    return r;
}

int qc_volume_recover(qc_ctx *ctx, const char *volume, const qc_volume_opts *o)
{
    qc_volume v;
    int r = begin(ctx, &v, volume, o);
    if (r == 0)
        qc_volume_close(&v);
    return r;
}
