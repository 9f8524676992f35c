# xs/Qcow2Chain.xs - functions of PVE::Storage::Qcow2Chain (wrapped in lib/).

MODULE = PVE::Storage::Qcow2Chain   PACKAGE = PVE::Storage::Qcow2Chain

const char *
core_version()
  CODE:
    RETVAL = QC_VERSION;
  OUTPUT:
    RETVAL

SV *
_info(file, fmt, backing_chain, opts)
    const char *file
    SV *fmt
    int backing_chain
    SV *opts
  PREINIT:
    qcx_call c;
    json_object *o = NULL;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_info(c.ctx, &o, file, qcx_str_or_null(aTHX_ fmt), backing_chain));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL

SV *
_map(file, fmt, opts)
    const char *file
    SV *fmt
    SV *opts
  PREINIT:
    qcx_call c;
    json_object *o = NULL;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_map(c.ctx, &o, file, qcx_str_or_null(aTHX_ fmt)));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL

void
_convert_raw(file, fmt, out, opts)
    const char *file
    SV *fmt
    const char *out
    SV *opts
  PREINIT:
    qcx_call c;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_convert_raw(c.ctx, file, qcx_str_or_null(aTHX_ fmt), out));

SV *
_read(file, fmt, offset, length, opts)
    const char *file
    SV *fmt
    UV offset
    UV length
    SV *opts
  PREINIT:
    qcx_call c;
    qc_image *img = NULL;
    int r;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    RETVAL = newSV(length ? length : 1);
    SvPOK_on(RETVAL);
    r = qc_image_open(c.ctx, &img, file, qcx_str_or_null(aTHX_ fmt), QC_OPEN_SHARE);
    if (r == 0)
        r = qc_image_read(img, SvPVX(RETVAL), offset, length);
    qc_image_close(img);
    if (r < 0)
        SvREFCNT_dec(RETVAL);
    qcx_check(aTHX_ &c, r);
    SvCUR_set(RETVAL, length);
  OUTPUT:
    RETVAL

void
_create(file, spec, opts)
    const char *file
    HV *spec
    SV *opts
  PREINIT:
    qcx_call c;
    qc_create_opts o;
  CODE:
    qcx_create_opts(aTHX_ spec, &o);
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_create(c.ctx, file, &o));

SV *
_measure(file, fmt, out_fmt, spec, layer, opts)
    SV *file
    SV *fmt
    SV *out_fmt
    HV *spec
    int layer
    SV *opts
  PREINIT:
    qcx_call c;
    qc_create_opts o;
    qc_measure_info m;
    HV *h;
  CODE:
    qcx_create_opts(aTHX_ spec, &o);
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_measure(c.ctx, &m, qcx_str_or_null(aTHX_ file), qcx_str_or_null(aTHX_ fmt),
                                   qcx_str_or_null(aTHX_ out_fmt), &o, layer ? QC_MEASURE_LAYER : 0));
    h = newHV();
    (void)hv_stores(h, "required", newSVuv((UV)m.required));
    (void)hv_stores(h, "fully-allocated", newSVuv((UV)m.fully_allocated));
    if (m.has_bitmaps)
        (void)hv_stores(h, "bitmaps", newSVuv((UV)m.bitmaps));
    RETVAL = newRV_noinc((SV *)h);
  OUTPUT:
    RETVAL

SV *
_check(file, fmt, repair, opts)
    const char *file
    SV *fmt
    int repair
    SV *opts
  PREINIT:
    qcx_call c;
    json_object *o = NULL;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_check(c.ctx, &o, file, qcx_str_or_null(aTHX_ fmt), repair));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL

void
_compact(file, fmt, out, opts)
    const char *file
    SV *fmt
    SV *out
    SV *opts
  PREINIT:
    qcx_call c;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_compact(c.ctx, file, qcx_str_or_null(aTHX_ fmt), qcx_str_or_null(aTHX_ out)));

