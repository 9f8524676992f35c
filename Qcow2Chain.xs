/*
 * Qcow2Chain.xs - XS glue for PVE::Storage::Qcow2Chain: helpers and BOOT.
 * Each XSUB (in xs/*.xs) unpacks arguments, calls one C function of the
 * core, turns a negative return into an exception via qcx_croak, and
 * builds the result.
 */
#define PERL_NO_GET_CONTEXT
#include "EXTERN.h"
#include "perl.h"
#include "XSUB.h"
#include "ppport.h"

#include "src/qcow2chain.h"

#include <errno.h>
#include <string.h>

/* What a call needs besides the context: progress callback, injected fault. */
typedef struct qcx_call {
    qc_ctx *ctx;
    qc_fault *fault;
    SV *progress;
} qcx_call;

/*
 * Test hooks (xs/TestHooks.xs, for t/lib/QcHooks.pm only): a fault armed
 * for the next call, and the fault counters of the last call that had one.
 */
static struct { bool armed; int mode; uint64_t nth; int err; uint64_t seed; uint64_t step; } qcx_next_fault;
static struct { UV count; IV fired; UV writebacks; } qcx_last_fault;

static int qcx_progress(void *user, uint64_t done, uint64_t total)
{
    dTHX;
    qcx_call *c = user;
    int ret = 0;
    dSP;
    ENTER;
    SAVETMPS;
    PUSHMARK(SP);
    XPUSHs(sv_2mortal(newSVuv((UV)done)));
    XPUSHs(sv_2mortal(newSVuv((UV)total)));
    PUTBACK;
    int n = call_sv(c->progress, G_SCALAR | G_EVAL);
    SPAGAIN;
    if (SvTRUE(ERRSV))
        ret = 1; /* a dying callback cancels */
    else if (n == 1) {
        SV *r = POPs;
        ret = SvOK(r) && SvPOK(r) && strEQ(SvPV_nolen(r), "cancel");
    }
    PUTBACK;
    FREETMPS;
    LEAVE;
    return ret;
}

static void qcx_croak_msg(pTHX_ const char *code, int err, const char *path,
                          const char *op, const char *msg);

/* Typemap types: strings for the core, NULL for undef (qcx_optstr). */
typedef const char *qcx_str;
typedef const char *qcx_optstr;

static bool qcx_has_nul(pTHX_ SV *sv)
{
    STRLEN n;
    const char *s = SvPV(sv, n);
    return memchr(s, 0, n) != NULL;
}

/* A string the core would read only up to its first NUL byte: refused. */
static void qcx_croak_nul(pTHX_ SV *sv, const char *what)
{
    STRLEN n;
    const char *s = SvPV(sv, n);
    SV *shown = sv_2mortal(newSVpvs(""));
    for (STRLEN i = 0; i < n && i < 200; i++)
        s[i] ? sv_catpvn(shown, s + i, 1) : sv_catpvs(shown, "\\0");
    char msg[512];
    snprintf(msg, sizeof(msg), "%s '%s' contains a NUL byte; refused", what, SvPV_nolen(shown));
    qcx_croak_msg(aTHX_ "invalid", EINVAL, "", "argument", msg);
}

/* what: a parameter's name (from the typemap) or a label. */
static const char *qcx_cstr(pTHX_ SV *sv, const char *what)
{
    static const char *label[][2] = {
        {"name", "snapshot name"}, {"target", "snapshot name"}, {"fmt", "format"}, {"out", "output file"},
        {"backing", "backing file"}, {"base", "base image"}, {"backing_fmt", "backing format"},
    };
    for (size_t i = 0; i < sizeof(label) / sizeof(label[0]); i++)
        if (!strcmp(what, label[i][0]))
            what = label[i][1];
    if (qcx_has_nul(aTHX_ sv))
        qcx_croak_nul(aTHX_ sv, what);
    return SvPV_nolen(sv);
}

static bool opt_true(pTHX_ HV *o, const char *k)
{
    SV **v = o ? hv_fetch(o, k, (I32)strlen(k), 0) : NULL;
    return v && SvTRUE(*v);
}

static SV *opt_sv(pTHX_ HV *o, const char *k)
{
    SV **v = o ? hv_fetch(o, k, (I32)strlen(k), 0) : NULL;
    return v && SvOK(*v) ? *v : NULL;
}

