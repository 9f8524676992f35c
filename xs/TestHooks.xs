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
