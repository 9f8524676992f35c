# The command line of internal snapshots: `snapshot --internal` with
# qemu-img's flags and output, `split`, `to-external` and `to-internal`.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use QcTest;
use Test::More;

my $dir = scratch();
chdir $dir or die;
my $V = 'vm-100-disk-0.qcow2';
qimg('create', '-q', '-f', 'qcow2', $V, '8M');
qio($V, 'write -q -P 0x11 0 2M');

my ($rc, $o, $e) = our_cli('snapshot', '--internal', '-c', 'one', $V);
is($rc, 0, 'snapshot --internal -c') or diag($e);
qio($V, 'write -q -P 0x22 1M 1M');
our_cli('snapshot', '--internal', '-c', 'two', $V);
($rc, $o, $e) = our_cli('snapshot', '--internal', '-l', $V);
my $q = qimg('snapshot', '-l', $V);
(my $qt = $q) =~ s/^Snapshot list:\n//;
is($o, $qt, 'snapshot --internal -l prints qemu-img\'s table');
($rc, $o) = our_cli('snapshot', '--internal', '-l', '--output=json', $V);
is_deeply(decode_json($o), qimg_json('info', '--output=json', $V)->{snapshots}, '--output=json: qemu-img info\'s snapshots');
($rc, $o, $e) = our_cli('snapshot', '--internal', '-a', '1', $V);
is($rc, 0, 'snapshot --internal -a by ID');
($rc, $o, $e) = our_cli('snapshot', '--internal', '-d', 'nope', $V);
is($rc, 1, 'a missing snapshot: exit 1');
like($e, qr/^qcow2-chain: '\Q$V\E': snapshot 'nope' does not exist\n\z/, '.. one line on stderr');
($rc, $o, $e) = our_cli('split', $V, 'two', 'two.qcow2');
is($rc, 0, 'split') or diag($e);
like($o, qr/^two\.qcow2: \d+ of 128 clusters copied/, '.. reports what it copied');
($rc) = our_cli('split', '--output=json', '--base', 'one', '-b', 'one.qcow2', '-F', 'qcow2', $V, 'two', 'two-b.qcow2');
is($rc, 0, 'split --base');
($rc, $o, $e) = our_cli('split', '--base', 'one', $V, 'two', 'x.qcow2');
like($e, qr/--base needs -b BACKING and -F FMT/, 'split --base without a backing file');
($rc, $o, $e) = our_cli('snapshot', '--internal', '-d', 'two', $V);
is($rc, 0, 'snapshot --internal -d');
($rc, $o, $e) = our_cli('to-external', $V);
is($rc, 0, 'to-external') or diag($e);
ok(-e "snap-one-$V", '.. made the snapshot file');
($rc, $o, $e) = our_cli('to-internal', $V);
is($rc, 0, 'to-internal') or diag($e);
is_deeply([map { $_->{name} } @{ qimg_json('info', '--output=json', $V)->{snapshots} }], ['one'], '.. and back');
($rc) = qimg_ok('check', $V);
is($rc, 0, 'clean');
done_testing();
