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
    qcx_str file
    qcx_optstr fmt
    int backing_chain
    SV *opts
  PREINIT:
    qcx_call c;
    json_object *o = NULL;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_info(c.ctx, &o, file, fmt, backing_chain));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL

SV *
_map(file, fmt, opts)
    qcx_str file
    qcx_optstr fmt
    SV *opts
  PREINIT:
    qcx_call c;
    json_object *o = NULL;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_map(c.ctx, &o, file, fmt));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL

void
_convert_raw(file, fmt, out, opts)
    qcx_str file
    qcx_optstr fmt
    qcx_str out
    SV *opts
  PREINIT:
    qcx_call c;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_convert_raw(c.ctx, file, fmt, out));

SV *
_read(file, fmt, offset, length, opts)
    qcx_str file
    qcx_optstr fmt
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
    r = qc_image_open(c.ctx, &img, file, fmt, QC_OPEN_SHARE);
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
    qcx_str file
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
    qcx_optstr file
    qcx_optstr fmt
    qcx_optstr out_fmt
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
    qcx_check(aTHX_ &c, qc_measure(c.ctx, &m, file, fmt, out_fmt, &o, layer ? QC_MEASURE_LAYER : 0));
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
    qcx_str file
    qcx_optstr fmt
    int repair
    SV *opts
  PREINIT:
    qcx_call c;
    json_object *o = NULL;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_check(c.ctx, &o, file, fmt, repair));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL

void
_compact(file, fmt, out, opts)
    qcx_str file
    qcx_optstr fmt
    qcx_optstr out
    SV *opts
  PREINIT:
    qcx_call c;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_compact(c.ctx, file, fmt, out));

void
_commit(file, fmt, base, keep, opts)
    qcx_str file
    qcx_optstr fmt
    qcx_optstr base
    int keep
    SV *opts
  PREINIT:
    qcx_call c;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_commit(c.ctx, file, fmt, base,
                                  keep ? QC_COMMIT_KEEP : 0));

void
_rebase(file, fmt, backing, backing_fmt, unsafe, opts)
    qcx_str file
    qcx_optstr fmt
    qcx_str backing
    qcx_optstr backing_fmt
    int unsafe
    SV *opts
  PREINIT:
    qcx_call c;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_rebase(c.ctx, file, fmt, backing,
                                  backing_fmt, unsafe ? QC_REBASE_UNSAFE : 0));

void
_snapshot_create(volume, name, opts)
    qcx_str volume
    qcx_str name
    SV *opts
  PREINIT:
    qcx_call c;
    qc_volume_opts so;
  CODE:
    qcx_volume_begin(aTHX_ &c, &so, opts);
    qcx_check(aTHX_ &c, qc_volume_snapshot(c.ctx, volume, name, &so));

void
_snapshot_rollback(volume, name, opts)
    qcx_str volume
    qcx_str name
    SV *opts
  PREINIT:
    qcx_call c;
    qc_volume_opts so;
  CODE:
    qcx_volume_begin(aTHX_ &c, &so, opts);
    qcx_check(aTHX_ &c, qc_volume_rollback(c.ctx, volume, name, &so));

SV *
_snapshot_delete(volume, name, opts)
    qcx_str volume
    qcx_str name
    SV *opts
  PREINIT:
    qcx_call c;
    qc_volume_opts so;
    json_object *o = NULL;
  CODE:
    qcx_volume_begin(aTHX_ &c, &so, opts);
    qcx_check(aTHX_ &c, qc_volume_delete_snapshot(c.ctx, &o, volume, name, &so));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL

void
_snapshot_rename(volume, name, target, opts)
    qcx_str volume
    qcx_str name
    qcx_str target
    SV *opts
  PREINIT:
    qcx_call c;
    qc_volume_opts so;
  CODE:
    qcx_volume_begin(aTHX_ &c, &so, opts);
    qcx_check(aTHX_ &c, qc_volume_rename_snapshot(c.ctx, volume, name, target, &so));

void
_volume_recover(volume, opts)
    qcx_str volume
    SV *opts
  PREINIT:
    qcx_call c;
    qc_volume_opts so;
  CODE:
    qcx_volume_begin(aTHX_ &c, &so, opts);
    qcx_check(aTHX_ &c, qc_volume_recover(c.ctx, volume, &so));

