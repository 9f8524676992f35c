package QcHooks;

# The test hooks of the XS part (xs/TestHooks.xs), for the test suite only:
# users of PVE::Storage::Qcow2Chain never see them.

use strict;
use warnings;

use Exporter 'import';
use PVE::Storage::Qcow2Chain;

our @EXPORT_OK = qw(image_metered);

# Run a metered operation (a raw copy to $out) on the context of handle $img,
# as a handle method reporting progress would.
sub image_metered {
    my ($img, $out) = @_;
    PVE::Storage::Qcow2Chain::TestHooks::image_metered($img, $out);
    return;
}

1;
