/*
 * test-oom - the out-of-memory matrix (as SQLite's): each main operation
 * is run again and again on images in memory (memfs), allocation number k
 * failing in run k, until a run needs fewer than k. Every failure must be
 * a clean QC_ERR_NOMEM (no crash, no leak: ASan watches), and afterwards,
 * once recovered as the next operation would, every image must pass our
 * check and show the guest data of before or after the operation.
 * Only failures and one line per operation are printed. OOM_ONLY=N runs
 * only allocation N of each operation and says what happened.
 */
#include "internal.h"
#include "memfs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, count;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        bool ok_ = (cond);                                                      \
        if (!ok_) {                                                             \
            failures++;                                                         \
            printf("not ok %d - ", ++count);                                    \
            printf(__VA_ARGS__);                                                \
            printf(" (%s:%d)\n", __FILE__, __LINE__);                           \
        }                                                                       \
    } while (0)

#define VOL "v/vm-1-disk-0.qcow2"
#define SNAP_A "v/snap-a-vm-1-disk-0.qcow2"
#define SNAP_B "v/snap-b-vm-1-disk-0.qcow2"
#define VIEW 24576

static long nalloc, fail_at;

static void *t_malloc(void *u, size_t n)
{
    (void)u;
    return ++nalloc == fail_at ? NULL : malloc(n);
}

static void *t_realloc(void *u, void *p, size_t n)
{
    (void)u;
    return ++nalloc == fail_at ? NULL : realloc(p, n);
}

static const qc_alloc failing = {t_malloc, t_realloc};

static qc_ctx *mem_ctx(void)
{
    qc_ctx *ctx = qc_ctx_new();
    if (!ctx)
        abort();
    qc_ctx_set_io(ctx, memfs_io(), NULL);
    qc_ctx_set_cache_size(ctx, 64 * 1024);
    return ctx;
}

static qc_volume_opts vopts(void)
{
    qc_volume_opts o;
    qc_volume_opts_init(&o);
    o.cluster_size = 16384;
    o.lock_timeout_ms = 1;
    return o;
}

static int fill(qc_ctx *ctx, const char *path, int byte, uint64_t off, size_t n)
{
    qc_image *img = NULL;
    uint8_t buf[8192];
    memset(buf, byte, sizeof(buf));
    int r = qc_image_open(ctx, &img, path, "qcow2", QC_OPEN_RDWR);
    for (size_t done = 0; r == 0 && done < n; done += sizeof(buf))
        r = qc_image_write(img, buf, off + done, sizeof(buf));
    if (r == 0)
        r = qc_image_flush(img);
    qc_image_close(img);
    return r;
}

/* An empty memfs with directory v, and create options of cluster size cs. */
static qc_ctx *setup_start(qc_create_opts *o, uint32_t cs)
{
    memfs_reset();
    memfs_mkdir("v");
    qc_create_opts_init(o);
    o->size = 1 << 20;
    o->cluster_size = cs;
    return mem_ctx();
}

static void setup_end(qc_ctx *ctx, int r)
{
    if (r < 0) {
        printf("Bail out! setup: %s\n", qc_ctx_error(ctx)->msg);
        exit(1);
    }
    qc_ctx_free(ctx);
}

/* base.qcow2 (1s in [0, 16k)) <- top.qcow2 (2s in [8k, 24k)), 512-byte clusters: many tables */
static void setup_chain(void)
{
    qc_create_opts o;
    qc_ctx *ctx = setup_start(&o, 512);
    int r = qc_create(ctx, "v/base.qcow2", &o);
    o.backing = "base.qcow2";
    o.backing_fmt = "qcow2";
    if (r == 0)
        r = qc_create(ctx, "v/top.qcow2", &o);
    if (r == 0)
        r = fill(ctx, "v/base.qcow2", 1, 0, 16384);
    if (r == 0)
        r = fill(ctx, "v/top.qcow2", 2, 8192, 16384);
    setup_end(ctx, r);
}

