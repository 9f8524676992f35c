# The README's main job runs and verifies itself.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use QcTest;
use Test::More;

my $dir = scratch();
my ($rc, $out, $err) = our_cli('demo', $dir);
is($rc, 0, 'qcow2-chain demo succeeds') or diag("$out$err");
like($out, qr/^verified: \d+ files clean, \d+ MiB read back as written$/m, 'and verifies its result');
like($out, qr/roll back to the older "install"/, 'rolls back to an older snapshot');
like($out, qr/delete "install" \(the branch point/, 'deletes a branch point');
my ($qrc) = qimg_ok('check', "$dir/images/100/vm-100-disk-0.qcow2");
is($qrc, 0, 'qemu-img agrees the live disk is clean');
done_testing();
