/*
 * volume.c - external snapshots of a volume: create, roll back to any
 * snapshot, delete anywhere in the tree, rename, list; each under the
 * volume's lock and intent journal (journal.c), each step idempotent so
 * that an interrupted operation is completed or undone by the next one.
 *
 * Volume FILE is the live disk; snapshot S is the file snap-S-FILE next to
 * it, when that file is in FILE's tree (tree.c); images refer to their
 * backing files by these relative names, and the journal names files by
 * them too, whatever the caller's spelling of FILE's path.
 */
#include "internal.h"

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
    /* out of memory must not pass for "no backing file" */
    bool q = img->fmt == QC_FMT_QCOW2;
    char *b = NULL, *bf = NULL;
    if (backing && q && img->hdr.backing_name && !(b = qc_strdup(ctx, img->hdr.backing_name)))
        r = QC_ERR_NOMEM;
    if (bfmt && q && img->hdr.backing_fmt && !(bf = qc_strdup(ctx, img->hdr.backing_fmt)))
        r = QC_ERR_NOMEM;
    qc_image_close(img);
    if (r < 0) {
        free(b);
        free(bf);
        b = bf = NULL;
    }
    if (backing)
        *backing = b;
    if (bfmt)
        *bfmt = bf;
    return r;
}

/*
 * The overlay that takes over the live name keeps the live file's owner,
 * group and mode (a VM running as another user must still open it),
 * durable before it is renamed into place.
 */
static int same_owner(qc_ctx *ctx, const char *path, const struct stat *like)
{
    int fd = qc_sys_open(ctx, path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    struct stat st;
    int r = qc_sys_fstat(ctx, fd, path, &st), e = 0;
    bool new_owner = r == 0 && (st.st_uid != like->st_uid || st.st_gid != like->st_gid);
    bool new_mode = r == 0 && (new_owner || (st.st_mode & 07777) != (like->st_mode & 07777));
    if (new_owner)
        e = ctx->io->fchown(ctx->io_user, fd, like->st_uid, like->st_gid);
    if (e == 0 && new_mode)
        e = ctx->io->fchmod(ctx->io_user, fd, like->st_mode & 07777);
    if (e < 0)
        r = qc_fail(ctx, qc_errno_code(-e), -e, path, "snapshot",
                    "Could not give '%s' the owner and mode of the volume: %s", path, strerror(-e));
    if (r == 0 && new_mode)
        r = qc_sys_fsync(ctx, fd, path);
    qc_sys_close(ctx, fd);
    return r;
}

/* A new overlay at tmp on backing name bname (size given, backing not opened), owned like the live file. */
static int make_overlay(qc_volume *v, const char *tmp, const char *bname, const char *bfmt, uint64_t size,
                        const qc_volume_opts *so, const struct stat *like)
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
    int r = qc_create_direct(v->ctx, tmp, &o);
    return r < 0 ? r : same_owner(v->ctx, tmp, like);
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

/*
 * Guest bytes one layer holds itself, of the kinds in mask: QC_BS_DATA is
 * what moving that layer costs, QC_BS_ALLOCATED also counts zeroed ranges.
 */
static int layer_bytes(qc_ctx *ctx, const char *path, int mask, uint64_t *bytes)
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
            if (fl & mask)
                *bytes += n;
            off += n;
        }
    }
    qc_image_close(img);
    return r;
}

/*
 * Nothing but x's children in the tree may be built on snapshot x (they
 * are what the operation rewrites): no image in the volume's directory,
 * none in the tree o->images_dir names.
 */
static int no_dependent(qc_volume *v, const qc_vtree *t, int xi, const char *op, const qc_volume_opts *o)
{
    qc_ctx *ctx = v->ctx;
    const qc_vnode *x = &t->n[xi];
    qc_fid *kids = qc_calloc(ctx, t->count, sizeof(*kids));
    if (!kids)
        return QC_ERR_NOMEM;
    size_t nk = 0;
    for (size_t i = 0; i < t->count; i++)
        if (t->n[i].parent == xi)
            kids[nk++] = (qc_fid){t->n[i].dev, t->n[i].ino};
    char *image = NULL;
    size_t which;
    qc_fid xf = {x->dev, x->ino};
    int r = qc_find_dependent(ctx, &image, &which, v->dir, o->images_dir, &xf, 1, kids, nk);
    if (r == 0 && image)
        r = qc_fail(ctx, QC_ERR_BUSY, 0, x->path, op, "snapshot '%s' is the backing file of '%s'; not %s", x->name,
                    image, !strcmp(op, "delete") ? "deleted" : "renamed");
    free(image);
    free(kids);
    return r;
}

