/*
 * test-seam - the I/O seam's directory members on POSIX and in memory, and
 * the fault layer's power cut over either: directory changes no fsync of
 * their directory made durable are undone, durable ones stay.
 */
#include "internal.h"
#include "memfs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures, count;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        bool ok_ = (cond);                                                      \
        count++;                                                                \
        printf("%s %d - ", ok_ ? "ok" : "not ok", count);                       \
        printf(__VA_ARGS__);                                                    \
        if (!ok_) {                                                             \
            failures++;                                                         \
            printf(" (%s:%d)", __FILE__, __LINE__);                             \
        }                                                                       \
        printf("\n");                                                           \
    } while (0)

typedef struct names {
    char list[512];
    int hidden;
} names;

static int collect(void *arg, const char *name, unsigned char type)
{
    names *n = arg;
    (void)type;
    n->hidden += !strncmp(name, ".qc-fault-", 10);
    strncat(n->list, name, sizeof(n->list) - strlen(n->list) - 2);
    strcat(n->list, " ");
    return 0;
}

static bool has(qc_ctx *ctx, const char *path)
{
    struct stat st;
    return ctx->io->stat(ctx->io_user, path, &st) == 0;
}

/* Contents of path through the table (up to 15 bytes), "" when missing. */
static const char *content(qc_ctx *ctx, const char *path)
{
    static char buf[16];
    memset(buf, 0, sizeof(buf));
    int fd = ctx->io->open(ctx->io_user, path, O_RDONLY, 0);
    if (fd >= 0) {
        (void)ctx->io->pread(ctx->io_user, fd, buf, sizeof(buf) - 1, 0);
        ctx->io->close(ctx->io_user, fd);
    }
    return buf;
}

/*
 * In dir: "old" exists; write "new" (created, data synced), rename it to
 * "live", remove "old", link "live" as "copy"; with sync_dir the directory
 * is synced then; the next call cuts the power.
 */
