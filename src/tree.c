/*
 * tree.c - the snapshot tree of a volume, rebuilt from the files in its
 * directory and their backing names: FILE is "current", snap-NAME-FILE
 * is snapshot NAME, a backing file that is neither (a linked clone's base,
 * another volume) is "external", a snap-*-FILE that cannot be read is
 * "stray". Parents are matched by (device, inode), not by name.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static qc_vnode *add(qc_vtree *t)
{
    qc_vnode *n = realloc(t->n, (t->count + 1) * sizeof(*n));
    if (!n)
        return NULL;
    t->n = n;
    memset(&n[t->count], 0, sizeof(*n));
    n[t->count].parent = -1;
    return &n[t->count++];
}

/* Header facts of one file (no chain, no locks that disturb QEMU). */
static int probe(qc_ctx *ctx, qc_vnode *n, const char *fmt)
{
    qc_image *img;
    int r = qc_image_open(ctx, &img, n->path, fmt, QC_OPEN_NO_BACKING | QC_OPEN_NO_LOCK);
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
        if ((r = qc_backing_allowed(img)) == 0 && img->fmt == QC_FMT_QCOW2 && img->hdr.backing_name) {
            n->backing = qc_strdup(ctx, img->hdr.backing_name);
            if (img->hdr.backing_fmt)
                n->backing_fmt = qc_strdup(ctx, img->hdr.backing_fmt);
        }
    }
    qc_image_close(img);
    return r;
}

#define DATE_XATTR "user.qcow2chain.created"

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

int qc_vtree_find(const qc_vtree *t, const char *name)
{
    for (size_t i = 0; i < t->count; i++)
        if (t->n[i].name && (t->n[i].kind == QC_VN_SNAPSHOT || t->n[i].kind == QC_VN_CURRENT) &&
            !strcmp(t->n[i].name, name))
            return (int)i;
    return -1;
}

int qc_vtree_scan(qc_volume *v, qc_vtree *t)
{
    qc_ctx *ctx = v->ctx;
    memset(t, 0, sizeof(*t));
    qc_vnode *cur = add(t);
    if (!cur || !(cur->name = qc_strdup(ctx, "current")) || !(cur->path = qc_strdup(ctx, v->path)))
        return QC_ERR_NOMEM;
    cur->kind = QC_VN_CURRENT;
    int r = probe(ctx, cur, NULL);
    if (r < 0)
        return r;

    DIR *d = opendir(v->dir);
    if (!d)
        return qc_fail(ctx, qc_errno_code(errno), errno, v->dir, "scan", "Could not list '%s': %s", v->dir,
                       strerror(errno));
    size_t bl = strlen(v->base);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!qc_volume_is_snap_entry(v, de->d_name))
            continue;
        size_t el = strlen(de->d_name);
        qc_vnode *n = add(t);
        if (!n || !(n->name = qc_strndup(ctx, de->d_name + 5, el - bl - 6)) ||
            !(n->path = qc_volume_file(v, de->d_name))) {
            closedir(d);
            return QC_ERR_NOMEM;
        }
        n->kind = QC_VN_SNAPSHOT;
        if (probe(ctx, n, "qcow2") < 0) { /* snapshots are qcow2 images, always */
            n->kind = QC_VN_STRAY;
            n->error = qc_strdup(ctx, ctx->err.msg);
            qc_ctx_clear_error(ctx);
        }
    }
    closedir(d);

    /* Parents by identity; unknown backing files become external nodes. */
    size_t scanned = t->count;
    for (size_t i = 0; i < scanned; i++) {
        qc_vnode *n = &t->n[i];
        if (!n->backing || n->kind == QC_VN_STRAY)
            continue;
        /* most backing names are siblings' file names: no stat needed */
        int p = -1;
        if (!strchr(n->backing, '/'))
            for (size_t j = 0; j < scanned && p < 0; j++) {
                const char *b = strrchr(t->n[j].path, '/');
                if (j != i && t->n[j].kind != QC_VN_STRAY && !strcmp(b ? b + 1 : t->n[j].path, n->backing))
                    p = (int)j;
            }
        if (p >= 0) {
            n->parent = p;
            continue;
        }
        char *full = qc_path_combine(ctx, n->path, n->backing);
        if (!full)
            return QC_ERR_NOMEM;
        struct stat st;
        if (ctx->io->stat(ctx->io_user, full, &st) < 0) {
            n->missing_backing = true;
            free(full);
            continue;
        }
        for (size_t j = 0; j < t->count && p < 0; j++)
            if (t->n[j].kind != QC_VN_STRAY && t->n[j].dev == st.st_dev && t->n[j].ino == st.st_ino && j != i)
                p = (int)j;
        if (p < 0) {
            qc_vnode *e = add(t);
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
            e->size = 0;
            p = (int)(t->count - 1);
        }
        free(full);
        n->parent = p;
    }
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
    json_object_object_add(o, "parent", p && p->kind != QC_VN_EXTERNAL ? json_object_new_string(p->name) : NULL);
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
