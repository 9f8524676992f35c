/* check.c - qemu-img check: the refcount walk (refwalk.c), repair, the JSON report. */
#include "internal.h"

static json_object *result_json(const qc_check_result *res, const qc_image *img)
{
    json_object *o = json_object_new_object();
#define PUT(k, v) json_object_object_add(o, k, json_object_new_int64((int64_t)(v)))
#define PUT_NZ(k, v) do { if (v) PUT(k, v); } while (0)
    PUT("image-end-offset", res->end);
    PUT("total-clusters", (img->size + img->cluster_size - 1) >> img->cluster_bits);
    PUT("check-errors", res->check_errors);
    PUT_NZ("leaks", res->leaks);
    PUT_NZ("leaks-fixed", res->leaks_fixed);
    PUT_NZ("corruptions", res->corruptions);
    PUT_NZ("corruptions-fixed", res->corruptions_fixed);
    PUT_NZ("allocated-clusters", res->allocated);
    PUT_NZ("fragmented-clusters", res->fragmented);
    PUT_NZ("compressed-clusters", res->compressed);
#undef PUT
#undef PUT_NZ
    json_object_object_add(o, "filename", json_object_new_string(img->filename));
    json_object_object_add(o, "format", json_object_new_string("qcow2"));
    return o;
}

int qc_check(qc_ctx *ctx, json_object **out, const char *path, const char *fmt, int repair)
{
    qc_image *img;
    *out = NULL;
    /* the backing chain too: qemu-img check fails (exit 1) when a backing file cannot be opened */
    int r = qc_image_open(ctx, &img, path, fmt, repair ? QC_OPEN_RDWR : 0);
    if (r < 0)
        return r;
    if (img->fmt != QC_FMT_QCOW2) {
        r = qc_fail(ctx, QC_ERR_UNSUPPORTED, 0, path, "check",
                    "This image format does not support checks ('%s' is raw)", path);
        qc_image_close(img);
        return r;
    }
    if ((r = qc_image_load_tables(img)) < 0) {
        qc_image_close(img);
        return r;
    }
    json_object *messages = json_object_new_array();
    qc_check_result res, again;
    r = qc_check_pass(img, QC_REPAIR_NONE, &res, messages);
    if (r == 0 && repair && (res.leaks || res.corruptions || (img->hdr.incompat & QC_INCOMPAT_DIRTY))) {
        uint64_t leaks = res.leaks, corr = res.corruptions;
        img->write_ready = false;
        if ((r = qc_write_prepare(img)) == 0) { /* repairs a dirty image itself */
            if (repair == QC_REPAIR_ALL && corr && !(img->hdr.incompat & QC_INCOMPAT_DIRTY))
                r = qc_rebuild_refcounts(img); /* also sets COPIED right */
            else if (leaks)
                r = qc_check_pass(img, QC_REPAIR_LEAKS, &again, messages);
            if (r == 0)
                r = qc_flush(img);
        }
        if (r == 0)
            r = qc_check_pass(img, 0, &again, messages);
        if (r == 0) {
            again.leaks_fixed = leaks > again.leaks ? leaks - again.leaks : 0;
            again.corruptions_fixed = corr > again.corruptions ? corr - again.corruptions : 0;
            res = again;
        }
    }
    if (r == 0) {
        *out = result_json(&res, img);
        json_object_object_add(*out, "messages", messages);
        messages = NULL;
    }
    json_object_put(messages);
    qc_image_close(img);
    return r;
}