static void power_cut(const char *how, const qc_io *lower, const char *dir, bool sync_dir)
{
    char old[256], nw[256], live[256], cp[256];
    snprintf(old, sizeof(old), "%s/old", dir);
    snprintf(nw, sizeof(nw), "%s/new", dir);
    snprintf(live, sizeof(live), "%s/live", dir);
    snprintf(cp, sizeof(cp), "%s/copy", dir);
    qc_ctx *ctx = qc_ctx_new();
    /* mutating calls: pwrite old, fsync old, dir fsync, pwrite new, fsync new, rename, unlink, link, [dir fsync] */
    qc_fault *f = qc_fault_new_over(lower, NULL, QC_FAULT_CRASH, sync_dir ? 10 : 9, 0, 0);
    qc_ctx_set_fault(ctx, f);
    int fd = ctx->io->open(ctx->io_user, old, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    ctx->io->pwrite(ctx->io_user, fd, "old", 3, 0);
    ctx->io->fsync(ctx->io_user, fd);
    ctx->io->close(ctx->io_user, fd);
    CHECK(qc_sync_dir(ctx, old) == 0, "%s: directory synced", how);
    fd = ctx->io->open(ctx->io_user, nw, O_CREAT | O_WRONLY, 0600);
    ctx->io->pwrite(ctx->io_user, fd, "new", 3, 0);
    ctx->io->fsync(ctx->io_user, fd);
    ctx->io->close(ctx->io_user, fd);
    CHECK(ctx->io->rename(ctx->io_user, nw, live, 0) == 0, "%s: rename", how);
    CHECK(ctx->io->unlink(ctx->io_user, old) == 0 && !has(ctx, old), "%s: unlink", how);
    CHECK(ctx->io->link(ctx->io_user, live, cp) == 0, "%s: link", how);
    names n = {{0}, 0};
    qc_sys_listdir(ctx, dir, collect, &n);
    CHECK(!strstr(n.list, ".qc-fault") && strstr(n.list, "live") && !strstr(n.list, "old"),
          "%s: a listing shows the changes, not the kept file: %s", how, n.list);
    if (sync_dir)
        CHECK(qc_sync_dir(ctx, live) == 0, "%s: directory synced again", how);
    struct stat st;
    CHECK(ctx->io->ftruncate(ctx->io_user, 12345, 0) == -EIO && qc_fault_fired(f), "%s: power cut", how);
    qc_ctx_set_fault(ctx, NULL);
    qc_fault_free(f);
    qc_ctx_set_io(ctx, lower, NULL);
    if (sync_dir) {
        CHECK(!has(ctx, old) && !strcmp(content(ctx, live), "new") && !strcmp(content(ctx, cp), "new") &&
                  !has(ctx, nw),
              "%s: changes made durable by the directory fsync stay", how);
    } else {
        CHECK(!strcmp(content(ctx, old), "old"), "%s: the unsynced unlink is undone", how);
        CHECK(!has(ctx, live) && !has(ctx, cp) && !has(ctx, nw),
              "%s: the unsynced create, rename and link are undone", how);
    }
    names m = {{0}, 0};
    qc_sys_listdir(ctx, dir, collect, &m);
    CHECK(m.hidden == 0, "%s: no kept file is left behind: %s", how, m.list);
    (void)st;
    ctx->io->unlink(NULL, old);
    ctx->io->unlink(NULL, live);
    ctx->io->unlink(NULL, cp);
    qc_ctx_free(ctx);
}

/* No power cut: changes stay, kept files go when the fault layer does. */
static void no_cut(const char *how, const qc_io *lower, const char *dir)
{
    char a[256], b[256];
    snprintf(a, sizeof(a), "%s/a", dir);
    snprintf(b, sizeof(b), "%s/b", dir);
    qc_ctx *ctx = qc_ctx_new();
    qc_ctx_set_io(ctx, lower, NULL);
    int fd = ctx->io->open(ctx->io_user, a, O_CREAT | O_WRONLY, 0600);
    ctx->io->close(ctx->io_user, fd);
    fd = ctx->io->open(ctx->io_user, b, O_CREAT | O_WRONLY, 0600);
    ctx->io->close(ctx->io_user, fd);
    qc_fault *f = qc_fault_new_over(lower, NULL, QC_FAULT_CRASH, 1000, 0, 0);
    qc_ctx_set_fault(ctx, f);
    ctx->io->rename(ctx->io_user, a, b, 0); /* replaces b: kept until durable */
    qc_ctx_set_fault(ctx, NULL);
    qc_fault_free(f);
    qc_ctx_set_io(ctx, lower, NULL);
    names n = {{0}, 0};
    qc_sys_listdir(ctx, dir, collect, &n);
    CHECK(n.hidden == 0 && !has(ctx, a) && has(ctx, b), "%s: without a power cut the rename stays, nothing kept: %s",
          how, n.list);
    ctx->io->unlink(NULL, b);
    qc_ctx_free(ctx);
}

static void test_memfs(void)
{
    memfs_reset();
    memfs_mkdir("d/sub");
    memfs_add("d/f", "abc", 3);
    qc_ctx *ctx = qc_ctx_new();
    qc_ctx_set_io(ctx, memfs_io(), NULL);
    names n = {{0}, 0};
    CHECK(qc_sys_listdir(ctx, "d", collect, &n) == 0 && !strcmp(n.list, "f sub "), "memfs: listing '%s'", n.list);
    int e;
    char *r = qc_sys_realpath(ctx, "./d/sub/../f", &e);
    CHECK(r && !strcmp(r, "/d/f"), "memfs: realpath %s", r ? r : "(none)");
    free(r);
    CHECK(!qc_sys_realpath(ctx, "d/none", &e) && e == ENOENT, "memfs: realpath of a missing file");
    CHECK(ctx->io->link(ctx->io_user, "d/f", "d/g") == 0, "memfs: link");
    struct stat a, b;
    CHECK(ctx->io->stat(ctx->io_user, "d/f", &a) == 0 && ctx->io->stat(ctx->io_user, "/d/g", &b) == 0 &&
              a.st_ino == b.st_ino && a.st_nlink == 2,
          "memfs: a hard link is the same file");
    CHECK(qc_sys_listdir(ctx, "d/f", collect, &n) == QC_ERR_IO || qc_ctx_error(ctx)->sys_errno == ENOTDIR,
          "memfs: listing a file fails: %s", qc_ctx_error(ctx)->msg);
    CHECK(ctx->io->open(ctx->io_user, "nodir/x", O_CREAT | O_WRONLY, 0600) == -ENOENT,
          "memfs: no file is created in a missing directory");
    int fd = ctx->io->open(ctx->io_user, "d", O_RDONLY | O_DIRECTORY, 0);
    CHECK(fd >= 0 && ctx->io->fsync(ctx->io_user, fd) == 0 && ctx->io->fstat(ctx->io_user, fd, &a) == 0 &&
              S_ISDIR(a.st_mode),
          "memfs: a directory opens and syncs");
    ctx->io->close(ctx->io_user, fd);
    qc_ctx_free(ctx);
}

int main(void)
{
    test_memfs();
    memfs_reset();
    memfs_mkdir("vol");
    power_cut("memfs", memfs_io(), "vol", false);
    power_cut("memfs, directory synced", memfs_io(), "vol", true);
    no_cut("memfs", memfs_io(), "vol");
    char dir[] = "/tmp/qc-seam-XXXXXX";
    if (mkdtemp(dir)) {
        power_cut("posix", qc_io_posix(), dir, false);
        power_cut("posix, directory synced", qc_io_posix(), dir, true);
        no_cut("posix", qc_io_posix(), dir);
        CHECK(rmdir(dir) == 0, "posix: nothing left in the directory");
    }
    memfs_reset();
    printf("1..%d\n", count);
    return failures ? 1 : 0;
}
