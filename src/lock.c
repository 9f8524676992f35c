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

void qc_unlock_fd(qc_ctx *ctx, int fd)
{
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 100;
    fl.l_len = 200;
    ctx->io->lock(ctx->io_user, fd, F_OFD_SETLK, &fl);
}

void qc_lock_release(qc_image *img)
{
    if (img->lock_mode == QC_LOCK_NONE)
        return;
    qc_unlock_fd(img->ctx, img->fd);
    img->lock_mode = QC_LOCK_NONE;
}

int qc_lock_fd(qc_ctx *ctx, int fd, const char *name, int mode)
{
    unsigned held, unshared;
    masks(mode, &held, &unshared);
    qc_unlock_fd(ctx, fd);
    if (mode == QC_LOCK_NONE)
        return 0;
    for (int i = 0; i < 4; i++) {
        int r = 0;
        if (held >> i & 1)
            r = byte_lock(ctx, fd, F_OFD_SETLK, F_RDLCK, 100 + i, NULL);
        if (r == 0 && (unshared >> i & 1))
            r = byte_lock(ctx, fd, F_OFD_SETLK, F_RDLCK, 200 + i, NULL);
        if (r < 0) {
            qc_unlock_fd(ctx, fd);
            if (r == -EAGAIN || r == -EACCES)
                return qc_fail(ctx, QC_ERR_LOCKED, -r, name, "lock",
                               "Failed to lock byte %d: Is another process using the image [%s]?",
                               100 + i, name);
            return qc_fail(ctx, QC_ERR_IO, -r, name, "lock", "Could not lock '%s': %s", name, strerror(-r));
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 4; i++) {
            /* pass 0: a permission we use must not be unshared by others;
             * pass 1: a permission we unshare must not be in use by others. */
            if (!((pass ? unshared : held) >> i & 1))
                continue;
            struct flock fl;
            int r = byte_lock(ctx, fd, F_OFD_GETLK, F_WRLCK, (pass ? 100 : 200) + i, &fl);
            if (r < 0) {
                qc_unlock_fd(ctx, fd);
                return qc_fail(ctx, QC_ERR_IO, -r, name, "lock", "Could not test the locks of '%s': %s", name,
                               strerror(-r));
            }
            if (fl.l_type != F_UNLCK) {
                qc_unlock_fd(ctx, fd);
                return qc_fail(ctx, QC_ERR_LOCKED, EAGAIN, name, "lock",
                               "Failed to get %s\"%s\" lock: Is another process using the image [%s]?",
                               pass ? "shared " : "", perm_name[i], name);
            }
        }
    }
    return 0;
}

int qc_lock_apply(qc_image *img, int mode)
{
    qc_ctx *ctx = img->ctx;
    qc_lock_release(img);
    if (mode == QC_LOCK_NONE || qc_held(ctx, img->dev, img->ino))
        return 0;
    int r = qc_lock_fd(ctx, img->fd, img->filename, mode);
    if (r < 0)
        return r;
    img->lock_mode = mode;
    /* QEMU without locks (Proxmox builds it so) may still have it open. */
    const char *name = img->filename;
    if (mode == QC_LOCK_WRITE && (r = qc_users_check(ctx, &img->st, &name, 1)) < 0)
        qc_lock_release(img);
    return r;
}
