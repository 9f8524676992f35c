/*
 * tree.c - the snapshot tree of a volume, rebuilt from the files in its
 * directory and their backing names: FILE is "current", snap-NAME-FILE
 * is snapshot NAME, a backing file that is neither (a linked clone's base,
 * another volume) is "external", a snap-*-FILE that cannot be read is
 * "stray". Parents are matched by (device, inode), not by name.
 *
 * A name is not enough to make a file this volume's snapshot: the file
 * snap-s1-vm-100-x-vm-100-disk-0.qcow2 fits the pattern of both
 * vm-100-disk-0.qcow2 and vm-100-x-vm-100-disk-0.qcow2. Only regular files
 * count; one recorded as a volume's (an xattr set when the snapshot is
 * taken) is that volume's; one in the volume's tree (on the live disk's
 * backing chain, or built on a file that is) is ours unless the other
 * volume reaches it too; the rest go by name only where it fits no other
 * volume in the directory.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A volume whose file name ends in "-FILE" (its snapshots fit our pattern too); scan only. */
#define QC_VN_OTHER (QC_VN_STRAY + 1)

void qc_vtree_free(qc_vtree *t)
{
    for (size_t i = 0; i < t->count; i++) {
        free(t->n[i].name);
        free(t->n[i].path);
        free(t->n[i].backing);
        free(t->n[i].backing_fmt);
        free(t->n[i].error);
    }
    free(t->n);
    memset(t, 0, sizeof(*t));
}

static qc_vnode *add(qc_ctx *ctx, qc_vtree *t)
{
    qc_vnode *n = qc_realloc(ctx, t->n, (t->count + 1) * sizeof(*n));
    if (!n)
        return NULL;
    t->n = n;
    memset(&n[t->count], 0, sizeof(*n));
    n[t->count].parent = -1;
    return &n[t->count++];
}

/* Header facts of one file (no chain, no locks that disturb QEMU). */
static int probe(qc_ctx *ctx, qc_vnode *n, const char *fmt, unsigned flags)
{
    qc_image *img;
    int r = qc_image_open(ctx, &img, n->path, fmt, QC_OPEN_NO_BACKING | QC_OPEN_NO_LOCK | flags);
    if (r < 0)
        return r;
    {
        const struct stat st = img->st;
        n->dev = st.st_dev;
        n->ino = st.st_ino;
        n->actual = (uint64_t)st.st_blocks * 512;
        n->date = qc_snap_date(ctx, n->path, (int64_t)st.st_mtime);
        n->size = img->size;
        n->fmt = img->fmt;
        /* a backing name the policy refuses makes the file unusable here */
        if ((r = qc_backing_allowed(img)) == 0 && img->fmt == QC_FMT_QCOW2 && img->hdr.backing_name &&
            (!(n->backing = qc_strdup(ctx, img->hdr.backing_name)) ||
             (img->hdr.backing_fmt && !(n->backing_fmt = qc_strdup(ctx, img->hdr.backing_fmt)))))
            r = QC_ERR_NOMEM; /* not a file without backing */
    }
    qc_image_close(img);
    return r;
}

#define DATE_XATTR "user.qcow2chain.created"
#define VOLUME_XATTR "user.qcow2chain.volume"

int64_t qc_snap_date(qc_ctx *ctx, const char *path, int64_t mtime)
{
    char buf[24];
    ssize_t n = ctx->io->getxattr(ctx->io_user, path, DATE_XATTR, buf, sizeof(buf) - 1);
    if (n <= 0)
        return mtime;
    buf[n] = 0;
    char *end;
    long long v = strtoll(buf, &end, 10);
    return *end || v <= 0 ? mtime : (int64_t)v;
}

void qc_snap_set_date(qc_ctx *ctx, const char *path, int64_t sec)
{
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%lld", (long long)sec);
    ctx->io->setxattr(ctx->io_user, path, DATE_XATTR, buf, (size_t)n);
}

void qc_snap_set_volume(qc_ctx *ctx, const char *path, const char *base)
{
    ctx->io->setxattr(ctx->io_user, path, VOLUME_XATTR, base, strlen(base));
}

/* The volume a snapshot file records as its own: 1 this one, -1 another, 0 none. */
static int recorded_owner(qc_ctx *ctx, const char *path, const char *base)
{
    char buf[256];
    ssize_t n = ctx->io->getxattr(ctx->io_user, path, VOLUME_XATTR, buf, sizeof(buf) - 1);
    if (n == -ERANGE)
        return -1; /* longer than any file name */
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return strcmp(buf, base) ? -1 : 1;
}