/* the chain as a volume: snap-a (1s) <- snap-b (2s) <- live (3s in [16k, 24k)) */
static void setup_volume(void)
{
    qc_create_opts o;
    qc_ctx *ctx = setup_start(&o, 16384);
    o.extended_l2 = true;
    qc_volume_opts vo = vopts();
    int r = qc_create(ctx, VOL, &o);
    if (r == 0)
        r = fill(ctx, VOL, 1, 0, 16384);
    if (r == 0)
        r = qc_volume_snapshot(ctx, VOL, "a", &vo);
    if (r == 0)
        r = fill(ctx, VOL, 2, 8192, 16384);
    if (r == 0)
        r = qc_volume_snapshot(ctx, VOL, "b", &vo);
    if (r == 0)
        r = fill(ctx, VOL, 3, 16384, 8192);
    setup_end(ctx, r);
}

/* The first VIEW bytes of path's guest view (with its chain); false if it cannot be read. */
static bool view(qc_ctx *ctx, const char *path, uint8_t *buf)
{
    qc_image *img = NULL;
    if (qc_image_open(ctx, &img, path, NULL, 0) < 0)
        return false;
    int r = qc_image_read(img, buf, 0, VIEW);
    qc_image_close(img);
    return r == 0;
}

/* path passes our check: no corruption (a leak is allowed: QEMU repairs it too). */
static bool valid(qc_ctx *ctx, const char *path, char *why, size_t n)
{
    json_object *o = NULL, *c;
    int r = qc_check(ctx, &o, path, "qcow2", QC_REPAIR_NONE);
    bool ok = r == 0 && (!json_object_object_get_ex(o, "corruptions", &c) || json_object_get_int64(c) == 0) &&
              (!json_object_object_get_ex(o, "check-errors", &c) || json_object_get_int64(c) == 0);
    const char *w = r < 0 ? qc_ctx_error(ctx)->msg : json_object_to_json_string(o);
    size_t l = strnlen(w, n - 1);
    memcpy(why, w, l);
    why[l] = 0;
    json_object_put(o);
    return ok;
}

typedef struct op {
    const char *name;
    bool volume;            /* set up as a volume (else the chain) */
    const char *const *files; /* checked afterwards (those that exist) */
    const char *view;       /* its guest view must be before's or after's */
    int (*run)(qc_ctx *ctx);
} op;

static int op_read(qc_ctx *ctx)
{
    uint8_t buf[VIEW];
    return view(ctx, "v/top.qcow2", buf) ? 0 : qc_ctx_error(ctx)->code;
}

static int op_write(qc_ctx *ctx) { return fill(ctx, "v/top.qcow2", 5, 4096, 16384); }
static int op_commit(qc_ctx *ctx) { return qc_commit(ctx, "v/top.qcow2", "qcow2", NULL, 0); }
static int op_rebase(qc_ctx *ctx) { return qc_rebase(ctx, "v/top.qcow2", "qcow2", "", NULL, 0); }

static int op_check(qc_ctx *ctx)
{
    json_object *o = NULL;
    int r = qc_check(ctx, &o, "v/top.qcow2", "qcow2", QC_REPAIR_NONE);
    json_object_put(o);
    return r;
}

static int op_snapshot(qc_ctx *ctx)
{
    qc_volume_opts o = vopts();
    return qc_volume_snapshot(ctx, VOL, "c", &o);
}

static int op_rollback(qc_ctx *ctx)
{
    qc_volume_opts o = vopts();
    return qc_volume_rollback(ctx, VOL, "a", &o);
}

static int op_delete(qc_ctx *ctx)
{
    qc_volume_opts o = vopts();
    json_object *out = NULL;
    int r = qc_volume_delete_snapshot(ctx, &out, VOL, "b", &o);
    json_object_put(out);
    return r;
}

static int op_internal(qc_ctx *ctx) { return qc_snapshot_create(ctx, VOL, "s1"); }

static const char *const chain_files[] = {"v/base.qcow2", "v/top.qcow2", NULL};
static const char *const vol_files[] = {VOL, SNAP_A, SNAP_B, "v/snap-c-vm-1-disk-0.qcow2", NULL};

