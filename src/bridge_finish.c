/*
 * bridge_finish.c - completing or undoing a conversion between internal and
 * external snapshots (bridge.c) from its journal: by the conversion itself,
 * or by the next operation on the volume (volume.c) after a crash.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

static bool exists(qc_ctx *ctx, const char *p)
{
    struct stat st;
    return ctx->io->stat(ctx->io_user, p, &st) == 0;
}

static int unlink_file(qc_ctx *ctx, const char *p)
{
    int r = ctx->io->unlink(ctx->io_user, p);
    if (r < 0 && r != -ENOENT)
        return qc_fail(ctx, qc_errno_code(-r), -r, p, "convert", "Could not remove '%s': %s", p, strerror(-r));
    return qc_sync_dir(ctx, p);
}

static int rename_file(qc_ctx *ctx, const char *from, const char *to, unsigned flags)
{
    int r = ctx->io->rename(ctx->io_user, from, to, flags);
    if (r < 0)
        return qc_fail(ctx, qc_errno_code(-r), -r, to, "convert", "Could not rename '%s' to '%s': %s", from, to,
                       strerror(-r));
    return qc_sync_dir(ctx, to);
}

/* A journal may only name the volume, its snapshot files and its temporary files. */
static bool own(qc_volume *v, const char *p)
{
    const char *b = strrchr(p, '/');
    b = b ? b + 1 : p;
    char *expect = qc_volume_file(v, b);
    bool same = expect && !strcmp(expect, p);
    free(expect);
    size_t bl = strlen(v->base);
    bool tmp = b[0] == '.' && !strncmp(b + 1, v->base, bl) && !strncmp(b + 1 + bl, ".convert-", 9);
    return same && (!strcmp(b, v->base) || qc_volume_is_snap_entry(v, b) || tmp);
}

static const char *jstr(json_object *j, const char *k)
{
    json_object *o;
    return json_object_object_get_ex(j, k, &o) && json_object_is_type(o, json_type_string) ? json_object_get_string(o)
                                                                                            : NULL;
}

/*
 * Journal: {"op", "phase": "build"|"place", "tmp": [files], "place": [[from, to]],
 * "remove": [files]}. build: the temporaries go (undo). place: every rename
 * not yet done is done (the snapshot files before the volume), then the
 * files in remove go (redo).
 */
int qc_bridge_finish(qc_volume *v, json_object *j)
{
    qc_ctx *ctx = v->ctx;
    const char *phase = jstr(j, "phase");
    json_object *tmp, *place, *remove;
    if (!phase || !json_object_object_get_ex(j, "tmp", &tmp) || !json_object_object_get_ex(j, "place", &place) ||
        !json_object_object_get_ex(j, "remove", &remove) || !json_object_is_type(tmp, json_type_array) ||
        !json_object_is_type(place, json_type_array) || !json_object_is_type(remove, json_type_array))
        return qc_fail(ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal", "'%s': incomplete conversion journal",
                       v->journal_path);
    /* every name must be this volume's before anything is done */
    for (size_t i = 0; i < json_object_array_length(tmp); i++)
        if (!own(v, json_object_get_string(json_object_array_get_idx(tmp, i))))
            goto foreign;
    for (size_t i = 0; i < json_object_array_length(remove); i++)
        if (!own(v, json_object_get_string(json_object_array_get_idx(remove, i))))
            goto foreign;
    for (size_t i = 0; i < json_object_array_length(place); i++) {
        json_object *p = json_object_array_get_idx(place, i);
        if (!json_object_is_type(p, json_type_array) || json_object_array_length(p) != 2 ||
            !own(v, json_object_get_string(json_object_array_get_idx(p, 0))) ||
            !own(v, json_object_get_string(json_object_array_get_idx(p, 1))))
            goto foreign;
    }
    int r = 0;
    if (!strcmp(phase, "build")) {
        for (size_t i = 0; i < json_object_array_length(tmp) && r == 0; i++)
            r = unlink_file(ctx, json_object_get_string(json_object_array_get_idx(tmp, i)));
        return r;
    }
    for (size_t i = 0; i < json_object_array_length(place) && r == 0; i++) {
        json_object *p = json_object_array_get_idx(place, i);
        const char *from = json_object_get_string(json_object_array_get_idx(p, 0));
        const char *to = json_object_get_string(json_object_array_get_idx(p, 1));
        if (exists(ctx, from))
            r = rename_file(ctx, from, to, 0);
    }
    for (size_t i = 0; i < json_object_array_length(remove) && r == 0; i++)
        r = unlink_file(ctx, json_object_get_string(json_object_array_get_idx(remove, i)));
    return r;
foreign:
    return qc_fail(ctx, QC_ERR_FORMAT, 0, v->journal_path, "journal",
                   "'%s': conversion journal names files that are not this volume's; not acting on it",
                   v->journal_path);
}
