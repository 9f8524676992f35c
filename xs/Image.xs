# xs/Image.xs - PVE::Storage::Qcow2Chain::Image: an open image and its chain.

MODULE = PVE::Storage::Qcow2Chain   PACKAGE = PVE::Storage::Qcow2Chain::Image

SV *
_open(class, file, fmt, rw, opts)
    const char *class
    qcx_str file
    qcx_optstr fmt
    int rw
    SV *opts
  PREINIT:
    qcx_image *h;
    int r;
  CODE:
    Newxz(h, 1, qcx_image);
    qcx_begin(aTHX_ &h->call, qcx_opts(aTHX_ opts));
    h->call.progress = NULL; /* no callbacks on handles */
    r = qc_image_open(h->call.ctx, &h->img, file, fmt,
                      rw ? QC_OPEN_RDWR : QC_OPEN_SHARE);
    if (r < 0) {
        qc_error e = *qc_ctx_error(h->call.ctx);
        qcx_end(aTHX_ &h->call);
        Safefree(h);
        qcx_croak_msg(aTHX_ qc_strerror(e.code), e.sys_errno, e.path, e.op, e.msg);
    }
    RETVAL = newSV(0);
    sv_setref_pv(RETVAL, class, (void *)h);
  OUTPUT:
    RETVAL

UV
size(self)
    SV *self
  CODE:
    RETVAL = (UV)qc_image_size(qcx_image_from(aTHX_ self)->img);
  OUTPUT:
    RETVAL

const char *
filename(self)
    SV *self
  CODE:
    RETVAL = qc_image_filename(qcx_image_from(aTHX_ self)->img);
  OUTPUT:
    RETVAL

SV *
read(self, offset, length)
    SV *self
    UV offset
    UV length
  PREINIT:
    qcx_image *h;
    int r;
  CODE:
    h = qcx_image_from(aTHX_ self);
    RETVAL = newSV(length ? length : 1);
    SvPOK_on(RETVAL);
    r = qc_image_read(h->img, SvPVX(RETVAL), offset, length);
    if (r < 0) {
        SvREFCNT_dec(RETVAL);
        qcx_croak_ctx(aTHX_ h->call.ctx, r);
    }
    SvCUR_set(RETVAL, length);
  OUTPUT:
    RETVAL

void
write(self, offset, data)
    SV *self
    UV offset
    SV *data
  PREINIT:
    qcx_image *h;
    STRLEN n;
    const char *p;
    int r;
  CODE:
    h = qcx_image_from(aTHX_ self);
    p = SvPVbyte(data, n);
    r = qc_image_write(h->img, p, offset, n);
    if (r < 0)
        qcx_croak_ctx(aTHX_ h->call.ctx, r);

void
write_zeroes(self, offset, length, unmap = 0)
    SV *self
    UV offset
    UV length
    int unmap
  PREINIT:
    qcx_image *h;
    int r;
  CODE:
    h = qcx_image_from(aTHX_ self);
    r = qc_image_write_zeroes(h->img, offset, length, unmap ? QC_ZERO_UNMAP : 0);
    if (r < 0)
        qcx_croak_ctx(aTHX_ h->call.ctx, r);

void
discard(self, offset, length)
    SV *self
    UV offset
    UV length
  PREINIT:
    qcx_image *h;
    int r;
  CODE:
    h = qcx_image_from(aTHX_ self);
    r = qc_image_discard(h->img, offset, length);
    if (r < 0)
        qcx_croak_ctx(aTHX_ h->call.ctx, r);

void
grow(self, size)
    SV *self
    UV size
  PREINIT:
    qcx_image *h;
    int r;
  CODE:
    h = qcx_image_from(aTHX_ self);
    r = qc_image_grow(h->img, size);
    if (r < 0)
        qcx_croak_ctx(aTHX_ h->call.ctx, r);

void
flush(self)
    SV *self
  PREINIT:
    qcx_image *h;
    int r;
  CODE:
    h = qcx_image_from(aTHX_ self);
    r = qc_image_flush(h->img);
    if (r < 0)
        qcx_croak_ctx(aTHX_ h->call.ctx, r);

void
fault_stats(self)
    SV *self
  PREINIT:
    qcx_image *h;
  PPCODE:
    if (!sv_isobject(self) || !sv_derived_from(self, "PVE::Storage::Qcow2Chain::Image"))
        croak("not a PVE::Storage::Qcow2Chain::Image object\n");
    h = INT2PTR(qcx_image *, SvIV(SvRV(self)));
    if (h && h->call.fault) {
        mXPUSHu((UV)qc_fault_count(h->call.fault));
        mXPUSHi(qc_fault_fired(h->call.fault));
    }

void
close(self)
    SV *self
  PREINIT:
    qcx_image *h;
    int r;
  CODE:
    h = qcx_image_from(aTHX_ self);
    r = qc_image_flush(h->img);
    if (r < 0) {
        qc_error e = *qc_ctx_error(h->call.ctx);
        qc_image_close(h->img);
        h->img = NULL;
        qcx_croak_msg(aTHX_ qc_strerror(e.code), e.sys_errno, e.path, e.op, e.msg);
    }
    qc_image_close(h->img);
    h->img = NULL;

void
DESTROY(self)
    SV *self
  PREINIT:
    qcx_image *h;
  CODE:
    if (!SvROK(self))
        return;
    h = INT2PTR(qcx_image *, SvIV(SvRV(self)));
    if (!h)
        return;
    qc_image_close(h->img);
    qcx_end(aTHX_ &h->call);
    Safefree(h);
    sv_setiv(SvRV(self), 0);
