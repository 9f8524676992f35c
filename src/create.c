/*
 * create.c - new qcow2 images laid out as qemu-img lays them out: header,
 * refcount table, refcount block, L1 table, [more refcount blocks], and
 * with preallocation=metadata the L2 tables and (sparse) data clusters.
 * A file appears atomically (temporary name, rename); a block device is
 * written in place, its header last.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void qc_create_opts_init(qc_create_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->version = 3;
    o->cluster_size = 65536;
    o->refcount_bits = 16;
}

static int bad(qc_ctx *ctx, const char *path, const char *why)
{
    return qc_fail(ctx, QC_ERR_INVALID, 0, path, "create", "'%s': %s", path, why);
}

static int log2_exact(uint64_t v)
{
    int b = 0;
    while ((1ull << b) < v && b < 63)
        b++;
    return (1ull << b) == v ? b : -1;
}

/* Virtual size of the backing file (its own format, no chain needed). */
static int backing_size(qc_ctx *ctx, const char *path, const qc_create_opts *o, uint64_t *size)
{
    char *full = qc_path_combine(ctx, path, o->backing);
    if (!full)
        return QC_ERR_NOMEM;
    qc_image *b;
    int r = qc_image_open(ctx, &b, full, o->backing_fmt, QC_OPEN_NO_BACKING | QC_OPEN_SHARE);
    if (r < 0) {
        qc_error e = ctx->err;
        qc_fail(ctx, r, e.sys_errno, path, "create", "'%s': could not open backing file: %s", path, e.msg);
    } else {
        *size = b->size;
        qc_image_close(b);
    }
    free(full);
    return r;
}

/* Unique temporary name next to path. */
static int open_temp(qc_ctx *ctx, const char *path, char **tmp)
{
    static unsigned counter;
    const char *slash = strrchr(path, '/');
    int dlen = slash ? (int)(slash - path) + 1 : 0;
    size_t n = strlen(path) + 64;
    for (int i = 0; i < 100; i++) {
        char *t = qc_malloc(ctx, n);
        if (!t)
            return QC_ERR_NOMEM;
        snprintf(t, n, "%.*s.%s.tmp-%d-%u", dlen, path, path + dlen, (int)getpid(), counter++);
        int fd = ctx->io->open(ctx->io_user, t, O_RDWR | O_CREAT | O_EXCL, 0644);
        if (fd >= 0) {
            *tmp = t;
            return fd;
        }
        free(t);
        if (fd != -EEXIST)
            return qc_fail(ctx, qc_errno_code(-fd), -fd, path, "create",
                           "Could not create '%s': %s", path, strerror(-fd));
    }
    return qc_fail(ctx, QC_ERR_EXISTS, EEXIST, path, "create", "Could not create a temporary file for '%s'", path);
}

/* fsync the directory holding path, so a rename or unlink is durable. */
int qc_sync_dir(qc_ctx *ctx, const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? qc_strndup(ctx, path, slash == path ? 1 : (size_t)(slash - path)) : qc_strdup(ctx, ".");
    if (!dir)
        return QC_ERR_NOMEM;
    int fd = qc_sys_open(ctx, dir, O_RDONLY | O_DIRECTORY, 0);
    int r = fd < 0 ? fd : qc_sys_fsync(ctx, fd, dir);
    qc_sys_close(ctx, fd);
    free(dir);
    return r;
}

/* Put the finished temporary file in place; never replaces an existing file. */
int qc_commit_temp(qc_ctx *ctx, const char *tmp, const char *path)
{
    int r = ctx->io->rename(ctx->io_user, tmp, path, QC_RENAME_NOREPLACE);
    if (r < 0)
        return qc_fail(ctx, qc_errno_code(-r), -r, path, "create",
                       r == -EEXIST ? "'%s' already exists" : "Could not create '%s': %s", path, strerror(-r));
    return qc_sync_dir(ctx, path);
}

typedef struct layout {
    uint64_t cs, rt, rt_clusters, rb0, l1, l1_clusters, rb_more, n_rb, l2, total;
} layout;