void
_volume_forget(volume, opts)
    qcx_str volume
    SV *opts
  PREINIT:
    qcx_call c;
    qc_volume_opts so;
  CODE:
    qcx_volume_begin(aTHX_ &c, &so, opts);
    qcx_check(aTHX_ &c, qc_volume_forget(c.ctx, volume, &so));

SV *
_snapshot_file(volume, name)
    qcx_str volume
    qcx_str name
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
    qcx_str volume
    SV *opts
  PREINIT:
    qcx_call c;
    qc_volume_opts so;
    json_object *o = NULL;
  CODE:
    qcx_volume_begin(aTHX_ &c, &so, opts);
    qcx_check(aTHX_ &c, qc_volume_list(c.ctx, &o, volume, &so));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL

void
_volume_dependent(volume, opts)
    qcx_str volume
    SV *opts
  PREINIT:
    qcx_call c;
    qc_volume_opts so;
    char *image = NULL, *file = NULL;
  PPCODE:
    qcx_volume_begin(aTHX_ &c, &so, opts);
    qcx_check(aTHX_ &c, qc_volume_find_dependent(c.ctx, &image, &file, volume, &so));
    if (image) {
        mXPUSHp(image, strlen(image));
        mXPUSHp(file, strlen(file));
    }
    free(image);
    free(file);

SV *
_import_check(file, fmt, opts)
    qcx_str file
    qcx_optstr fmt
    SV *opts
  PREINIT:
    qcx_call c;
    json_object *o = NULL;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_import_check(c.ctx, &o, file, fmt));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL

void
_internal_snapshot_create(file, name, opts)
    qcx_str file
    qcx_str name
    SV *opts
  PREINIT:
    qcx_call c;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_snapshot_create(c.ctx, file, name));

void
_internal_snapshot_apply(file, name, opts)
    qcx_str file
    qcx_str name
    SV *opts
  PREINIT:
    qcx_call c;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_snapshot_apply(c.ctx, file, name));

void
_internal_snapshot_delete(file, name, opts)
    qcx_str file
    qcx_str name
    SV *opts
  PREINIT:
    qcx_call c;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_snapshot_delete(c.ctx, file, name));

SV *
_internal_snapshot_list(file, opts)
    qcx_str file
    SV *opts
  PREINIT:
    qcx_call c;
    json_object *o = NULL;
  CODE:
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_snapshot_list(c.ctx, &o, file));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL

SV *
_snapshot_split(file, snap, out, base, backing, backing_fmt, opts)
    qcx_str file
    qcx_str snap
    qcx_str out
    qcx_optstr base
    qcx_optstr backing
    qcx_optstr backing_fmt
    SV *opts
  PREINIT:
    qcx_call c;
    qc_split_opts so;
    json_object *o = NULL;
  CODE:
    so.base = base;
    so.backing = backing;
    so.backing_fmt = backing_fmt;
    qcx_begin(aTHX_ &c, qcx_opts(aTHX_ opts));
    qcx_check(aTHX_ &c, qc_snapshot_split(c.ctx, &o, file, snap, out, &so));
    RETVAL = SvREFCNT_inc(qcx_json_result(aTHX_ o));
  OUTPUT:
    RETVAL

void
_volume_to_external(volume, names, drop_vm_state, opts)
    qcx_str volume
    AV *names
    int drop_vm_state
    SV *opts
  PREINIT:
    qcx_call c;
    qc_convert_opts co;
  CODE:
    qcx_convert_begin(aTHX_ &c, &co, names, drop_vm_state, opts);
    qcx_check(aTHX_ &c, qc_volume_to_external(c.ctx, volume, &co));

void
_volume_to_internal(volume, names, drop_vm_state, opts)
    qcx_str volume
    AV *names
    int drop_vm_state
    SV *opts
  PREINIT:
    qcx_call c;
    qc_convert_opts co;
  CODE:
    qcx_convert_begin(aTHX_ &c, &co, names, drop_vm_state, opts);
    qcx_check(aTHX_ &c, qc_volume_to_internal(c.ctx, volume, &co));