/* Build the call context from the Perl options hash. Croaks on bad options. */
static void qcx_begin(pTHX_ qcx_call *c, HV *o)
{
    memset(c, 0, sizeof(*c));
    c->ctx = qc_ctx_new();
    if (!c->ctx)
        croak("Out of memory");
    qc_policy *p = qc_ctx_policy(c->ctx);
    SV *v;
    if ((v = opt_sv(aTHX_ o, "max_depth")))
        p->max_depth = (unsigned)SvUV(v);
    p->probe_backing_format = opt_true(aTHX_ o, "probe_backing_format");
    p->allow_data_file = opt_true(aTHX_ o, "allow_data_file");
    p->allow_absolute_backing = opt_true(aTHX_ o, "allow_absolute_backing");
    p->force_share = opt_true(aTHX_ o, "force_share");
    p->no_lock = opt_true(aTHX_ o, "no_lock");
    if ((v = opt_sv(aTHX_ o, "cache_size")))
        qc_ctx_set_cache_size(c->ctx, (size_t)SvUV(v));
    if ((v = opt_sv(aTHX_ o, "rate_limit")))
        qc_ctx_set_rate_limit(c->ctx, (uint64_t)SvUV(v));
    if ((v = opt_sv(aTHX_ o, "allowed_dirs"))) {
        if (!SvROK(v) || SvTYPE(SvRV(v)) != SVt_PVAV) {
            qc_ctx_free(c->ctx);
            croak("allowed_dirs must be an array reference\n");
        }
        AV *a = (AV *)SvRV(v);
        for (SSize_t i = 0; i <= av_len(a); i++) {
            SV **d = av_fetch(a, i, 0);
            if (d && qcx_has_nul(aTHX_ *d)) {
                qc_ctx_free(c->ctx);
                qcx_croak_nul(aTHX_ *d, "allowed directory");
            }
            if (d && qc_ctx_allow_dir(c->ctx, SvPV_nolen(*d)) < 0) {
                qc_error e = *qc_ctx_error(c->ctx);
                qc_ctx_free(c->ctx);
                qcx_croak_msg(aTHX_ qc_strerror(e.code), e.sys_errno, e.path, e.op, e.msg);
            }
        }
    }
    if ((v = opt_sv(aTHX_ o, "foreign_backing")) && qc_ctx_foreign_backing(c->ctx, SvPV_nolen(v)) < 0) {
        qc_ctx_free(c->ctx);
        croak("Out of memory");
    }
    if ((v = opt_sv(aTHX_ o, "progress"))) {
        if (!SvROK(v) || SvTYPE(SvRV(v)) != SVt_PVCV) {
            qc_ctx_free(c->ctx);
            croak("progress must be a code reference\n");
        }
        c->progress = v;
        qc_ctx_set_progress(c->ctx, qcx_progress, c);
    }
    if (qcx_next_fault.armed) {
        qcx_next_fault.armed = false;
        c->fault = qc_fault_new(qcx_next_fault.mode, qcx_next_fault.nth, qcx_next_fault.err, qcx_next_fault.seed);
        if (c->fault)
            qc_ctx_set_fault(c->ctx, c->fault);
        qc_ctx_set_copy_step(c->ctx, qcx_next_fault.step);
    }
}

static void qcx_end(pTHX_ qcx_call *c)
{
    if (c->fault) {
        qcx_last_fault.count = (UV)qc_fault_count(c->fault);
        qcx_last_fault.fired = qc_fault_fired(c->fault);
        qcx_last_fault.writebacks = (UV)qc_fault_writebacks(c->fault);
        qc_fault_free(c->fault);
    }
    qc_ctx_free(c->ctx);
    c->ctx = NULL;
    c->fault = NULL;
}

/* Raise PVE::Storage::Qcow2Chain::Error->new(...) as the exception. */
static void qcx_croak_msg(pTHX_ const char *code, int err, const char *path,
                          const char *op, const char *msg)
{
    dSP;
    ENTER;
    SAVETMPS;
    PUSHMARK(SP);
    XPUSHs(sv_2mortal(newSVpvs("PVE::Storage::Qcow2Chain::Error")));
    XPUSHs(sv_2mortal(newSVpv(code, 0)));
    XPUSHs(sv_2mortal(newSViv(err)));
    XPUSHs(sv_2mortal(newSVpv(path, 0)));
    XPUSHs(sv_2mortal(newSVpv(op, 0)));
    XPUSHs(sv_2mortal(newSVpv(msg, 0)));
    PUTBACK;
    int n = call_method("new", G_SCALAR);
    SPAGAIN;
    SV *e = n == 1 ? newSVsv(POPs) : newSVpvf("%s\n", msg);
    PUTBACK;
    FREETMPS;
    LEAVE;
    croak_sv(sv_2mortal(e));
}