int qc_vtree_find(const qc_vtree *t, const char *name)
{
    for (size_t i = 0; i < t->count; i++)
        if (t->n[i].name && (t->n[i].kind == QC_VN_SNAPSHOT || t->n[i].kind == QC_VN_CURRENT) &&
            !strcmp(t->n[i].name, name))
            return (int)i;
    return -1;
}

/* Snapshot files are regular files in the directory, never symlinks. */
static bool regular_entry(qc_ctx *ctx, unsigned char type, const char *path)
{
    struct stat st;
    if (type != DT_UNKNOWN)
        return type == DT_REG;
    return ctx->io->lstat(ctx->io_user, path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Does file name e end in "-BASE" (a volume whose snapshots also fit BASE's pattern)? */
static bool longer_volume(const char *e, const char *base)
{
    size_t el = strlen(e), bl = strlen(base);
    return el > bl + 1 && e[el - bl - 1] == '-' && !strcmp(e + el - bl, base) && strncmp(e, "snap-", 5);
}

typedef struct dir_read {
    qc_volume *v;
    qc_vtree *t;
} dir_read;

/* One directory entry: a candidate if it is a file of our pattern or a volume with a longer name. */
static int read_entry(void *arg, const char *name, unsigned char type)
{
    qc_volume *v = ((dir_read *)arg)->v;
    qc_vtree *t = ((dir_read *)arg)->t;
    qc_ctx *ctx = v->ctx;
    bool snap = qc_volume_is_snap_entry(v, name);
    if (!snap && !longer_volume(name, v->base))
        return 0;
    char *path = qc_volume_file(v, name);
    if (!path)
        return QC_ERR_NOMEM;
    if (!regular_entry(ctx, type, path)) {
        free(path);
        return 0;
    }
    qc_vnode *n = add(ctx, t);
    if (!n) {
        free(path);
        return QC_ERR_NOMEM;
    }
    n->path = path;
    int r;
    if (!snap) {
        n->kind = QC_VN_OTHER;
        if ((r = probe(ctx, n, NULL, QC_OPEN_NOFOLLOW)) == QC_ERR_NOMEM)
            return r;
        if (r < 0)
            qc_ctx_clear_error(ctx); /* claims nothing */
        return 0;
    }
    size_t el = strlen(name), bl = strlen(v->base);
    if (!(n->name = qc_strndup(ctx, name + 5, el - bl - 6)))
        return QC_ERR_NOMEM;
    n->kind = QC_VN_SNAPSHOT;
    n->member = recorded_owner(ctx, path, v->base);
    if ((r = probe(ctx, n, "qcow2", QC_OPEN_NOFOLLOW)) == QC_ERR_NOMEM)
        return r; /* not a stray: we could not look */
    if (r < 0) { /* snapshots are qcow2 images, always */
        n->kind = QC_VN_STRAY;
        n->error = qc_strdup(ctx, ctx->err.msg);
        qc_ctx_clear_error(ctx);
        struct stat st;
        if (ctx->io->stat(ctx->io_user, path, &st) == 0) {
            n->dev = st.st_dev;
            n->ino = st.st_ino;
        }
    }
    return 0;
}

/* Read the candidates: files of our pattern and volumes with longer names. */
static int read_dir(qc_volume *v, qc_vtree *t)
{
    dir_read d = {v, t};
    return qc_sys_listdir(v->ctx, v->dir, read_entry, &d);
}

/*
 * Index of the file that node i is built on, among the files read; -1 if
 * none (*missing when its backing file does not exist at all).
 */
static int find_parent(qc_ctx *ctx, const qc_vtree *t, size_t i, bool *missing)
{
    const qc_vnode *n = &t->n[i];
    *missing = false;
    /* most backing names are siblings' file names: no stat needed */
    if (!strchr(n->backing, '/'))
        for (size_t j = 0; j < t->count; j++)
            if (j != i && !strcmp(qc_path_file(t->n[j].path), n->backing))
                return (int)j;
    char *full = qc_path_combine(ctx, n->path, n->backing);
    struct stat st;
    if (!full || ctx->io->stat(ctx->io_user, full, &st) < 0) {
        *missing = full != NULL;
        free(full);
        return -1;
    }
    free(full);
    for (size_t j = 0; j < t->count; j++)
        if (j != i && (t->n[j].dev || t->n[j].ino) && t->n[j].dev == st.st_dev && t->n[j].ino == st.st_ino)
            return (int)j;
    return -1;
}

static bool candidate(const qc_vnode *n)
{
    return n->kind == QC_VN_SNAPSHOT || n->kind == QC_VN_STRAY;
}

/* Another volume w claims the files of its own tree that fit its pattern. */
static int claim(qc_volume *v, qc_vtree *t, size_t w)
{
    bool *reach = qc_calloc(v->ctx, t->count, sizeof(*reach));
    if (!reach)
        return QC_ERR_NOMEM;
    for (int i = (int)w, guard = 0; i >= 0 && guard <= (int)t->count; i = t->n[i].parent, guard++)
        reach[i] = true;
    const char *other = qc_path_file(t->n[w].path);
    for (bool more = true; more;) {
        more = false;
        for (size_t j = 0; j < t->count; j++)
            if (!reach[j] && candidate(&t->n[j]) && t->n[j].parent >= 0 && reach[t->n[j].parent] &&
                qc_store_is_snap_entry(other, qc_path_file(t->n[j].path))) {
                reach[j] = true;
                more = true;
            }
    }
    for (size_t j = 0; j < t->count; j++)
        if (reach[j] && candidate(&t->n[j]) && t->n[j].member == 0 &&
            qc_store_is_snap_entry(other, qc_path_file(t->n[j].path)))
            t->n[j].member = -1;
    free(reach);
    return 0;
}

/* Files built on files of ours are ours (branches). */
static void closure(qc_vtree *t)
{
    for (bool more = true; more;) {
        more = false;
        for (size_t j = 0; j < t->count; j++)
            if (candidate(&t->n[j]) && t->n[j].member == 0 && t->n[j].parent >= 0 &&
                t->n[t->n[j].parent].member == 1) {
                t->n[j].member = 1;
                more = true;
            }
    }
}

/* Does candidate j also fit the pattern of another volume in the directory? */
static bool ambiguous(const qc_vtree *t, size_t j)
{
    for (size_t w = 0; w < t->count; w++)
        if (t->n[w].kind == QC_VN_OTHER && qc_store_is_snap_entry(qc_path_file(t->n[w].path), qc_path_file(t->n[j].path)))
            return true;
    return false;
}

/*
 * Decide which candidates are this volume's (member 1) and which not (-1):
 * by their record; then the live disk's chain; the files another volume
 * with a longer name reaches; branches built on ours. What is left is
 * ours if its name fits no other volume (a branch root left by deleting a
 * branch point, a file whose chain cannot be read), else not.
 */
static int membership(qc_volume *v, qc_vtree *t)
{
    t->n[0].member = 1;
    for (int i = t->n[0].parent, guard = 0; i > 0 && guard <= (int)t->count; i = t->n[i].parent, guard++) {
        if (!candidate(&t->n[i]) || t->n[i].member < 0)
            break;
        t->n[i].member = 1;
    }
    for (size_t w = 0; w < t->count; w++) {
        int r = t->n[w].kind == QC_VN_OTHER ? claim(v, t, w) : 0;
        if (r < 0)
            return r;
    }
    closure(t);
    for (size_t j = 0; j < t->count; j++)
        if (candidate(&t->n[j]) && t->n[j].member == 0 && !ambiguous(t, j))
            t->n[j].member = 1;
    closure(t);
    return 0;
}

/* Keep this volume's files; another file ours are built on stays as an external node. */
static int compact(qc_ctx *ctx, qc_vtree *t)
{
    size_t k = 0;
    int *map = qc_malloc(ctx, t->count * sizeof(*map));
    if (!map)
        return QC_ERR_NOMEM;
    for (size_t i = 0; i < t->count; i++) {
        bool base_of_ours = false;
        for (size_t j = 0; j < t->count && !base_of_ours; j++)
            base_of_ours = t->n[j].member == 1 && t->n[j].parent == (int)i;
        qc_vnode *n = &t->n[i];
        if (n->member != 1 && !base_of_ours) {
            map[i] = -1;
            free(n->name);
            free(n->path);
            free(n->backing);
            free(n->backing_fmt);
            free(n->error);
            continue;
        }
        if (n->member != 1) {
            qc_vnode e = {.kind = QC_VN_EXTERNAL, .path = n->path, .dev = n->dev, .ino = n->ino, .parent = -1};
            free(n->name);
            free(n->backing);
            free(n->backing_fmt);
            free(n->error);
            *n = e;
        }
        map[i] = (int)k;
        t->n[k++] = *n;
    }
    t->count = k;
    for (size_t i = 0; i < k; i++)
        if (t->n[i].parent >= 0)
            t->n[i].parent = map[t->n[i].parent];
    free(map);
    return 0;
}

/* Backing files of ours that are not among the files read become external nodes. */
static int externals(qc_ctx *ctx, qc_vtree *t)
{
    size_t scanned = t->count;
    for (size_t i = 0; i < scanned; i++) {
        qc_vnode *n = &t->n[i];
        if (!n->backing || n->parent >= 0 || n->missing_backing || n->kind == QC_VN_STRAY)
            continue;
        char *full = qc_path_combine(ctx, n->path, n->backing);
        if (!full)
            return QC_ERR_NOMEM;
        struct stat st;
        if (ctx->io->stat(ctx->io_user, full, &st) < 0) {
            n->missing_backing = true;
            free(full);
            continue;
        }
        int p = -1;
        for (size_t j = 0; j < t->count && p < 0; j++)
            if (j != i && t->n[j].dev == st.st_dev && t->n[j].ino == st.st_ino)
                p = (int)j;
        if (p < 0) {
            qc_vnode *e = add(ctx, t);
            if (!e) {
                free(full);
                return QC_ERR_NOMEM;
            }
            n = &t->n[i]; /* add() may move the array */
            e->kind = QC_VN_EXTERNAL;
            e->path = full;
            full = NULL;
            e->dev = st.st_dev;
            e->ino = st.st_ino;
            p = (int)(t->count - 1);
        }
        free(full);
        n->parent = p;
    }
    return 0;
}

int qc_vtree_scan(qc_volume *v, qc_vtree *t)
{
    qc_ctx *ctx = v->ctx;
    memset(t, 0, sizeof(*t));
    qc_vnode *cur = add(ctx, t);
    if (!cur || !(cur->name = qc_strdup(ctx, "current")) || !(cur->path = qc_strdup(ctx, v->path)))
        return QC_ERR_NOMEM;
    cur->kind = QC_VN_CURRENT;
    int r = probe(ctx, cur, NULL, 0);
    if (r < 0 || (r = read_dir(v, t)) < 0)
        return r;
    for (size_t i = 0; i < t->count; i++)
        if (t->n[i].backing)
            t->n[i].parent = find_parent(ctx, t, i, &t->n[i].missing_backing);
    if ((r = membership(v, t)) < 0 || (r = compact(ctx, t)) < 0 || (r = externals(ctx, t)) < 0)
        return r;
    for (int i = 0, guard = 0; i >= 0 && guard <= (int)t->count; i = t->n[i].parent, guard++)
        t->n[i].live = true;
    return 0;
}
static json_object *node_json(const qc_vtree *t, size_t i)
{
    const qc_vnode *n = &t->n[i];
    static const char *kinds[] = {"current", "snapshot", "external", "stray"};
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", n->name && n->kind != QC_VN_STRAY ? json_object_new_string(n->name) : NULL);
    json_object_object_add(o, "kind", json_object_new_string(kinds[n->kind]));
    json_object_object_add(o, "file", json_object_new_string(n->path));
    const qc_vnode *p = n->parent >= 0 ? &t->n[n->parent] : NULL;
    bool named = p && (p->kind == QC_VN_CURRENT || p->kind == QC_VN_SNAPSHOT);
    json_object_object_add(o, "parent", named ? json_object_new_string(p->name) : NULL);
    json_object_object_add(o, "backing-file", p ? json_object_new_string(p->path) : NULL);
    if (n->backing)
        json_object_object_add(o, "backing-filename", json_object_new_string(n->backing));
    json_object *ch = json_object_new_array();
    for (size_t j = 0; j < t->count; j++)
        if (t->n[j].parent == (int)i)
            json_object_array_add(ch, t->n[j].name ? json_object_new_string(t->n[j].name)
                                                   : json_object_new_string(t->n[j].path));
    json_object_object_add(o, "children", ch);
    if (n->kind != QC_VN_EXTERNAL && n->kind != QC_VN_STRAY) {
        json_object_object_add(o, "virtual-size", json_object_new_int64((int64_t)n->size));
        json_object_object_add(o, "actual-size", json_object_new_int64((int64_t)n->actual));
        json_object_object_add(o, "date-sec", json_object_new_int64(n->date));
        json_object_object_add(o, "live", json_object_new_boolean(n->live));
    }
    if (n->missing_backing)
        json_object_object_add(o, "error", json_object_new_string("backing file is missing"));
    if (n->error)
        json_object_object_add(o, "error", json_object_new_string(n->error));
    return o;
}

json_object *qc_vtree_json(const qc_vtree *t, const char *volume)
{
    json_object *o = json_object_new_object(), *a = json_object_new_array();
    json_object_object_add(o, "volume", json_object_new_string(volume));
    for (size_t i = 0; i < t->count; i++)
        json_object_array_add(a, node_json(t, i));
    json_object_object_add(o, "nodes", a);
    return o;
}