/* Scan the tree and find snapshot NAME in it: a file of its name outside the tree is not it. */
static int tree_snapshot(qc_volume *v, qc_vtree *t, const char *name, const char *op, int *idx)
{
    int r = qc_vtree_scan(v, t);
    if (r < 0)
        return r;
    *idx = qc_vtree_find(t, name);
    if (*idx < 0 || t->n[*idx].kind != QC_VN_SNAPSHOT)
        return qc_fail(v->ctx, QC_ERR_NOTFOUND, ENOENT, v->path, op, "snapshot '%s' does not exist", name);
    return 0;
}

/* ---- create ---------------------------------------------------------- */

static int create_steps(qc_volume *v, const char *snap, const char *sname, const char *tmp,
                        const qc_volume_opts *o)
{
    qc_ctx *ctx = v->ctx;
    uint64_t size;
    int fmt;
    struct stat live;
    int r = peek(ctx, v->path, &size, &fmt, NULL, NULL);
    if (r == 0 && fmt != QC_FMT_QCOW2)
        r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, v->path, "snapshot",
                    "'%s' is not a qcow2 image; external snapshots need qcow2 volumes", v->path);
    if (r == 0 && (r = ctx->io->stat(ctx->io_user, v->path, &live)) < 0)
        r = qc_fail(ctx, qc_errno_code(-r), -r, v->path, "snapshot", "Could not stat '%s': %s", v->path, strerror(-r));
    if (r == 0)
        r = make_overlay(v, tmp, sname, qc_format_name(fmt), size, o, &live);
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
    qc_snap_set_volume(ctx, snap, v->base); /* whose snapshot it is, beyond its name */
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

typedef struct link_drop {
    qc_volume *v;
    struct stat live;
} link_drop;

