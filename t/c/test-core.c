/*
 * test-core - unit tests of the C core's pure parts (header parsing from
 * buffers, path rules, errors) and of the users check and hold. Run under ASan/UBSan by t/c/run-ctest.pl.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures, count;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        count++;                                                                \
        if (!(cond)) {                                                          \
            failures++;                                                         \
            printf("not ok %d - ", count);                                      \
            printf(__VA_ARGS__);                                                \
            printf(" (%s:%d)\n", __FILE__, __LINE__);                           \
        } else {                                                                \
            printf("ok %d - ", count);                                          \
            printf(__VA_ARGS__);                                                \
            printf("\n");                                                       \
        }                                                                       \
    } while (0)

/* A minimal valid v3 header with 64k clusters in a cluster-0 buffer. */
static void v3_header(uint8_t *b, size_t n)
{
    memset(b, 0, n);
    qc_put32(b, QC_MAGIC);
    qc_put32(b + 4, 3);
    qc_put32(b + 20, 16);
    qc_put64(b + 24, 1 << 30);
    qc_put32(b + 36, 2);
    qc_put64(b + 40, 0x30000);
    qc_put64(b + 48, 0x10000);
    qc_put32(b + 56, 1);
    qc_put32(b + 96, 4);
    qc_put32(b + 100, 112);
}

static void add_ext(uint8_t *b, size_t *off, uint32_t magic, const void *data, uint32_t len)
{
    qc_put32(b + *off, magic);
    qc_put32(b + *off + 4, len);
    memcpy(b + *off + 8, data, len);
    *off += 8 + qc_align_up(len, 8);
}

static void test_header(void)
{
    static uint8_t b[65536];
    qc_ctx *ctx = qc_ctx_new();
    qc_header h;

    v3_header(b, sizeof(b));
    CHECK(qc_header_parse(ctx, &h, b, sizeof(b), sizeof(b), "x") == 0, "minimal v3 header parses");
    CHECK(h.refcount_order == 4 && h.header_length == 112 && !h.backing_name, "fields read back");
    qc_header_clear(&h);

    /* Extensions: backing format, an unknown one kept verbatim, backing name. */
    size_t o = 112;
    add_ext(b, &o, QC_EXT_BACKING_FMT, "qcow2", 5);
    add_ext(b, &o, 0x12345678, "abcdefghij", 10);
    qc_put32(b + o, 0);
    o += 8;
    memcpy(b + o, "base.qcow2", 10);
    qc_put64(b + 8, o);
    qc_put32(b + 16, 10);
    CHECK(qc_header_parse(ctx, &h, b, sizeof(b), sizeof(b), "x") == 0, "header with extensions parses");
    CHECK(h.backing_fmt && !strcmp(h.backing_fmt, "qcow2"), "backing format extension");
    CHECK(h.n_unknown == 1 && h.unknown[0].magic == 0x12345678 && h.unknown[0].len == 10 &&
              !memcmp(h.unknown[0].data, "abcdefghij", 10), "unknown extension preserved");
    CHECK(h.backing_name && !strcmp(h.backing_name, "base.qcow2"), "backing name");
    qc_header_clear(&h);

    /* Extension length running past the area. */
    v3_header(b, sizeof(b));
    qc_put32(b + 112, 0x1);
    qc_put32(b + 116, 0xfffffff0u);
    CHECK(qc_header_parse(ctx, &h, b, sizeof(b), sizeof(b), "x") == QC_ERR_FORMAT, "oversized extension refused");
    qc_header_clear(&h);

    v3_header(b, sizeof(b));
    qc_put64(b + 72, 1ull << 40);
    CHECK(qc_header_parse(ctx, &h, b, sizeof(b), sizeof(b), "x") == QC_ERR_UNSUPPORTED &&
              strstr(qc_ctx_error(ctx)->msg, "bit 40"), "unknown incompatible bit refused: %s", qc_ctx_error(ctx)->msg);
    qc_header_clear(&h);

    v3_header(b, sizeof(b));
    qc_put32(b + 20, 22);
    CHECK(qc_header_parse(ctx, &h, b, sizeof(b), sizeof(b), "x") == QC_ERR_FORMAT, "cluster_bits 22 refused");
    qc_header_clear(&h);

    v3_header(b, sizeof(b));
    qc_put32(b + 4, 4);
    CHECK(qc_header_parse(ctx, &h, b, sizeof(b), sizeof(b), "x") == QC_ERR_UNSUPPORTED, "version 4 refused");
    qc_header_clear(&h);

    v3_header(b, sizeof(b));
    qc_put64(b + 8, 65530);
    qc_put32(b + 16, 100);
    CHECK(qc_header_parse(ctx, &h, b, sizeof(b), sizeof(b), "x") == QC_ERR_FORMAT, "backing name past cluster 0 refused");
    qc_header_clear(&h);

    v3_header(b, sizeof(b));
    qc_put64(b + 8, 1024);
    qc_put32(b + 16, 1024);
    memset(b + 1024, 'a', 1024);
    CHECK(qc_header_parse(ctx, &h, b, sizeof(b), sizeof(b), "x") == QC_ERR_FORMAT, "1024-byte backing name refused");
    qc_header_clear(&h);

    v3_header(b, sizeof(b));
    b[104] = 1;
    CHECK(qc_header_parse(ctx, &h, b, sizeof(b), sizeof(b), "x") == QC_ERR_FORMAT,
          "zstd without its incompatible bit refused");
    qc_header_clear(&h);

    CHECK(qc_header_parse(ctx, &h, b, 50, 50, "x") == QC_ERR_FORMAT, "short buffer refused");
    qc_header_clear(&h);
    qc_ctx_free(ctx);
}

static void test_paths(void)
{
    qc_ctx *ctx = qc_ctx_new();
    char *p = qc_path_combine(ctx, "dir/sub/ov.qcow2", "../base.qcow2");
    CHECK(!strcmp(p, "dir/sub/../base.qcow2"), "relative name joins the overlay's directory");
    free(p);
    p = qc_path_combine(ctx, "ov.qcow2", "base.qcow2");
    CHECK(!strcmp(p, "base.qcow2"), "overlay in cwd");
    free(p);
    p = qc_path_combine(ctx, "/a/ov.qcow2", "/b/base.qcow2");
    CHECK(!strcmp(p, "/b/base.qcow2"), "absolute name kept");
    free(p);
    CHECK(qc_path_has_protocol("nbd:localhost:10809"), "protocol name detected");
    CHECK(!qc_path_has_protocol("./a:b"), "colon after a slash is a file name");
    CHECK(qc_buf_is_zero("\0\0\0\0\0\0\0\0\0\0\0", 11) && !qc_buf_is_zero("\0\0\0\0\0\0\0\0\0\1", 10),
          "zero detection");
    qc_fail(ctx, QC_ERR_IO, 0, "f", "op", "line one\nline two");
    CHECK(!strchr(qc_ctx_error(ctx)->msg, '\n'), "error messages are one line");
    qc_ctx_free(ctx);
}

/* A users op that reports a QEMU holding the second file. */
static int fake_users(void *u, const struct stat *files, size_t n, qc_user *found)
{
    (void)u;
    (void)files;
    if (n < 2)
        return 0;
    found->file = 1;
    found->pid = 4242;
    snprintf(found->comm, sizeof(found->comm), "kvm");
    return 1;
}

