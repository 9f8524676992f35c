/*
 * journal.c - the per-volume lock and intent journal.
 *
 * Next to volume FILE live two hidden files: .FILE.lock, held (OFD write
 * lock) for the whole of a snapshot operation, so two processes never
 * change one volume at once; and .FILE.journal, written (temporary name,
 * fsync, rename, directory fsync) before an operation changes anything and
 * removed when it is complete. A journal found by the next operation means
 * the last one was interrupted: it is completed or undone first.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char *join3(qc_ctx *ctx, const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *p = qc_malloc(ctx, n);
    if (p)
        snprintf(p, n, "%s%s%s", a, b, c);
    return p;
}

int qc_volume_open(qc_ctx *ctx, qc_volume *v, const char *path, unsigned timeout_ms)
{
    memset(v, 0, sizeof(*v));
    v->ctx = ctx;
    v->lock_fd = -1;
    const char *slash = strrchr(path, '/');
    v->path = qc_strdup(ctx, path);
    v->dir = slash ? qc_strndup(ctx, path, slash == path ? 1 : (size_t)(slash - path)) : qc_strdup(ctx, ".");
    v->base = qc_strdup(ctx, slash ? slash + 1 : path);
    if (!v->path || !v->dir || !v->base)
        goto nomem;
    if (!*v->base) {
        qc_volume_close(v);
        return qc_fail(ctx, QC_ERR_INVALID, 0, path, "volume", "'%s' is not a volume file", path);
    }
    v->lock_path = strchr(path, '/') ? join3(ctx, v->dir, "/.", v->base) : join3(ctx, ".", v->base, "");
    if (!v->lock_path)
        goto nomem;
    char *lp = join3(ctx, v->lock_path, ".lock", "");
    v->journal_path = join3(ctx, v->lock_path, ".journal", "");
    free(v->lock_path);
    v->lock_path = lp;
    if (!v->lock_path || !v->journal_path)
        goto nomem;
    int fd = qc_sys_open(ctx, v->lock_path, O_RDWR | O_CREAT, 0600);
    if (fd < 0) {
        qc_volume_close(v);
        return fd;
    }
    v->lock_fd = fd;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    for (unsigned waited = 0;; waited += 50) {
        int r = ctx->io->lock(ctx->io_user, fd, F_OFD_SETLK, &fl);
        if (r == 0)
            return 0;
        if ((r != -EAGAIN && r != -EACCES) || waited >= timeout_ms) {
            qc_volume_close(v);
            if (r == -EAGAIN || r == -EACCES)
                return qc_fail(ctx, QC_ERR_BUSY, EAGAIN, path, "lock",
                               "'%s': another snapshot operation on this volume is in progress", path);
            return qc_fail(ctx, QC_ERR_IO, -r, path, "lock", "Could not lock volume '%s': %s", path, strerror(-r));
        }
        struct timespec t = {0, 50 * 1000000L};
        nanosleep(&t, NULL);
    }
nomem:
    qc_volume_close(v);
    return qc_fail(ctx, QC_ERR_NOMEM, ENOMEM, path, "volume", "Out of memory");
}

void qc_volume_close(qc_volume *v)
{
    if (v->lock_fd >= 0)
        qc_sys_close(v->ctx, v->lock_fd); /* releases the OFD lock */
    free(v->path);
    free(v->dir);
    free(v->base);
    free(v->lock_path);
    free(v->journal_path);
    memset(v, 0, sizeof(*v));
    v->lock_fd = -1;
}

char *qc_volume_snap_name(qc_volume *v, const char *name)
{
    return qc_store_snap_entry(v->ctx, v->base, name);
}

bool qc_volume_is_snap_entry(const qc_volume *v, const char *entry)
{
    return qc_store_is_snap_entry(v->base, entry);
}