static const op ops[] = {
    {"open+read", false, chain_files, "v/top.qcow2", op_read},
    {"write", false, chain_files, NULL, op_write},
    {"commit", false, chain_files, "v/top.qcow2", op_commit},
    {"rebase", false, chain_files, "v/top.qcow2", op_rebase},
    {"check", false, chain_files, "v/top.qcow2", op_check},
    {"snapshot create", true, vol_files, VOL, op_snapshot},
    {"snapshot rollback", true, vol_files, VOL, op_rollback},
    {"snapshot delete", true, vol_files, VOL, op_delete},
    {"internal snapshot create", true, vol_files, VOL, op_internal},
};

/* After run k: recovered, every file valid, the view one of the two. */
static void verify(const op *o, long k, const uint8_t *before, const uint8_t *after)
{
    qc_ctx *ctx = mem_ctx();
    char why[1024];
    if (o->volume) {
        qc_volume_opts vo = vopts();
        int r = qc_volume_recover(ctx, VOL, &vo);
        CHECK(r == 0, "%s, allocation %ld failed: the volume recovers: %s", o->name, k, qc_ctx_error(ctx)->msg);
    }
    for (const char *const *f = o->files; *f; f++) {
        struct stat st;
        if (ctx->io->stat(ctx->io_user, *f, &st) < 0)
            continue;
        CHECK(valid(ctx, *f, why, sizeof(why)), "%s, allocation %ld failed: %s is valid: %s", o->name, k, *f, why);
    }
    uint8_t buf[VIEW];
    if (o->view)
        CHECK(view(ctx, o->view, buf) && (!memcmp(buf, before, VIEW) || (after && !memcmp(buf, after, VIEW))),
              "%s, allocation %ld failed: the guest view of %s is before's or after's", o->name, k, o->view);
    qc_ctx_free(ctx);
}

/* One run with allocation k failing (0: none); the allocations it made. */
static long run(const op *o, long k, uint8_t *before, int *rc, char *msg, size_t n)
{
    o->volume ? setup_volume() : setup_chain();
    qc_ctx *ctx = mem_ctx();
    if (o->view && !view(ctx, o->view, before))
        CHECK(0, "%s: the view before reads", o->name);
    nalloc = 0;
    fail_at = k;
    qc_ctx_set_alloc(ctx, &failing, NULL);
    *rc = o->run(ctx);
    fail_at = 0;
    size_t l = strnlen(qc_ctx_error(ctx)->msg, n - 1);
    memcpy(msg, qc_ctx_error(ctx)->msg, l);
    msg[l] = 0;
    qc_ctx_free(ctx);
    return nalloc;
}

static void matrix(const op *o)
{
    uint8_t before[VIEW], after[VIEW];
    char msg[512];
    int r;
    long total = run(o, 0, before, &r, msg, sizeof(msg)), nomem = 0;
    CHECK(r == 0, "%s: runs: %s", o->name, msg);
    qc_ctx *ctx = mem_ctx();
    if (o->view && !view(ctx, o->view, after))
        CHECK(0, "%s: the view after reads", o->name);
    qc_ctx_free(ctx);
    const char *only = getenv("OOM_ONLY"); /* "N": only allocation N, telling what happened */
    for (long k = only ? atol(only) : 1; k <= (only ? atol(only) : total); k++) {
        run(o, k, before, &r, msg, sizeof(msg));
        if (only)
            printf("# %s, allocation %ld failed: %d %s\n", o->name, k, r, msg);
        if (r < 0) {
            nomem++;
            CHECK(r == QC_ERR_NOMEM && msg[0], "%s: allocation %ld failed: a clean out-of-memory error (%d: %s)",
                  o->name, k, r, msg);
        }
        verify(o, k, before, after);
    }
    printf("# %s: each of its %ld allocations failed in turn, %ld runs ended out of memory\n", o->name, total,
           nomem);
}

int main(void)
{
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        int before = failures;
        matrix(&ops[i]);
        count++;
        if (failures > before)
            printf("not ok %d - %s: %d findings above\n", count, ops[i].name, failures - before);
        else
            printf("ok %d - %s: every allocation failure is clean, every image valid\n", count, ops[i].name);
    }
    memfs_reset();
    printf("1..%d\n", count);
    return failures ? 1 : 0;
}