/* Raise the error held by ctx (which stays alive). */
static void qcx_croak_ctx(pTHX_ qc_ctx *ctx, int r)
{
    qc_error e = *qc_ctx_error(ctx);
    if (!e.msg[0])
        snprintf(e.msg, sizeof(e.msg), "operation failed (%s)", qc_strerror(r));
    qc_ctx_clear_error(ctx);
    qcx_croak_msg(aTHX_ qc_strerror(e.code ? e.code : r), e.sys_errno, e.path, e.op, e.msg);
}

/* Finish the call; on failure raise its error. */
static void qcx_check(pTHX_ qcx_call *c, int r)
{
    if (r >= 0) {
        qcx_end(aTHX_ c);
        return;
    }
    qc_error e = *qc_ctx_error(c->ctx);
    qcx_end(aTHX_ c);
    if (!e.msg[0])
        snprintf(e.msg, sizeof(e.msg), "operation failed (%s)", qc_strerror(r));
    qcx_croak_msg(aTHX_ qc_strerror(e.code ? e.code : r), e.sys_errno, e.path, e.op, e.msg);
}

/*
 * Convert a json-c value into Perl data. Booleans become JSON::PP's true
 * and false, as decode_json of qemu-img's output gives them.
 */
static SV *qcx_json_to_sv(pTHX_ json_object *o)
{
    switch (json_object_get_type(o)) {
    case json_type_null: return newSV(0);
    case json_type_boolean: {
        SV *b = get_sv(json_object_get_boolean(o) ? "JSON::PP::true" : "JSON::PP::false", 0);
        return b ? newSVsv(b) : newSViv(json_object_get_boolean(o));
    }
    case json_type_int: return newSViv((IV)json_object_get_int64(o));
    case json_type_double: return newSVnv(json_object_get_double(o));
    case json_type_string:
        return newSVpvn_utf8(json_object_get_string(o), (STRLEN)json_object_get_string_len(o), 0);
    case json_type_array: {
        AV *a = newAV();
        size_t n = json_object_array_length(o);
        for (size_t i = 0; i < n; i++)
            av_push(a, qcx_json_to_sv(aTHX_ json_object_array_get_idx(o, i)));
        return newRV_noinc((SV *)a);
    }
    case json_type_object: {
        HV *h = newHV();
        json_object_object_foreach(o, k, v) {
            (void)hv_store(h, k, (I32)strlen(k), qcx_json_to_sv(aTHX_ v), 0);
        }
        return newRV_noinc((SV *)h);
    }
    }
    return newSV(0);
}

/* Turn a json result into a mortal Perl value and release it. */
static SV *qcx_json_result(pTHX_ json_object *o)
{
    SV *sv = qcx_json_to_sv(aTHX_ o);
    json_object_put(o);
    return sv_2mortal(sv);
}

static HV *qcx_opts(pTHX_ SV *sv)
{
    if (!SvOK(sv))
        return NULL;
    if (!SvROK(sv) || SvTYPE(SvRV(sv)) != SVt_PVHV)
        croak("options must be a hash reference\n");
    return (HV *)SvRV(sv);
}

/* An open image handle (PVE::Storage::Qcow2Chain::Image). */
typedef struct qcx_image {
    qcx_call call; /* context, fault injection, progress */
    qc_image *img;
} qcx_image;

/* The typemap's PVE::Storage::Qcow2Chain::Image: an open handle, or croak. */
typedef qcx_image *PVE__Storage__Qcow2Chain__Image;

static qcx_image *qcx_image_from(pTHX_ SV *sv)
{
    if (!sv_isobject(sv) || !sv_derived_from(sv, "PVE::Storage::Qcow2Chain::Image"))
        croak("not a PVE::Storage::Qcow2Chain::Image object\n");
    qcx_image *h = INT2PTR(qcx_image *, SvIV(SvRV(sv)));
    if (!h || !h->img)
        croak("PVE::Storage::Qcow2Chain::Image: the image is closed\n");
    return h;
}