void
_commit(file, fmt, base, keep, opts)
    const char *file
    SV *fmt
    SV *base
    int keep
    SV *opts
  PREINIT:
    qcx_call c;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_commit(c.ctx, file, qcx_str_or_null(aTHX_ fmt), qcx_str_or_null(aTHX_ base),
                                  keep ? QC_COMMIT_KEEP : 0));

void
_rebase(file, fmt, backing, backing_fmt, unsafe, opts)
    const char *file
    SV *fmt
    const char *backing
    SV *backing_fmt
    int unsafe
    SV *opts
  PREINIT:
    qcx_call c;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_rebase(c.ctx, file, qcx_str_or_null(aTHX_ fmt), backing,
                                  qcx_str_or_null(aTHX_ backing_fmt), unsafe ? QC_REBASE_UNSAFE : 0));

void
_snapshot(op, volume, name, target, opts)
    const char *op
    const char *volume
    const char *name
    SV *target
    SV *opts
  PREINIT:
    qcx_call c;
    qc_volume_opts so;
    HV *o;
    int r;
  CODE:
    o = qcx_opts(aTHX_ opts);
    qc_volume_opts_init(&so);
    so.cluster_size = (uint32_t)qcx_opt_uv(aTHX_ o, "cluster_size", so.cluster_size);
    if (opt_sv(aTHX_ o, "extended_l2"))
        so.extended_l2 = opt_true(aTHX_ o, "extended_l2");
    so.preallocation = (int)qcx_opt_uv(aTHX_ o, "preallocation", (UV)so.preallocation);
    so.running = opt_true(aTHX_ o, "running");
    so.delete_method = (int)qcx_opt_uv(aTHX_ o, "delete_method", 0);
    so.lock_timeout_ms = (unsigned)qcx_opt_uv(aTHX_ o, "lock_timeout_ms", so.lock_timeout_ms);
    qcx_begin(aTHX_ &c, o);
    if (!strcmp(op, "create"))
        r = qc_volume_snapshot(c.ctx, volume, name, &so);
    else if (!strcmp(op, "rollback"))
        r = qc_volume_rollback(c.ctx, volume, name, &so);
    else if (!strcmp(op, "delete"))
        r = qc_volume_delete_snapshot(c.ctx, volume, name, &so);
    else if (!strcmp(op, "rename"))
        r = qc_volume_rename_snapshot(c.ctx, volume, name, qcx_str_or_null(aTHX_ target) ? SvPV_nolen(target) : "", &so);
    else if (!strcmp(op, "recover"))
        r = qc_volume_recover(c.ctx, volume, &so);
    else
        croak("unknown snapshot operation '%s'\n", op);
    qcx_check(aTHX_ &c, r);

SV *
_snapshot_file(volume, name)
    const char *volume
    const char *name
  PREINIT:
    char *p;
  CODE:
    p = qc_volume_snapshot_path(volume, name);
    if (!p)
        croak("Out of memory\n");
    RETVAL = newSVpv(p, 0);
    free(p);
  OUTPUT:
    RETVAL

SV *
_snapshot_list(volume, opts)
    const char *volume
    SV *opts
  PREINIT:
    qcx_call c;
    qc_volume_opts so;
    json_object *o = NULL;
    HV *h;
  CODE:
    h = qcx_opts(aTHX_ opts);
    qc_volume_opts_init(&so);
    so.lock_timeout_ms = (unsigned)qcx_opt_uv(aTHX_ h, "lock_timeout_ms", so.lock_timeout_ms);
    qcx_begin(aTHX_ &c, h);
    qcx_check(aTHX_ &c, qc_volume_list(c.ctx, &o, volume, &so));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL

SV *
_import_check(file, fmt, opts)
    const char *file
    SV *fmt
    SV *opts
  PREINIT:
    qcx_call c;
    json_object *o = NULL;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_import_check(c.ctx, &o, file, qcx_str_or_null(aTHX_ fmt)));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL
