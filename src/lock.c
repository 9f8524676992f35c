/*
 * lock.c - QEMU-compatible image locking with OFD byte locks.
 *
 * Permission bit i: holding byte 100+i means "I use permission i", holding
 * byte 200+i means "nobody else may use it". Shared read locks everywhere;
 * conflicts are found by testing for a write lock (F_OFD_GETLK).
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

static const char *const perm_name[4] = {"consistent read", "write", "write unchanged", "resize"};

/* Held and unshared permission masks per mode. */
static void masks(int mode, unsigned *held, unsigned *unshared)
{
    *held = *unshared = 0;
    switch (mode) {
    case QC_LOCK_SHARED: *held = 1; break;
    case QC_LOCK_READ: *held = 1; *unshared = 2 | 8; break;
    case QC_LOCK_WRITE: *held = 1 | 2 | 8; *unshared = 2 | 8; break;
    }
}

static int byte_lock(qc_ctx *ctx, int fd, int cmd, short type, off_t at, struct flock *out)
{
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = at;
    fl.l_len = 1;
    int r = ctx->io->lock(ctx->io_user, fd, cmd, &fl);
    if (out)
        *out = fl;
    return r;
}

void qc_lock_release(qc_image *img)
{
    if (img->lock_mode == QC_LOCK_NONE)
        return;
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 100;
    fl.l_len = 200;
    img->ctx->io->lock(img->ctx->io_user, img->fd, F_OFD_SETLK, &fl);
    img->lock_mode = QC_LOCK_NONE;
}

int qc_lock_apply(qc_image *img, int mode)
{
    qc_ctx *ctx = img->ctx;
    unsigned held, unshared;
    masks(mode, &held, &unshared);
    qc_lock_release(img);
    if (mode == QC_LOCK_NONE)
        return 0;
    img->lock_mode = mode;
    for (int i = 0; i < 4; i++) {
        int r = 0;
        if (held >> i & 1)
            r = byte_lock(ctx, img->fd, F_OFD_SETLK, F_RDLCK, 100 + i, NULL);
        if (r == 0 && (unshared >> i & 1))
            r = byte_lock(ctx, img->fd, F_OFD_SETLK, F_RDLCK, 200 + i, NULL);
        if (r < 0) {
            qc_lock_release(img);
            if (r == -EAGAIN || r == -EACCES)
                return qc_fail(ctx, QC_ERR_LOCKED, -r, img->filename, "lock",
                               "Failed to lock byte %d: Is another process using the image [%s]?",
                               100 + i, img->filename);
            return qc_fail(ctx, QC_ERR_IO, -r, img->filename, "lock",
                           "Could not lock '%s': %s", img->filename, strerror(-r));
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 4; i++) {
            /* pass 0: a permission we use must not be unshared by others;
             * pass 1: a permission we unshare must not be in use by others. */
            if (!((pass ? unshared : held) >> i & 1))
                continue;
            struct flock fl;
            int r = byte_lock(ctx, img->fd, F_OFD_GETLK, F_WRLCK, (pass ? 100 : 200) + i, &fl);
            if (r < 0) {
                qc_lock_release(img);
                return qc_fail(ctx, QC_ERR_IO, -r, img->filename, "lock",
                               "Could not test the locks of '%s': %s", img->filename, strerror(-r));
            }
            if (fl.l_type != F_UNLCK) {
                qc_lock_release(img);
                return qc_fail(ctx, QC_ERR_LOCKED, EAGAIN, img->filename, "lock",
                               "Failed to get %s\"%s\" lock: Is another process using the image [%s]?",
                               pass ? "shared " : "", perm_name[i], img->filename);
            }
        }
    }
    return 0;
}