static int plan(qc_ctx *ctx, const char *path, const qc_create_opts *o, uint64_t size,
                uint32_t l2_bits, layout *L, uint64_t *l1_size)
{
    uint64_t cs = o->cluster_size;
    uint64_t cover = cs << l2_bits;
    *l1_size = (size + cover - 1) / cover;
    if (*l1_size * 8 > QC_MAX_L1_BYTES)
        return bad(ctx, path, "image size is too large for this cluster size (try a larger cluster size)");
    uint64_t rb_entries = cs * 8 / o->refcount_bits;
    L->cs = cs;
    L->l1_clusters = (*l1_size * 8 + cs - 1) / cs;
    uint64_t pre = o->preallocation ? *l1_size + (size + cs - 1) / cs : 0;
    L->rt_clusters = 1;
    L->n_rb = 1;
    for (;;) {
        L->total = 1 + L->rt_clusters + L->n_rb + L->l1_clusters + pre;
        uint64_t nrb = (L->total + rb_entries - 1) / rb_entries;
        uint64_t nrt = (nrb * 8 + cs - 1) / cs;
        if (nrb == L->n_rb && nrt == L->rt_clusters)
            break;
        L->n_rb = nrb;
        L->rt_clusters = nrt;
    }
    if (L->rt_clusters * cs > QC_MAX_REFTABLE_BYTES)
        return bad(ctx, path, "image size is too large for this cluster size and refcount width");
    L->rt = 1;
    L->rb0 = 1 + L->rt_clusters;
    L->l1 = L->rb0 + 1;
    L->rb_more = L->l1 + L->l1_clusters;
    L->l2 = L->rb_more + L->n_rb - 1;
    return 0;
}

/*
 * Write the image into fd. Cluster 0 goes last: a file is still under its
 * temporary name, and a block device has its old header wiped first
 * (synced), so until the final header write it holds no image at all,
 * never a header over half-written tables.
 */
