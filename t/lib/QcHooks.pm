package QcHooks;

# The test hooks of the XS part (xs/TestHooks.xs), for the test suite only:
# users of PVE::Storage::Qcow2Chain never see them.

use strict;
use warnings;

use Exporter 'import';
use POSIX qw(EIO);
use PVE::Storage::Qcow2Chain;

our @EXPORT_OK = qw(with_fault image_fault_stats image_metered);

# Run $code with fault injection through the I/O seam for the first call into
# the core it makes: $spec = [$mode, $nth, $errno, $seed, $step], mode 'none' (only
# counts), 'error' (mutating I/O call $nth fails with $errno, default EIO),
# 'crash' (a power cut at call $nth: it and every later call fail, unsynced
# writes are lost as $seed decides), 'short' (every write is short);
# $step: bytes a long copy writes between writeback hints (default 32 MiB). Returns
# that call's counters {count, fired, writebacks}; dies as $code dies. An
# image handle opened in $code keeps the fault (image_fault_stats).
sub with_fault {
    my ($spec, $code) = @_;
    my ($mode, $nth, $errno, $seed, $step) = @$spec;
    PVE::Storage::Qcow2Chain::TestHooks::arm_fault($mode, $nth // 0, $errno // EIO, $seed // 0, $step // 0);
    my $ok = eval { $code->(); 1 };
    my $err = $@;
    PVE::Storage::Qcow2Chain::TestHooks::disarm_fault();
    die $err if !$ok;
    return PVE::Storage::Qcow2Chain::TestHooks::fault_stats();
}

# (mutating I/O calls so far, whether the fault fired) of a handle opened under with_fault; () otherwise.
sub image_fault_stats {
    my ($img) = @_;
    return PVE::Storage::Qcow2Chain::TestHooks::image_fault_stats($img);
}

# Run a metered operation (a raw copy to $out) on the context of handle $img,
# as a handle method reporting progress would.
sub image_metered {
    my ($img, $out) = @_;
    PVE::Storage::Qcow2Chain::TestHooks::image_metered($img, $out);
    return;
}

1;