/* Remove entry name if it is a snapshot name linked to the live file. */
static int drop_live_link(void *arg, const char *name, unsigned char type)
{
    link_drop *l = arg;
    (void)type;
    if (!qc_volume_is_snap_entry(l->v, name))
        return 0;
    char *p = qc_volume_file(l->v, name);
    if (!p)
        return QC_ERR_NOMEM;
    struct stat ss;
    int r = 0;
    if (exists(l->v->ctx, p, &ss) && ss.st_dev == l->live.st_dev && ss.st_ino == l->live.st_ino)
        r = do_unlink(l->v, p);
    free(p);
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
        link_drop l = {v, {0}};
        if (exists(ctx, v->path, &l.live))
            r = qc_sys_listdir(ctx, v->dir, drop_live_link, &l);
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
static int rename_finish(qc_volume *v, json_object *j, bool running);

/*
 * A file a journal names, as a name in the volume's directory: the volume
 * or one of its snapshot files, nothing else. Journals name files that way,
 * so how the caller spells the volume's path does not matter; those of
 * earlier versions held paths as spelled: their last component counts.
 */
static const char *journal_name(const qc_volume *v, const char *rec)
{
    const char *b = rec ? qc_path_file(rec) : NULL;
    return b && (!strcmp(b, v->base) || qc_volume_is_snap_entry(v, b)) ? b : NULL;
}

/* The path of the file a journal names (after journal_files_ok). */
static char *journal_file(qc_volume *v, const char *rec)
{
    const char *b = journal_name(v, rec);
    return b ? qc_volume_file(v, b) : NULL;
}

static bool journal_files_ok(qc_volume *v, json_object *j)
{
    static const char *keys[] = {"file", "to"};
    for (size_t i = 0; i < 2; i++)
        if (jstr(j, keys[i]) && !journal_name(v, jstr(j, keys[i])))
            return false;
    json_object *kids;
    if (json_object_object_get_ex(j, "children", &kids)) {
        if (!json_object_is_type(kids, json_type_array))
            return false;
        for (size_t i = 0; i < json_object_array_length(kids); i++) {
            json_object *k = json_object_array_get_idx(kids, i);
            if (!json_object_is_type(k, json_type_string) || !journal_name(v, json_object_get_string(k)))
                return false;
        }
    }
    return true;
}

/* Hold what a journal's delete writes or replaces: the snapshot file and its children. */
static int hold_delete(qc_volume *v, json_object *j)
{
    json_object *kids;
    size_t n = json_object_object_get_ex(j, "children", &kids) && json_object_is_type(kids, json_type_array)
                   ? json_object_array_length(kids) : 0;
    const char **files = qc_calloc(v->ctx, n + 1, sizeof(*files));
    if (!files)
        return QC_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        files[i] = json_object_get_string(json_object_array_get_idx(kids, i));
    files[n] = jstr(j, "file");
    int r = n && files[n] ? qc_hold(v->ctx, files, n + 1) : 0;
    free(files);
    return r;
}

/*
 * Complete or undo what the journal says was interrupted. A listing
 * (pending set) that cannot do it now, typically because a file it would
 * change is in use, leaves the journal and says so in *pending instead.
 */
static int recover(qc_volume *v, char **pending)
{
    json_object *j;
    int r = qc_journal_read(v, &j);
    if (r < 0 || !j)
        return r;
    const char *op = jstr(j, "op");
    size_t mark = v->ctx->nheld;
    if (!journal_files_ok(v, j)) {
        json_object_put(j);
        return qc_fail(v->ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal",
                       "'%s': journal names files that are not this volume's; not acting on it", v->journal_path);
    }
    if (!op) {
        r = qc_fail(v->ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal", "'%s': journal without an operation",
                    v->journal_path);
    } else if (!strcmp(op, "delete")) {
        if ((r = hold_delete(v, j)) == 0)
            r = delete_finish(v, j);
        snprintf(v->recovered, sizeof(v->recovered), "delete %s", jstr(j, "snap") ? jstr(j, "snap") : "");
    } else if (!strcmp(op, "rename")) {
        r = rename_finish(v, j, false);
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
    if (r == 0)
        r = qc_journal_clear(v);
    qc_hold_release(v->ctx, mark);
    json_object_put(j);
    if (r < 0 && r != QC_ERR_NOMEM && pending) {
        *pending = qc_strdup(v->ctx, v->ctx->err.msg);
        qc_ctx_clear_error(v->ctx);
        r = *pending ? 0 : QC_ERR_NOMEM;
    }
    return r;
}

/* Lock the volume and finish any interrupted operation (a listing: see recover). */
static int begin(qc_ctx *ctx, qc_volume *v, const char *volume, const qc_volume_opts *o, char **pending)
{
    struct stat st;
    if (!exists(ctx, volume, &st))
        return qc_fail(ctx, QC_ERR_NOTFOUND, ENOENT, volume, "snapshot", "volume '%s' does not exist", volume);
    int r = qc_volume_open(ctx, v, volume, o->lock_timeout_ms);
    if (r == 0 && ((r = qc_journal_drop_tmp(v)) < 0 || (r = recover_state(v)) < 0 || (r = recover(v, pending)) < 0))
        qc_volume_close(v);
    return r;
}

int qc_volume_begin(qc_ctx *ctx, qc_volume *v, const char *volume, const qc_volume_opts *o)
{
    return begin(ctx, v, volume, o, NULL);
}

/* Check the name, lock the volume, finish what was interrupted. */
static int start(qc_ctx *ctx, qc_volume *v, const char *volume, const char *name, const qc_volume_opts *o)
{
    if (!qc_volume_name_valid(name))
        return bad_name(ctx, volume, name);
    return begin(ctx, v, volume, o, NULL);
}

/*
 * End an operation: clear its journal when done, release what it held and
 * the volume. A failure that leaves the journal says what happens next:
 * what (e.g. "delete of snapshot 's1'") is completed by the next operation.
 */
static int finish(qc_volume *v, int r, const char *what)
{
    qc_ctx *ctx = v->ctx;
    if (r == 0 && v->journaled && (r = qc_journal_clear(v)) < 0 && !exists(ctx, v->journal_path, NULL)) {
        /* done; only the journal's removal may not be durable, and a journal
         * brought back by a crash finds its work done */
        qc_ctx_clear_error(ctx);
        r = 0;
    }
    if (r < 0 && r != QC_ERR_NOMEM && what && exists(ctx, v->journal_path, NULL)) {
        qc_error e = ctx->err;
        qc_fail(ctx, r, e.sys_errno, e.path, e.op,
                "%s; the %s is recorded in '%s' and will be completed by the next operation on '%s'", e.msg, what,
                v->journal_path, v->path);
    }
    qc_hold_release(ctx, 0);
    qc_error e;
    qc_err_keep(ctx, &e);
    qc_volume_close(v); /* clears v */
    return qc_err_restore(ctx, &e, r);
}

/* Write the journal; if that fails part way, the volume stays as it was. */
static int journal(qc_volume *v, json_object *j)
{
    int r = qc_journal_write(v, j);
    if (r < 0) {
        qc_error e;
        qc_err_keep(v->ctx, &e);
        qc_journal_clear(v);
        qc_err_restore(v->ctx, &e, r);
    }
    return r;
}

/* Backing files below path, counted up to limit + 1 (a chain that cannot be followed ends there). */
static unsigned chain_depth(qc_ctx *ctx, const char *path, unsigned limit)
{
    unsigned depth = 0;
    char *p = qc_strdup(ctx, path), b[QC_PEEK_MAX];
    while (p && depth <= limit && qc_peek_backing(ctx, p, b)) {
        char *full = qc_path_combine(ctx, p, b);
        free(p);
        p = full;
        depth++;
    }
    free(p);
    return depth;
}

/* Taking snapshot NAME, also as the rename of "current" to NAME. */
static int take_snapshot(qc_ctx *ctx, const char *volume, const char *name, const qc_volume_opts *o, bool rename)
{
    qc_volume v;
    int r = start(ctx, &v, volume, name, o);
    if (r < 0)
        return r;
    char *sname = qc_volume_snap_name(&v, name), *snap = sname ? qc_volume_file(&v, sname) : NULL;
    char *tmp = tmp_name(&v, "new");
    unsigned limit = ctx->pol.max_depth;
    if (!snap || !tmp) {
        r = QC_ERR_NOMEM;
    } else if (exists(ctx, snap, NULL)) {
        r = qc_fail(ctx, QC_ERR_EXISTS, EEXIST, volume, rename ? "rename" : "snapshot",
                    "%ssnapshot '%s' already exists", rename ? "target " : "", name);
    } else if (chain_depth(ctx, volume, limit) >= limit) {
        /* the new overlay would add a layer no later operation could open */
        r = qc_fail(ctx, QC_ERR_LOOP, 0, volume, "snapshot",
                    "snapshot '%s' not taken: '%s' would have a backing chain deeper than %u images "
                    "(delete a snapshot first)", name, volume, limit);
    } else if (!o->running && (r = qc_hold(ctx, &volume, 1)) < 0) {
        /* a writer would go on writing into what became the snapshot */
    } else if ((r = create_steps(&v, snap, sname, tmp, o)) < 0) {
        qc_error e;
        qc_err_keep(ctx, &e);
        create_undo(&v, snap, tmp); /* or the next operation does */
        qc_err_restore(ctx, &e, r);
    }
    free(sname);
    free(snap);
    free(tmp);
    return finish(&v, r, NULL);
}

int qc_volume_snapshot(qc_ctx *ctx, const char *volume, const char *name, const qc_volume_opts *o)
{
    return take_snapshot(ctx, volume, name, o, false);
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
    int fmt, si;
    struct stat live;
    qc_vtree t = {0};
    if (!snap || !tmp)
        r = QC_ERR_NOMEM;
    else
        r = tree_snapshot(&v, &t, name, "rollback", &si);
    if (r == 0 && (r = qc_hold(ctx, &volume, 1)) == 0 && (r = peek(ctx, snap, &size, &fmt, NULL, NULL)) == 0 &&
        (r = exists(ctx, volume, &live) ? 0 : QC_ERR_NOTFOUND) == 0) {
        /* A fresh overlay on the snapshot replaces the volume in one rename. */
        r = make_overlay(&v, tmp, sname, qc_format_name(fmt), size, o, &live);
        if (r == 0)
            r = do_rename(&v, tmp, volume, 0);
        if (r < 0 && exists(ctx, tmp, NULL)) {
            qc_error e;
            qc_err_keep(ctx, &e);
            do_unlink(&v, tmp); /* or the next operation does */
            qc_err_restore(ctx, &e, r);
        }
    }
    qc_vtree_free(&t);
    free(sname);
    free(snap);
    free(tmp);
    return finish(&v, r, NULL);
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
    if (b && !full) {
        free(b);
        return QC_ERR_NOMEM; /* not "done already": X must stay */
    }
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
    const char *how = jstr(j, "how"), *parent = jstr(j, "parent"), *pfmt = jstr(j, "parent_fmt");
    json_object *kids;
    if (!jstr(j, "file") || !how || !parent || !json_object_object_get_ex(j, "children", &kids))
        return qc_fail(v->ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal", "'%s': incomplete delete journal",
                       v->journal_path);
    char *x = journal_file(v, jstr(j, "file"));
    int r = x ? 0 : QC_ERR_NOMEM;
    for (size_t i = 0; i < json_object_array_length(kids) && r == 0; i++) {
        char *child = journal_file(v, json_object_get_string(json_object_array_get_idx(kids, i)));
        r = child ? delete_child(v, how, x, child, parent, pfmt) : QC_ERR_NOMEM;
        free(child);
    }
    if (r == 0 && strcmp(how, "commit") && exists(v->ctx, x, NULL))
        r = do_unlink(v, x);
    free(x);
    return r;
}

/* What a delete did, for the caller: method, data bytes copied, each way's estimate. */
static json_object *delete_result(const char *name, const char *how, uint64_t copied, const uint64_t *costs)
{
    json_object *res = json_object_new_object();
    json_object_object_add(res, "snapshot", json_object_new_string(name));
    json_object_object_add(res, "method", json_object_new_string(how));
    json_object_object_add(res, "bytes", json_object_new_int64((int64_t)copied));
    if (costs) {
        json_object_object_add(res, "commit-bytes", json_object_new_int64((int64_t)costs[0]));
        json_object_object_add(res, "stream-bytes", json_object_new_int64((int64_t)costs[1]));
    }
    return res;
}

int qc_volume_delete_snapshot(qc_ctx *ctx, json_object **out, const char *volume, const char *name,
                              const qc_volume_opts *o)
{
    qc_volume v;
    uint64_t costs[2], copied = ctx->copied; /* a recovery in start() copies too */
    if (out)
        *out = NULL;
    int r = start(ctx, &v, volume, name, o);
    if (r < 0)
        return r;
    qc_vtree t;
    json_object *j = NULL;
    bool costed = false;
    const char *how = "recovered";
    char **kids = NULL;
    size_t nk = 0;
    char what[96];
    snprintf(what, sizeof(what), "delete of snapshot '%s'", name);
    int xi;
    char again[96];
    snprintf(again, sizeof(again), "delete %s", name);
    if ((r = tree_snapshot(&v, &t, name, "delete", &xi)) == QC_ERR_NOTFOUND && !strcmp(v.recovered, again)) {
        qc_ctx_clear_error(ctx); /* an interrupted delete of this very snapshot was just completed */
        r = 0;
        goto out;
    }
    if (r < 0)
        goto out;
    qc_vnode *x = &t.n[xi];
    kids = qc_calloc(ctx, t.count, sizeof(*kids));
    if (!kids) {
        r = QC_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < t.count; i++)
        if (t.n[i].parent == xi)
            kids[nk++] = t.n[i].path;
    if ((r = no_dependent(&v, &t, xi, "delete", o)) < 0)
        goto out;
    /* With o->running QEMU has merged the data already: only the file goes. */
    if (o->running && nk) {
        r = qc_fail(ctx, QC_ERR_BUSY, 0, x->path, "delete",
                    "snapshot '%s' is still the backing file of '%s'; not deleted", name, kids[0]);
        goto out;
    }
    how = "stream";
    if (nk == 0) {
        how = "unlink";
    } else if (nk == 1) {
        /* The way that copies fewer bytes: the child's data into X, or X's into the child. */
        if ((r = qc_merge_costs(ctx, x->path, kids[0], &costs[0], &costs[1])) < 0)
            goto out;
        costed = true;
        int force = o->delete_method;
        how = force == QC_DELETE_COMMIT   ? "commit"
              : force == QC_DELETE_STREAM ? "stream"
              : costs[0] < costs[1]       ? "commit"
                                          : "stream";
    }
    /* Every file the delete writes or replaces is held, free of other users, before the journal says anything. */
    kids[nk] = x->path;
    if (nk && (r = qc_hold(ctx, (const char *const *)kids, nk + 1)) < 0)
        goto out;
    j = json_object_new_object();
    json_object_object_add(j, "op", json_object_new_string("delete"));
    json_object_object_add(j, "snap", json_object_new_string(name));
    json_object_object_add(j, "file", json_object_new_string(qc_path_file(x->path)));
    json_object_object_add(j, "how", json_object_new_string(how));
    json_object_object_add(j, "parent", json_object_new_string(x->backing ? x->backing : ""));
    if (x->backing_fmt)
        json_object_object_add(j, "parent_fmt", json_object_new_string(x->backing_fmt));
    json_object *ka = json_object_new_array();
    for (size_t i = 0; i < nk; i++)
        json_object_array_add(ka, json_object_new_string(qc_path_file(kids[i])));
    json_object_object_add(j, "children", ka);
    if ((r = journal(&v, j)) == 0)
        r = delete_finish(&v, j);
out:
    if (r == 0 && out)
        *out = delete_result(name, how, ctx->copied - copied, costed ? costs : NULL);
    json_object_put(j);
    free(kids);
    qc_vtree_free(&t);
    return finish(&v, r, what);
}

/* ---- rename ---------------------------------------------------------- */

/*
 * Roll forward: the new name exists, the children refer to it, the old
 * name is gone. A child another process has open is not rewritten: offline
 * that is an error; with running (QEMU renames the backing names it uses,
 * change-backing-file) the old name stays until QEMU has switched, and 1
 * says the journal must stay for the next operation to finish.
 */
static int rename_finish(qc_volume *v, json_object *j, bool running)
{
    qc_ctx *ctx = v->ctx;
    const char *fmt = jstr(j, "fmt");
    json_object *kids;
    if (!jstr(j, "file") || !jstr(j, "to") || !fmt || !json_object_object_get_ex(j, "children", &kids))
        return qc_fail(ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal", "'%s': incomplete rename journal",
                       v->journal_path);
    const char *to_name = journal_name(v, jstr(j, "to"));
    char *from = journal_file(v, jstr(j, "file")), *to = journal_file(v, jstr(j, "to"));
    int r = from && to ? 0 : QC_ERR_NOMEM;
    if (r == 0 && exists(ctx, from, NULL) && !exists(ctx, to, NULL)) {
        r = ctx->io->link(ctx->io_user, from, to);
        r = r < 0 ? qc_fail(ctx, qc_errno_code(-r), -r, to, "rename", "Could not create '%s': %s", to, strerror(-r))
                  : qc_sync_dir(ctx, to);
    }
    bool waiting = false;
    for (size_t i = 0; i < json_object_array_length(kids) && r == 0; i++) {
        char *kid = journal_file(v, json_object_get_string(json_object_array_get_idx(kids, i)));
        char *b = NULL;
        uint64_t size;
        if (!kid)
            r = QC_ERR_NOMEM;
        else if ((r = peek(ctx, kid, &size, NULL, &b, NULL)) == 0 && (!b || strcmp(b, to_name))) {
            const char *held = kid;
            if ((r = qc_hold(ctx, &held, 1)) == QC_ERR_LOCKED && running) {
                qc_ctx_clear_error(ctx);
                r = 0;
                waiting = true;
            } else if (r == 0) {
                r = qc_rebase(ctx, kid, NULL, to_name, fmt, QC_REBASE_UNSAFE);
            }
        }
        free(b);
        free(kid);
    }
    if (r == 0 && !waiting && exists(ctx, from, NULL) && exists(ctx, to, NULL))
        r = do_unlink(v, from);
    free(from);
    free(to);
    return r < 0 ? r : waiting;
}

/*
 * Snapshot S becomes the live disk, replacing it in one rename: the last
 * step of deleting a snapshot while the VM runs (QEMU has committed the
 * live disk into S and writes to S's file). Only when the live disk is
 * S's one child, nothing else is built on S, and the live disk's own data
 * is in S already (o->running says QEMU committed it; else it has none).
 */
static int rename_to_current(qc_ctx *ctx, const char *volume, const char *from, const qc_volume_opts *o)
{
    qc_volume v;
    int r = start(ctx, &v, volume, from, o);
    if (r < 0)
        return r;
    qc_vtree t;
    int si;
    if ((r = tree_snapshot(&v, &t, from, "rename", &si)) < 0)
        goto out;
    const qc_vnode *other = NULL;
    for (size_t i = 1; i < t.count && !other; i++)
        if (t.n[i].parent == si)
            other = &t.n[i];
    uint64_t own = 0;
    if (t.n[0].parent != si) {
        r = qc_fail(ctx, QC_ERR_INVALID, 0, volume, "rename",
                    "cannot rename '%s' to 'current': the live disk is not built on it and would be lost "
                    "(roll back to '%s' instead)", from, from);
    } else if (other) {
        r = qc_fail(ctx, QC_ERR_INVALID, 0, volume, "rename",
                    "cannot rename '%s' to 'current': '%s' is built on it too and would then depend on the live disk",
                    from, other->name ? other->name : other->path);
    } else if ((r = no_dependent(&v, &t, si, "rename", o)) == 0 && !o->running &&
               (r = qc_hold(ctx, &volume, 1)) == 0 &&
               (r = layer_bytes(ctx, volume, QC_BS_ALLOCATED, &own)) == 0 && own) {
        r = qc_fail(ctx, QC_ERR_INVALID, 0, volume, "rename",
                    "cannot rename '%s' to 'current': the live disk holds data that '%s' does not; "
                    "only once QEMU has committed it into '%s' (running)", from, from, from);
    }
    if (r == 0)
        r = do_rename(&v, t.n[si].path, volume, 0); /* atomic: the volume is never missing */
out:
    qc_vtree_free(&t);
    return finish(&v, r, NULL);
}

/*
 * "current" in a rename is the live disk, as in Proxmox's storage API:
 * current -> S turns the live data into snapshot S and the volume into a
 * new overlay on it (taking snapshot S); S -> current is rename_to_current.
 * Every other snapshot stays, and the volume is never missing.
 */
int qc_volume_rename_snapshot(qc_ctx *ctx, const char *volume, const char *from, const char *to, const qc_volume_opts *o)
{
    bool from_cur = !strcasecmp(from, "current"), to_cur = !strcasecmp(to, "current");
    if (from_cur && !to_cur)
        return take_snapshot(ctx, volume, to, o, true);
    if (to_cur && !from_cur)
        return rename_to_current(ctx, volume, from, o);
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
    int fi;
    if ((r = tree_snapshot(&v, &t, from, "rename", &fi)) < 0)
        goto out;
    if (exists(ctx, tpath, NULL)) {
        r = qc_fail(ctx, QC_ERR_EXISTS, EEXIST, volume, "rename", "target snapshot '%s' already exists", to);
        goto out;
    }
    /* the same rule as delete: the old name goes */
    if ((r = no_dependent(&v, &t, fi, "rename", o)) < 0)
        goto out;
    j = json_object_new_object();
    json_object_object_add(j, "op", json_object_new_string("rename"));
    json_object_object_add(j, "snap", json_object_new_string(from));
    json_object_object_add(j, "file", json_object_new_string(qc_path_file(t.n[fi].path)));
    json_object_object_add(j, "to", json_object_new_string(tname));
    json_object_object_add(j, "fmt", json_object_new_string(qc_format_name(t.n[fi].fmt)));
    json_object *ka = json_object_new_array();
    for (size_t i = 0; i < t.count; i++)
        if (t.n[i].parent == fi)
            json_object_array_add(ka, json_object_new_string(qc_path_file(t.n[i].path)));
    json_object_object_add(j, "children", ka);
    /* offline, every child's header is rewritten: none may be in use */
    size_t nk = 0;
    const char **kids = qc_calloc(ctx, t.count, sizeof(*kids));
    for (size_t i = 0; kids && i < t.count; i++)
        if (t.n[i].parent == fi)
            kids[nk++] = t.n[i].path;
    r = !kids ? QC_ERR_NOMEM : nk && !o->running ? qc_hold(ctx, kids, nk) : 0;
    free(kids);
    if (r == 0 && (r = journal(&v, j)) == 0 && (r = rename_finish(&v, j, o->running)) > 0) {
        v.journaled = false; /* QEMU switches the held children; the next operation completes the rename */
        r = 0;
    }
out:
    json_object_put(j);
    free(tname);
    free(tpath);
    qc_vtree_free(&t);
    char what[96];
    snprintf(what, sizeof(what), "rename of snapshot '%s'", from);
    return finish(&v, r, what);
}

/* ---- list and repair ------------------------------------------------- */

int qc_volume_list(qc_ctx *ctx, json_object **out, const char *volume, const qc_volume_opts *o)
{
    qc_volume v;
    char *pending = NULL;
    *out = NULL;
    int r = begin(ctx, &v, volume, o, &pending);
    if (r < 0)
        return r;
    qc_vtree t;
    if ((r = qc_vtree_scan(&v, &t)) == 0) {
        *out = qc_vtree_json(&t, volume);
        if (pending)
            json_object_object_add(*out, "pending", json_object_new_string(pending));
    }
    free(pending);
    qc_vtree_free(&t);
    qc_volume_close(&v);
    return r;
}

int qc_volume_find_dependent(qc_ctx *ctx, char **image, char **file, const char *volume, const qc_volume_opts *o)
{
    qc_volume v;
    *image = *file = NULL;
    int r = begin(ctx, &v, volume, o, NULL);
    if (r < 0)
        return r;
    qc_vtree t;
    qc_fid *own = NULL;
    size_t n = 0, which;
    if ((r = qc_vtree_scan(&v, &t)) == 0 && !(own = qc_calloc(ctx, t.count, sizeof(*own))))
        r = QC_ERR_NOMEM;
    for (size_t i = 0; r == 0 && i < t.count; i++)
        if (t.n[i].kind != QC_VN_EXTERNAL)
            own[n++] = (qc_fid){t.n[i].dev, t.n[i].ino};
    if (r == 0 && (r = qc_find_dependent(ctx, image, &which, v.dir, o->images_dir, own, n, NULL, 0)) == 0 && *image) {
        size_t k = 0;
        for (size_t i = 0; i < t.count && !*file; i++)
            if (t.n[i].kind != QC_VN_EXTERNAL && k++ == which && !(*file = qc_strdup(ctx, t.n[i].path)))
                r = QC_ERR_NOMEM;
    }
    free(own);
    qc_vtree_free(&t);
    qc_volume_close(&v);
    return r;
}

int qc_volume_recover(qc_ctx *ctx, const char *volume, const qc_volume_opts *o)
{
    qc_volume v;
    int r = begin(ctx, &v, volume, o, NULL);
    if (r == 0)
        qc_volume_close(&v);
    return r;
}

int qc_volume_forget(qc_ctx *ctx, const char *volume, const qc_volume_opts *o)
{
    if (exists(ctx, volume, NULL))
        return qc_fail(ctx, QC_ERR_EXISTS, EEXIST, volume, "forget", "volume '%s' still exists; its state is kept",
                       volume);
    qc_volume v;
    int r = qc_volume_open(ctx, &v, volume, o->lock_timeout_ms);
    if (r == QC_ERR_NOTFOUND) {
        qc_ctx_clear_error(ctx); /* its directory is gone too */
        return 0;
    }
    if (r < 0)
        return r;
    /* under the lock, so no operation is half way; the lock file goes last */
    size_t n = strlen(v.journal_path) + 8;
    char *jt = qc_malloc(ctx, n), *tn = tmp_name(&v, "new"), *tr = tmp_name(&v, "rollback");
    if (jt)
        snprintf(jt, n, "%s.tmp", v.journal_path);
    const char *files[] = {jt, v.journal_path, tn, tr, v.lock_path};
    for (size_t i = 0; i < 5 && r == 0; i++)
        r = files[i] ? do_unlink(&v, files[i]) : QC_ERR_NOMEM;
    free(jt);
    free(tn);
    free(tr);
    qc_error e;
    qc_err_keep(ctx, &e);
    qc_volume_close(&v);
    return qc_err_restore(ctx, &e, r);
}