static int write_image(qc_ctx *ctx, int fd, const char *tmp, const char *path, const qc_create_opts *o,
                       uint64_t size, uint32_t cbits, uint32_t l2_bits, const layout *L, uint64_t l1_size,
                       bool device)
{
    uint64_t cs = L->cs;
    uint8_t pad[7] = {0}; /* header bytes 105..111 */
    qc_header h;
    memset(&h, 0, sizeof(h));
    h.version = (uint32_t)o->version;
    h.cluster_bits = cbits;
    h.size = size;
    h.l1_size = (uint32_t)l1_size;
    h.l1_offset = l1_size ? L->l1 * cs : 0;
    h.rt_offset = L->rt * cs;
    h.rt_clusters = (uint32_t)L->rt_clusters;
    h.refcount_order = (uint32_t)log2_exact(o->refcount_bits);
    if (o->version >= 3) {
        h.header_length = 112;
        h.compression_type = (uint8_t)o->compression_type;
        h.extra_len = 112 - 105;
        h.extra = pad;
        if (o->compression_type)
            h.incompat |= QC_INCOMPAT_COMPRESSION;
        if (o->extended_l2)
            h.incompat |= QC_INCOMPAT_EXTL2;
        if (o->lazy_refcounts)
            h.compat |= QC_COMPAT_LAZY;
    }
    h.backing_name = (char *)o->backing;
    h.backing_fmt = (char *)o->backing_fmt;

    uint8_t *buf = qc_calloc(ctx, 1, (size_t)cs), *hbuf = qc_calloc(ctx, 1, (size_t)cs);
    if (!buf || !hbuf) {
        free(buf);
        free(hbuf);
        return QC_ERR_NOMEM;
    }
    int r = qc_header_serialize(ctx, &h, hbuf, (size_t)cs, path);
    if (r == 0 && device && (r = qc_pwrite_full(ctx, fd, tmp, buf, (size_t)cs, 0)) == 0)
        r = qc_sys_fsync(ctx, fd, tmp);

    /* Refcount table: block 0 after the table, the others after L1. */
    uint64_t per = cs / 8;
    for (uint64_t c = 0; c < L->rt_clusters && r == 0; c++) {
        memset(buf, 0, (size_t)cs);
        for (uint64_t i = 0; i < per; i++) {
            uint64_t k = c * per + i;
            if (k < L->n_rb)
                qc_put64(buf + i * 8, (k == 0 ? L->rb0 : L->rb_more + k - 1) * cs);
        }
        r = qc_pwrite_full(ctx, fd, tmp, buf, (size_t)cs, (L->rt + c) * cs);
    }
    uint64_t rb_entries = cs * 8 / o->refcount_bits;
    for (uint64_t k = 0; k < L->n_rb && r == 0; k++) {
        memset(buf, 0, (size_t)cs);
        for (uint64_t i = 0; i < rb_entries; i++)
            if (k * rb_entries + i < L->total)
                qc_rb_put(o->refcount_bits, buf, i, 1);
        r = qc_pwrite_full(ctx, fd, tmp, buf, (size_t)cs, (k == 0 ? L->rb0 : L->rb_more + k - 1) * cs);
    }

    /* L1 (exact size, as qemu-img writes it), then preallocated L2 tables. */
    uint64_t entries = 1ull << l2_bits, esz = o->extended_l2 ? 16 : 8;
    uint64_t data = L->l2 + l1_size, nclusters = (size + cs - 1) / cs;
    for (uint64_t c = 0; c < L->l1_clusters && r == 0; c++) {
        memset(buf, 0, (size_t)cs);
        uint64_t n = qc_min(per, l1_size - c * per);
        for (uint64_t i = 0; i < n && o->preallocation; i++)
            qc_put64(buf + i * 8, ((L->l2 + c * per + i) * cs) | QC_OFLAG_COPIED);
        size_t len = o->preallocation || c + 1 < L->l1_clusters || L->n_rb > 1 ? (size_t)cs : (size_t)(n * 8);
        r = qc_pwrite_full(ctx, fd, tmp, buf, len, (L->l1 + c) * cs);
    }
    for (uint64_t t = 0; o->preallocation && t < l1_size && r == 0; t++) {
        memset(buf, 0, (size_t)cs);
        for (uint64_t i = 0; i < entries; i++) {
            uint64_t g = t * entries + i;
            if (g >= nclusters)
                break;
            /* With extended L2 no subcluster is allocated: the backing shows through. */
            qc_put64(buf + i * esz, ((data + g) * cs) | QC_OFLAG_COPIED);
        }
        r = qc_pwrite_full(ctx, fd, tmp, buf, (size_t)cs, (L->l2 + t) * cs);
    }
    if (r == 0 && o->preallocation && nclusters && !device) {
        int t = ctx->io->ftruncate(ctx->io_user, fd, (data + nclusters) * cs);
        if (t < 0)
            r = qc_fail(ctx, qc_errno_code(-t), -t, path, "create", "Could not extend '%s': %s", path, strerror(-t));
    }
    if (r == 0 && device)
        r = qc_sys_fsync(ctx, fd, tmp); /* the tables before the header that makes them an image */
    if (r == 0)
        r = qc_pwrite_full(ctx, fd, tmp, hbuf, (size_t)cs, 0);
    if (r == 0)
        r = qc_sys_fsync(ctx, fd, tmp);
    free(buf);
    free(hbuf);
    return r;
}

/* An existing block device receives the image in place: it must be large enough. */
static int open_device(qc_ctx *ctx, const char *path, const layout *L)
{
    int fd = qc_sys_open(ctx, path, O_RDWR, 0);
    if (fd < 0)
        return fd;
    uint64_t cap, need = L->total * L->cs;
    int r = qc_sys_size(ctx, fd, path, &cap, NULL);
    if (r == 0 && need > cap)
        r = qc_fail(ctx, QC_ERR_NOSPC, ENOSPC, path, "create",
                    "'%s': the device is too small for this image: %llu more bytes needed (its capacity is %llu bytes)",
                    path, (unsigned long long)(need - cap), (unsigned long long)cap);
    if (r < 0) {
        qc_sys_close(ctx, fd);
        return r;
    }
    return fd;
}

int qc_create_check_format(qc_ctx *ctx, const char *path, const qc_create_opts *o)
{
    int cbits = log2_exact(o->cluster_size);
    int rbits = log2_exact(o->refcount_bits);
    if (o->version != 2 && o->version != 3)
        return bad(ctx, path, "compat must be 0.10 or 1.1");
    if (cbits < 9 || cbits > 21)
        return bad(ctx, path, "cluster size must be a power of two between 512 and 2M");
    if (rbits < 0 || rbits > 6)
        return bad(ctx, path, "refcount_bits must be a power of two between 1 and 64");
    if (o->version == 2 && (o->refcount_bits != 16 || o->lazy_refcounts || o->extended_l2 || o->compression_type))
        return bad(ctx, path, "compat=0.10 supports only refcount_bits=16, no lazy refcounts, no extended L2, zlib");
    if (o->extended_l2 && cbits < 14)
        return bad(ctx, path, "extended L2 entries need a cluster size of at least 16k");
    if (o->compression_type < 0 || o->compression_type > 1)
        return bad(ctx, path, "compression_type must be zlib or zstd");
    return 0;
}