/* Raise the error of a failed call on an open handle. */
static void qcx_image_check(pTHX_ qcx_image *h, int r)
{
    if (r < 0)
        qcx_croak_ctx(aTHX_ h->call.ctx, r);
}

/* Integer option from a hash, with a default. */
static UV qcx_opt_uv(pTHX_ HV *o, const char *k, UV def)
{
    SV *v = opt_sv(aTHX_ o, k);
    return v ? SvUV(v) : def;
}

/* qcow2 creation options from a hash (create, measure); strings in o point into spec. */
static void qcx_create_opts(pTHX_ HV *spec, qc_create_opts *o)
{
    SV *v;
    qc_create_opts_init(o);
    o->size = (uint64_t)qcx_opt_uv(aTHX_ spec, "size", 0);
    o->version = (int)qcx_opt_uv(aTHX_ spec, "version", 3);
    o->cluster_size = (uint32_t)qcx_opt_uv(aTHX_ spec, "cluster_size", 65536);
    o->extended_l2 = opt_true(aTHX_ spec, "extended_l2");
    o->refcount_bits = (uint32_t)qcx_opt_uv(aTHX_ spec, "refcount_bits", 16);
    o->lazy_refcounts = opt_true(aTHX_ spec, "lazy_refcounts");
    o->compression_type = (int)qcx_opt_uv(aTHX_ spec, "compression_type", 0);
    o->preallocation = (int)qcx_opt_uv(aTHX_ spec, "preallocation", 0);
    if ((v = opt_sv(aTHX_ spec, "backing_file")))
        o->backing = qcx_cstr(aTHX_ v, "backing file");
    if ((v = opt_sv(aTHX_ spec, "backing_fmt")))
        o->backing_fmt = qcx_cstr(aTHX_ v, "backing format");
    o->backing_unchecked = opt_true(aTHX_ spec, "backing_unchecked");
}

/* Options of the volume operations, then the call context. */
static void qcx_volume_begin(pTHX_ qcx_call *c, qc_volume_opts *so, SV *opts)
{
    HV *o = qcx_opts(aTHX_ opts);
    SV *v;
    qc_volume_opts_init(so);
    so->cluster_size = (uint32_t)qcx_opt_uv(aTHX_ o, "cluster_size", so->cluster_size);
    if (opt_sv(aTHX_ o, "extended_l2"))
        so->extended_l2 = opt_true(aTHX_ o, "extended_l2");
    so->preallocation = (int)qcx_opt_uv(aTHX_ o, "preallocation", (UV)so->preallocation);
    so->running = opt_true(aTHX_ o, "running");
    so->delete_method = (int)qcx_opt_uv(aTHX_ o, "delete_method", 0);
    so->lock_timeout_ms = (unsigned)qcx_opt_uv(aTHX_ o, "lock_timeout_ms", so->lock_timeout_ms);
    if ((v = opt_sv(aTHX_ o, "images_dir")))
        so->images_dir = qcx_cstr(aTHX_ v, "images directory");
    qcx_begin(aTHX_ c, o);
}

/* Options of the conversions between internal and external snapshots (names: "old=new"). */
static void qcx_convert_begin(pTHX_ qcx_call *c, qc_convert_opts *co, AV *names, int drop_vm_state, SV *opts)
{
    HV *o = qcx_opts(aTHX_ opts);
    SSize_t n = av_len(names) + 1;
    const char **nm;
    Newxz(nm, n + 1, const char *);
    SAVEFREEPV(nm);
    for (SSize_t i = 0; i < n; i++) {
        SV **e = av_fetch(names, i, 0);
        nm[i] = e ? qcx_cstr(aTHX_ *e, "names") : "";
    }
    memset(co, 0, sizeof(*co));
    co->names = nm;
    co->nnames = (size_t)n;
    co->drop_vm_state = drop_vm_state;
    co->lock_timeout_ms = (unsigned)qcx_opt_uv(aTHX_ o, "lock_timeout_ms", 0);
    qcx_begin(aTHX_ c, o);
}

MODULE = PVE::Storage::Qcow2Chain   PACKAGE = PVE::Storage::Qcow2Chain

PROTOTYPES: DISABLE

INCLUDE: xs/Qcow2Chain.xs

INCLUDE: xs/Image.xs

INCLUDE: xs/TestHooks.xs
