/* confine.c - open an image file, beneath the allowed directories if asked. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The allowed directory holding real path real, and real's part below it; NULL if none. */
const char *qc_allowed_root(qc_ctx *ctx, const char *real, const char **rel)
{
    for (size_t i = 0; i < ctx->ndirs; i++) {
        const char *d = ctx->dirs[i];
        size_t n = strlen(d);
        if (n == 1) /* "/" */
            n = 0;
        if (!strncmp(real, d, n) && real[n] == '/' && real[n + 1]) {
            *rel = real + n + 1;
            return n ? d : "/";
        }
    }
    return NULL;
}

/*
 * Under allowed directories, open what p resolves to by its real path,
 * beneath the allowed directory that holds it and following no symlink:
 * a link swapped after the check cannot lead the open outside.
 */
static int open_confined(qc_ctx *ctx, const char *p, int oflags)
{
    int e;
    char *real = qc_sys_realpath(ctx, p, &e);
    if (!real)
        return e ? qc_fail(ctx, qc_errno_code(e), e, p, "open", "Could not open '%s': %s", p, strerror(e))
                 : QC_ERR_NOMEM;
    const char *rel, *dir = qc_allowed_root(ctx, real, &rel);
    int fd = dir ? ctx->io->open_beneath(ctx->io_user, dir, rel, oflags, 0)
                 : qc_fail(ctx, QC_ERR_POLICY, 0, p, "open",
                           "'%s' now resolves to '%s', outside the allowed directories; refused", p, real);
    if (dir && (fd == -ELOOP || fd == -ENOTDIR || fd == -EXDEV))
        fd = qc_fail(ctx, QC_ERR_POLICY, -fd, p, "open",
                     "'%s' changed while it was opened (a symbolic link appeared under '%s'); refused", p, dir);
    else if (dir && fd < 0)
        fd = qc_fail(ctx, qc_errno_code(-fd), -fd, p, "open", "Could not open '%s': %s", p, strerror(-fd));
    free(real);
    return fd;
}

int qc_open_image_file(qc_ctx *ctx, const char *path, int oflags, bool confined, struct stat *st)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below) */
    oflags |= O_NONBLOCK;
    int fd = confined && ctx->ndirs ? open_confined(ctx, path, oflags) : qc_sys_open(ctx, path, oflags, 0);
    if (fd < 0)
        return fd;
    int r = qc_sys_fstat(ctx, fd, path, st);
    if (r == 0 && !S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode))
        r = qc_fail(ctx, QC_ERR_INVALID, S_ISDIR(st->st_mode) ? EISDIR : EINVAL, path, "open",
                    S_ISDIR(st->st_mode) ? "'%s' is a directory" : "'%s' is not a regular file or a block device",
                    path);
    if (r < 0) {
        qc_sys_close(ctx, fd);
        return r;
    }
    /* O_NONBLOCK stays: regular files and block devices ignore it for reads and writes */
    return fd;
}
