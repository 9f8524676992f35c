/*
 * import.c - is an uploaded image safe to attach? (Proxmox's "untrusted"
 * import.) The file alone is read, never a backing or data file, never
 * through a symlink: no backing file, no external data file, no
 * encryption, known features only, and every table and every reference
 * inside the file.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void problem(json_object *a, const char *fmt, const char *arg)
{
    char b[1200];
    snprintf(b, sizeof(b), fmt, arg);
    json_object_array_add(a, json_object_new_string(b));
}

int qc_import_check(qc_ctx *ctx, json_object **out, const char *path, const char *fmt)
{
    *out = NULL;
    json_object *problems = json_object_new_array(), *o = json_object_new_object();
    qc_policy saved = ctx->pol;
    ctx->pol.allow_data_file = false;
    ctx->pol.probe_backing_format = false;
    qc_image *img = NULL;
    int r = qc_image_open(ctx, &img, path, fmt, QC_OPEN_NO_BACKING | QC_OPEN_NO_LOCK | QC_OPEN_NOFOLLOW);
    ctx->pol = saved;
    if (r < 0) {
        if (r == QC_ERR_IO || r == QC_ERR_NOTFOUND || r == QC_ERR_NOMEM) {
            json_object_put(problems);
            json_object_put(o);
            return r; /* not a verdict: the file could not be read */
        }
        problem(problems, "%s", ctx->err.msg);
        qc_ctx_clear_error(ctx);
    } else {
        json_object_object_add(o, "format", json_object_new_string(qc_format_name(img->fmt)));
        json_object_object_add(o, "virtual-size", json_object_new_int64((int64_t)img->size));
        if (img->fmt == QC_FMT_QCOW2) {
            const qc_header *h = &img->hdr;
            if (h->backing_name)
                problem(problems, "it has a backing file ('%s'); only self-contained images are safe to attach",
                        h->backing_name);
            if (h->incompat & QC_INCOMPAT_CORRUPT)
                problem(problems, "%s", "it is marked corrupt");
            if (h->incompat & QC_INCOMPAT_DIRTY)
                problem(problems, "%s", "its refcounts are dirty (lazy refcounts, not cleanly closed)");
            json_object *c = NULL;
            qc_image_close(img);
            img = NULL;
            /* every reference must lie inside the file: the check walks them all */
            if (qc_check(ctx, &c, path, "qcow2", QC_REPAIR_NONE) == 0) {
                json_object *v;
                if (json_object_object_get_ex(c, "corruptions", &v) && json_object_get_int64(v))
                    problem(problems, "%s", "its metadata is inconsistent (qcow2-chain check reports corruptions)");
                json_object_put(c);
            } else {
                problem(problems, "%s", ctx->err.msg);
                qc_ctx_clear_error(ctx);
            }
        }
    }
    qc_image_close(img);
    json_object_object_add(o, "filename", json_object_new_string(path));
    json_object_object_add(o, "safe", json_object_new_boolean(json_object_array_length(problems) == 0));
    json_object_object_add(o, "problems", problems);
    *out = o;
    return 0;
}