/* Validate, plan and write; direct: path is the caller's temporary file. */
static int create_image(qc_ctx *ctx, const char *path, const qc_create_opts *o, bool direct)
{
    int cbits = log2_exact(o->cluster_size);
    int r0 = qc_create_check_format(ctx, path, o);
    if (r0 < 0)
        return r0;
    if (o->preallocation < 0 || o->preallocation > 1)
        return bad(ctx, path, "preallocation must be off or metadata");
    if (o->backing && !o->backing_fmt)
        return bad(ctx, path, "Backing file specified without backing format (use -F)");
    if (o->backing && strlen(o->backing) > QC_MAX_BACKING_NAME)
        return bad(ctx, path, "backing file name is longer than 1023 bytes");
    if (o->backing && (!strncmp(o->backing, "json:", 5) || qc_path_has_protocol(o->backing)))
        return qc_fail(ctx, QC_ERR_POLICY, 0, path, "create",
                       "'%s': json: and protocol backing names are refused", path);
    if (o->backing_fmt && strcmp(o->backing_fmt, "qcow2") && strcmp(o->backing_fmt, "raw"))
        return bad(ctx, path, "backing format must be qcow2 or raw");
    if (o->backing && o->preallocation && !o->extended_l2)
        return bad(ctx, path, "Backing file and preallocation can only be used at the same time if extended_l2 is on");

    uint64_t size = o->size;
    if (o->backing && o->backing_unchecked) {
        if (!size)
            return bad(ctx, path, "a size is needed when the backing file is not opened");
    } else if (o->backing) {
        uint64_t bs;
        int r = backing_size(ctx, path, o, &bs);
        if (r < 0)
            return r;
        if (!size)
            size = bs;
    } else if (!size) {
        return bad(ctx, path, "image size must be given");
    }
    size = qc_align_up(size, 512);
    if (size > QC_MAX_VIRTUAL_SIZE)
        return bad(ctx, path, "image size is too large");
    struct stat st;
    bool device = ctx->io->stat(ctx->io_user, path, &st) == 0 && S_ISBLK(st.st_mode);
    if (!device && ctx->io->stat(ctx->io_user, path, &st) == 0)
        return qc_fail(ctx, QC_ERR_EXISTS, EEXIST, path, "create", "'%s' already exists", path);

    uint32_t l2_bits = (uint32_t)cbits - (o->extended_l2 ? 4 : 3);
    layout L = {0};
    uint64_t l1_size;
    int r = plan(ctx, path, o, size, l2_bits, &L, &l1_size);
    if (r < 0)
        return r;
    if (device) {
        int fd = open_device(ctx, path, &L);
        if (fd < 0)
            return fd;
        r = write_image(ctx, fd, path, path, o, size, (uint32_t)cbits, l2_bits, &L, l1_size, true);
        qc_sys_close(ctx, fd);
        return r;
    }
    char *tmp = NULL;
    int fd = direct ? ctx->io->open(ctx->io_user, path, O_RDWR | O_CREAT | O_EXCL, 0644) : open_temp(ctx, path, &tmp);
    if (fd < 0)
        return direct ? qc_fail(ctx, qc_errno_code(-fd), -fd, path, "create", "Could not create '%s': %s", path,
                                strerror(-fd))
                      : fd;
    r = write_image(ctx, fd, direct ? path : tmp, path, o, size, (uint32_t)cbits, l2_bits, &L, l1_size, false);
    qc_sys_close(ctx, fd);
    if (r == 0 && !direct)
        r = qc_commit_temp(ctx, tmp, path);
    if (r < 0)
        ctx->io->unlink(ctx->io_user, direct ? path : tmp);
    free(tmp);
    return r;
}

int qc_create(qc_ctx *ctx, const char *path, const qc_create_opts *o)
{
    return create_image(ctx, path, o, false);
}

int qc_create_direct(qc_ctx *ctx, const char *path, const qc_create_opts *o)
{
    return create_image(ctx, path, o, true);
}
