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
    /* no callbacks on handles: the callback belongs to the options of open */
    qc_ctx_set_progress(h->call.ctx, NULL, NULL);
    h->call.progress = NULL;
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
    PVE::Storage::Qcow2Chain::Image self
  CODE:
    RETVAL = (UV)qc_image_size(self->img);
  OUTPUT:
    RETVAL

const char *
filename(self)
    PVE::Storage::Qcow2Chain::Image self
  CODE:
    RETVAL = qc_image_filename(self->img);
  OUTPUT:
    RETVAL

SV *
read(self, offset, length)
    PVE::Storage::Qcow2Chain::Image self
    UV offset
    UV length
  PREINIT:
    int r;
  CODE:
    RETVAL = newSV(length ? length : 1);
    SvPOK_on(RETVAL);
    r = qc_image_read(self->img, SvPVX(RETVAL), offset, length);
    if (r < 0)
        SvREFCNT_dec(RETVAL);
    qcx_image_check(aTHX_ self, r);
    SvCUR_set(RETVAL, length);
  OUTPUT:
    RETVAL

void
write(self, offset, data)
    PVE::Storage::Qcow2Chain::Image self
    UV offset
    SV *data
  PREINIT:
    STRLEN n;
    const char *p;
  CODE:
    p = SvPVbyte(data, n);
    qcx_image_check(aTHX_ self, qc_image_write(self->img, p, offset, n));

void
write_zeroes(self, offset, length, unmap = 0)
    PVE::Storage::Qcow2Chain::Image self
    UV offset
    UV length
    int unmap
  CODE:
    qcx_image_check(aTHX_ self, qc_image_write_zeroes(self->img, offset, length, unmap ? QC_ZERO_UNMAP : 0));

void
discard(self, offset, length)
    PVE::Storage::Qcow2Chain::Image self
    UV offset
    UV length
  CODE:
    qcx_image_check(aTHX_ self, qc_image_discard(self->img, offset, length));

void
grow(self, size)
    PVE::Storage::Qcow2Chain::Image self
    UV size
  CODE:
    qcx_image_check(aTHX_ self, qc_image_grow(self->img, size));

void
flush(self)
    PVE::Storage::Qcow2Chain::Image self
  CODE:
    qcx_image_check(aTHX_ self, qc_image_flush(self->img));

void
close(self)
    PVE::Storage::Qcow2Chain::Image self
  PREINIT:
    int r;
  CODE:
    r = qc_image_flush(self->img);
    if (r < 0) {
        qc_error e = *qc_ctx_error(self->call.ctx);
        qc_image_close(self->img);
        self->img = NULL;
        qcx_croak_msg(aTHX_ qc_strerror(e.code), e.sys_errno, e.path, e.op, e.msg);
    }
    qc_image_close(self->img);
    self->img = NULL;

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
