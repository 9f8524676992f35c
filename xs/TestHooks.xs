# xs/TestHooks.xs - hooks for the test suite only (t/lib/QcHooks.pm calls
# them): not part of the API, not documented for users.

MODULE = PVE::Storage::Qcow2Chain   PACKAGE = PVE::Storage::Qcow2Chain::TestHooks

void
image_metered(img, out)
    PVE::Storage::Qcow2Chain::Image img
    qcx_str out
  CODE:
    /* what a handle method that reports progress would do: a metered
       operation (convert_raw of the handle's image) on the handle's context */
    qcx_image_check(aTHX_ img, qc_convert_raw(img->call.ctx, qc_image_filename(img->img), NULL, out));

void
arm_fault(mode, nth, err, seed, step)
    const char *mode
    UV nth
    int err
    UV seed
    UV step
  CODE:
    /* none only counts the mutating I/O calls */
    qcx_next_fault.mode = !strcmp(mode, "crash") ? QC_FAULT_CRASH : !strcmp(mode, "error") ? QC_FAULT_ERROR
                        : !strcmp(mode, "short") ? QC_FAULT_SHORT : !strcmp(mode, "none") ? QC_FAULT_NONE : -1;
    if (qcx_next_fault.mode < 0)
        croak("unknown fault mode '%s'\n", mode);
    qcx_next_fault.nth = nth;
    qcx_next_fault.err = err;
    qcx_next_fault.seed = seed;
    qcx_next_fault.step = step; /* 0: the default */
    qcx_next_fault.armed = true;
    memset(&qcx_last_fault, 0, sizeof(qcx_last_fault));

void
disarm_fault()
  CODE:
    qcx_next_fault.armed = false;

SV *
fault_stats()
  PREINIT:
    HV *h;
  CODE:
    h = newHV();
    (void)hv_stores(h, "count", newSVuv(qcx_last_fault.count));
    (void)hv_stores(h, "fired", newSViv(qcx_last_fault.fired));
    (void)hv_stores(h, "writebacks", newSVuv(qcx_last_fault.writebacks));
    RETVAL = newRV_noinc((SV *)h);
  OUTPUT:
    RETVAL

void
image_fault_stats(img)
    PVE::Storage::Qcow2Chain::Image img
  PPCODE:
    if (img->call.fault) {
        mXPUSHu((UV)qc_fault_count(img->call.fault));
        mXPUSHi(qc_fault_fired(img->call.fault));
    }
