/* info.c - `qemu-img info --output=json` objects, one per layer. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static void add(json_object *o, const char *k, json_object *v) { json_object_object_add(o, k, v); }
static json_object *i64(uint64_t v) { return json_object_new_int64((int64_t)v); }

json_object *qc_snapshots_json(const qc_image *img)
{
    json_object *a = json_object_new_array();
    for (uint32_t i = 0; i < img->nsnaps; i++) {
        const qc_snapshot *s = &img->snaps[i];
        json_object *o = json_object_new_object();
        add(o, "id", json_object_new_string(s->id));
        add(o, "name", json_object_new_string(s->name));
        add(o, "vm-state-size", i64(s->vm_state_size));
        add(o, "date-sec", i64(s->date_sec));
        add(o, "date-nsec", i64(s->date_nsec));
        add(o, "vm-clock-sec", i64(s->vm_clock_ns / 1000000000ull));
        add(o, "vm-clock-nsec", i64(s->vm_clock_ns % 1000000000ull));
        if (s->has_icount)
            add(o, "icount", i64(s->icount));
        json_object_array_add(a, o);
    }
    return a;
}

static json_object *bitmaps_json(const qc_image *img)
{
    json_object *a = json_object_new_array();
    for (uint32_t i = 0; i < img->nbitmaps; i++) {
        const qc_bitmap *b = &img->bitmaps[i];
        json_object *o = json_object_new_object(), *fl = json_object_new_array();
        if (b->flags & 1)
            json_object_array_add(fl, json_object_new_string("in-use"));
        if (b->flags & 2)
            json_object_array_add(fl, json_object_new_string("auto"));
        add(o, "flags", fl);
        add(o, "name", json_object_new_string(b->name));
        add(o, "granularity", i64(1ull << b->granularity_bits));
        json_object_array_add(a, o);
    }
    return a;
}

static json_object *format_specific(const qc_image *img)
{
    const qc_header *h = &img->hdr;
    json_object *d = json_object_new_object();
    add(d, "compat", json_object_new_string(h->version == 2 ? "0.10" : "1.1"));
    add(d, "compression-type", json_object_new_string(h->compression_type ? "zstd" : "zlib"));
    add(d, "refcount-bits", i64(img->refcount_bits));
    if (h->version >= 3) {
        add(d, "lazy-refcounts", json_object_new_boolean(!!(h->compat & QC_COMPAT_LAZY)));
        add(d, "corrupt", json_object_new_boolean(!!(h->incompat & QC_INCOMPAT_CORRUPT)));
        add(d, "extended-l2", json_object_new_boolean(img->ext_l2));
        if (img->nbitmaps)
            add(d, "bitmaps", bitmaps_json(img));
        if (h->incompat & QC_INCOMPAT_DATA_FILE) {
            if (h->data_file)
                add(d, "data-file", json_object_new_string(h->data_file));
            add(d, "data-file-raw", json_object_new_boolean(!!(h->autoclear & QC_AUTOCLEAR_DATA_RAW)));
        }
    }
    json_object *o = json_object_new_object();
    add(o, "type", json_object_new_string("qcow2"));
    add(o, "data", d);
    return o;
}

int qc_info_one(qc_image *img, json_object **out)
{
    struct stat st;
    int r = qc_sys_fstat(img->ctx, img->fd, img->filename, &st);
    if (r < 0)
        return r;
    json_object *o = json_object_new_object();
    add(o, "filename", json_object_new_string(img->filename));
    add(o, "format", json_object_new_string(qc_format_name(img->fmt)));
    add(o, "virtual-size", i64(img->size));
    add(o, "actual-size", i64((uint64_t)st.st_blocks * 512));
    add(o, "dirty-flag", json_object_new_boolean(img->fmt == QC_FMT_QCOW2 &&
                                                  (img->hdr.incompat & QC_INCOMPAT_DIRTY)));
    if (img->fmt == QC_FMT_QCOW2) {
        const qc_header *h = &img->hdr;
        add(o, "cluster-size", i64(img->cluster_size));
        if (h->backing_name) {
            char *full = qc_path_combine(img->ctx, img->filename, h->backing_name);
            if (!full) {
                json_object_put(o);
                return QC_ERR_NOMEM;
            }
            add(o, "backing-filename", json_object_new_string(h->backing_name));
            add(o, "full-backing-filename", json_object_new_string(full));
            free(full);
            if (h->backing_fmt)
                add(o, "backing-filename-format", json_object_new_string(h->backing_fmt));
        }
        if (img->nsnaps)
            add(o, "snapshots", qc_snapshots_json(img));
        add(o, "format-specific", format_specific(img));
    }
    *out = o;
    return 0;
}

int qc_info(qc_ctx *ctx, json_object **out, const char *path, const char *fmt,
            bool backing_chain)
{
    qc_image *img;
    *out = NULL;
    int r = qc_image_open(ctx, &img, path, fmt,
                          QC_OPEN_SHARE | (backing_chain ? 0 : QC_OPEN_NO_BACKING));
    if (r < 0)
        return r;
    if (!backing_chain) {
        r = qc_info_one(img, out);
    } else {
        json_object *a = json_object_new_array();
        for (qc_image *p = img; p; p = p->backing) {
            json_object *o;
            if ((r = qc_info_one(p, &o)) < 0)
                break;
            json_object_array_add(a, o);
        }
        if (r < 0)
            json_object_put(a);
        else
            *out = a;
    }
    qc_image_close(img);
    return r;
}