char *qc_volume_file(qc_volume *v, const char *entry)
{
    /* a volume given without a directory keeps its siblings without one */
    if (!strchr(v->path, '/'))
        return qc_strdup(v->ctx, entry);
    return join3(v->ctx, v->dir, "/", entry);
}

/* A journal is written under this name first, then renamed into place. */
static char *journal_tmp(qc_volume *v)
{
    return join3(v->ctx, v->journal_path, ".tmp", "");
}

int qc_journal_drop_tmp(qc_volume *v)
{
    qc_ctx *ctx = v->ctx;
    char *tmp = journal_tmp(v);
    if (!tmp)
        return QC_ERR_NOMEM;
    struct stat st;
    int r = ctx->io->stat(ctx->io_user, tmp, &st) < 0 ? -ENOENT : ctx->io->unlink(ctx->io_user, tmp);
    if (r == -ENOENT)
        r = 0;
    else if (r < 0)
        r = qc_fail(ctx, qc_errno_code(-r), -r, tmp, "journal", "Could not remove '%s': %s", tmp, strerror(-r));
    else
        r = qc_sync_dir(ctx, tmp);
    free(tmp);
    return r;
}

int qc_journal_write(qc_volume *v, json_object *j)
{
    qc_ctx *ctx = v->ctx;
    char *tmp = journal_tmp(v);
    if (!tmp)
        return QC_ERR_NOMEM;
    const char *text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN);
    ctx->io->unlink(ctx->io_user, tmp);
    int fd = qc_sys_open(ctx, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int r = fd;
    if (fd >= 0) {
        r = qc_pwrite_full(ctx, fd, tmp, text, strlen(text), 0);
        if (r == 0)
            r = qc_sys_fsync(ctx, fd, tmp);
        qc_sys_close(ctx, fd);
    }
    if (r == 0) {
        r = ctx->io->rename(ctx->io_user, tmp, v->journal_path, 0);
        if (r < 0)
            r = qc_fail(ctx, qc_errno_code(-r), -r, v->path, "journal", "Could not write the journal of '%s': %s",
                        v->path, strerror(-r));
    }
    if (r == 0)
        r = qc_sync_dir(ctx, v->journal_path);
    if (r == 0)
        v->journaled = true;
    free(tmp);
    return r;
}

int qc_journal_read(qc_volume *v, json_object **out)
{
    qc_ctx *ctx = v->ctx;
    *out = NULL;
    struct stat st;
    if (ctx->io->stat(ctx->io_user, v->journal_path, &st) < 0)
        return 0;
    if (st.st_size > (1 << 20))
        return qc_fail(ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal", "'%s': journal is too large",
                       v->journal_path);
    int fd = qc_sys_open(ctx, v->journal_path, O_RDONLY | O_NONBLOCK, 0); /* a FIFO must not hang us */
    if (fd < 0)
        return fd;
    char *buf = qc_calloc(ctx, 1, (size_t)st.st_size + 1);
    int r = buf ? qc_pread_full(ctx, fd, v->journal_path, buf, (size_t)st.st_size, 0) : QC_ERR_NOMEM;
    qc_sys_close(ctx, fd);
    if (r == 0) {
        *out = json_tokener_parse(buf);
        if (!*out || !json_object_is_type(*out, json_type_object)) {
            json_object_put(*out);
            *out = NULL;
            r = qc_fail(ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal",
                        "'%s': unreadable journal of an interrupted operation; inspect and remove it by hand",
                        v->journal_path);
        }
    }
    free(buf);
    return r;
}

int qc_journal_clear(qc_volume *v)
{
    qc_ctx *ctx = v->ctx;
    v->journaled = false;
    int r = ctx->io->unlink(ctx->io_user, v->journal_path);
    if (r < 0 && r != -ENOENT)
        return qc_fail(ctx, qc_errno_code(-r), -r, v->path, "journal", "Could not remove the journal of '%s': %s",
                       v->path, strerror(-r));
    return qc_sync_dir(ctx, v->journal_path);
}