/* users.c: other processes' open files, and the hold. */
static void test_users(void)
{
    char tmpl[] = "/tmp/qc-ctest-XXXXXX";
    char *d = mkdtemp(tmpl), a[64], b[64];
    snprintf(a, sizeof(a), "%s/a.img", d);
    snprintf(b, sizeof(b), "%s/b.img", d);
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(i ? b : a, "w");
        fputs("x", f);
        fclose(f);
    }
    qc_ctx *ctx = qc_ctx_new();
    const char *files[] = {a, b};
    struct stat st[2];
    stat(a, &st[0]);
    stat(b, &st[1]);
    qc_user u;
    int own = open(b, O_RDONLY);
    CHECK(qc_users_posix(NULL, st, 2, &u) == 0, "our own descriptors do not count");

    int ready[2], go[2];
    if (pipe(ready) || pipe(go))
        return;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(b, O_RDWR);
        if (write(ready[1], "r", 1) != 1 || read(go[0], &fd, 1) < 0)
            _exit(1);
        _exit(0);
    }
    char c;
    CHECK(read(ready[0], &c, 1) == 1, "a child holds b");
    CHECK(qc_users_posix(NULL, st, 2, &u) == 1 && u.pid == pid && u.file == 1, "found: the child, on b");
    CHECK(qc_hold(ctx, files, 2) == QC_ERR_LOCKED, "hold refused while the child has b open");
    CHECK(strstr(qc_ctx_error(ctx)->msg, "is in use by process") && strstr(qc_ctx_error(ctx)->msg, "b.img"),
          "the message names the file and the process: %s", qc_ctx_error(ctx)->msg);
    CHECK(ctx->nheld == 0, "a refused hold keeps nothing");
    if (write(go[1], "g", 1) != 1)
        return;
    waitpid(pid, NULL, 0);
    close(own);

    CHECK(qc_hold(ctx, files, 2) == 0 && ctx->nheld == 2, "both held once the child is gone");
    CHECK(qc_held(ctx, st[1].st_dev, st[1].st_ino), "b is held");
    size_t mark = ctx->nheld;
    CHECK(qc_hold(ctx, files, 1) == 0 && ctx->nheld == mark, "holding a held file again takes nothing more");
    qc_image *img = NULL;
    CHECK(qc_image_open(ctx, &img, a, "raw", QC_OPEN_RDWR) == 0 && img->lock_mode == QC_LOCK_NONE,
          "an image of a held file takes no lock of its own (ours would conflict with the hold)");
    qc_image_close(img);
    qc_hold_release(ctx, 1);
    CHECK(ctx->nheld == 1 && !qc_held(ctx, st[1].st_dev, st[1].st_ino), "release down to a mark");
    qc_hold_release(ctx, 0);

    qc_io io = *qc_io_posix();
    io.users = fake_users;
    qc_ctx_set_io(ctx, &io, NULL);
    CHECK(qc_users_check(ctx, st, files, 2) == QC_ERR_LOCKED &&
              strstr(qc_ctx_error(ctx)->msg, "is in use by process 4242 (kvm)"),
          "users seam: %s", qc_ctx_error(ctx)->msg);
    io.users = NULL;
    CHECK(qc_users_check(ctx, st, files, 2) == 0, "no users op: nothing known, nothing refused");
    qc_ctx_free(ctx);
    unlink(a);
    unlink(b);
    rmdir(d);
}

/* open_beneath, with openat2 and with the per-component fallback: never a symlink, never outside. */
static void test_open_beneath(void)
{
    char dir[] = "/tmp/qc-beneath-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    char p[256], q[256];
    snprintf(p, sizeof(p), "%s/sub", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/sub/file", dir);
    close(open(p, O_CREAT | O_WRONLY, 0600));
    snprintf(p, sizeof(p), "%s/link", dir);
    CHECK(symlink("sub/file", p) == 0, "symlink to a file inside");
    snprintf(p, sizeof(p), "%s/linkdir", dir);
    CHECK(symlink("sub", p) == 0, "symlink to a directory inside");
    const qc_io *io = qc_io_posix();
    for (int walk = 0; walk < 2; walk++) {
        const char *how = walk ? "walk" : "openat2";
        int fd;
#define OPEN(rel) (walk ? qc_open_beneath_walk(dir, rel, O_RDONLY, 0) : io->open_beneath(NULL, dir, rel, O_RDONLY, 0))
        fd = OPEN("sub/file");
        CHECK(fd >= 0, "%s: a plain path beneath opens", how);
        if (fd >= 0)
            close(fd);
        CHECK(OPEN("link") == -ELOOP, "%s: a symlink as the file is refused", how);
        fd = OPEN("linkdir/file");
        CHECK(fd == -ENOTDIR || fd == -ELOOP, "%s: a symlink as a directory is refused", how);
        if (fd >= 0)
            close(fd);
        fd = OPEN("../x");
        CHECK(fd == -EXDEV || fd == -ENOENT, "%s: '..' does not leave the directory", how);
        CHECK(OPEN("missing") == -ENOENT, "%s: a missing file says so", how);
#undef OPEN
    }
    snprintf(q, sizeof(q), "rm -rf '%s'", dir);
    CHECK(system(q) == 0, "cleanup");
}

int main(void)
{
    test_header();
    test_paths();
    test_users();
    test_open_beneath();
    printf("1..%d\n", count);
    return failures ? 1 : 0;
}
