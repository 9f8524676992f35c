/*
 * hold.c - the files an operation holds: QEMU's write lock taken first,
 * then one look for other processes that have them open (users.c), kept
 * until the operation is durable.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

void qc_hold_release(qc_ctx *ctx, size_t keep)
{
    while (ctx->nheld > keep)
        qc_sys_close(ctx, ctx->held[--ctx->nheld].fd); /* releases the OFD locks */
    if (!ctx->nheld) {
        free(ctx->held);
        ctx->held = NULL;
    }
}

int qc_hold(qc_ctx *ctx, const char *const *paths, size_t n)
{
    size_t first = ctx->nheld;
    struct qc_held *h = qc_realloc(ctx, ctx->held, (ctx->nheld + n + 1) * sizeof(*h));
    struct stat *st = h ? qc_calloc(ctx, n + 1, sizeof(*st)) : NULL;
    const char **names = st ? qc_calloc(ctx, n + 1, sizeof(*names)) : NULL;
    if (h)
        ctx->held = h;
    int r = h && st && names ? 0 : qc_fail(ctx, QC_ERR_NOMEM, ENOMEM, "", "hold", "Out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        /* non-blocking: a FIFO in place of an image must not hang us */
        int fd = ctx->io->open(ctx->io_user, paths[i], O_RDONLY | O_NONBLOCK, 0);
        if (fd == -ENOENT)
            continue;
        if (fd < 0) {
            r = qc_fail(ctx, qc_errno_code(-fd), -fd, paths[i], "open", "Could not open '%s': %s", paths[i],
                        strerror(-fd));
            break;
        }
        if ((r = qc_sys_fstat(ctx, fd, paths[i], &st[k])) < 0 || qc_held(ctx, st[k].st_dev, st[k].st_ino) ||
            (r = qc_lock_fd(ctx, fd, paths[i], QC_LOCK_WRITE)) < 0) {
            qc_sys_close(ctx, fd);
            continue;
        }
        ctx->held[ctx->nheld++] = (struct qc_held){fd, st[k].st_dev, st[k].st_ino};
        names[k++] = paths[i];
    }
    if (r == 0)
        r = qc_users_check(ctx, st, names, k);
    if (r < 0) {
        qc_error e;
        qc_err_keep(ctx, &e);
        qc_hold_release(ctx, first); /* give back what this call took */
        qc_err_restore(ctx, &e, r);
    }
    free(st);
    free(names);
    return r;
}
