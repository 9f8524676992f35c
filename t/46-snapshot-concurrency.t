# Two or more processes on one volume: one waits for the other or fails
# with a clear error; nothing is corrupted.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use QcTest;
use Test::More;
use Time::HiRes qw(sleep time);
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;
my $V = 'vm-100-disk-0.qcow2';
qimg('create', '-q', '-f', 'qcow2', $V, '64M');
qio($V, 'write -q -P 0x11 0 32M');
PVE::Storage::Qcow2Chain::snapshot_create($V, 'big');
qio($V, 'write -q -P 0x22 0 64k');

# A delete in a child process, made slow (its progress callback sleeps, its
# rate is limited) so that it holds the volume's lock; returns once the
# child has started copying, with the child's pid and what it said.
sub slow_delete {
    my ($snap, $pause, $rate) = @_;
    pipe(my $r, my $w) or die;
    my $pid = fork() // die;
    if (!$pid) {
        close $r;
        my $told;
        PVE::Storage::Qcow2Chain::snapshot_delete($V, $snap, delete_method => 'stream', progress => sub {
            if (!$told++) { print $w "started\n"; close $w }
            sleep $pause;
            return;
        }, rate_limit => $rate);
        exit 0;
    }
    close $w;
    return ($pid, scalar <$r>);
}

my ($pid, $line) = slow_delete('big', 0.3, 16 << 20);
is($line, "started\n", 'the first process holds the volume');
my $t0 = time;
eval { PVE::Storage::Qcow2Chain::snapshot_create($V, 'other', lock_timeout_ms => 100) };
my $e = $@;
ok(time - $t0 < 5, 'a second process with a short timeout gives up quickly');
like("$e", qr/another snapshot operation on this volume is in progress/, '.. with a clear error');
is(ref($e) && $e->code, 'busy', '.. code busy');
PVE::Storage::Qcow2Chain::snapshot_create($V, 'waited', lock_timeout_ms => 60000);
waitpid($pid, 0);
is($?, 0, 'the first process completed');
my $list = PVE::Storage::Qcow2Chain::snapshot_list($V);
is_deeply([sort map { $_->{name} } grep { $_->{kind} eq 'snapshot' } @{ $list->{nodes} }], ['waited'],
    'the waiting process ran after it: big deleted, waited created');
my ($rc) = qimg_ok('check', $V);
is($rc, 0, 'volume clean');

# Another volume of the same storage is not held up by it.
{
    my $V2 = 'vm-100-disk-1.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $V2, '16M');
    PVE::Storage::Qcow2Chain::snapshot_create($V, 'slow');
    qio($V, 'write -q -P 0x44 32M 8M');
    my ($p2) = slow_delete('slow', 0.2, 8 << 20);
    my $t1 = time;
    PVE::Storage::Qcow2Chain::snapshot_create($V2, 'other-volume', lock_timeout_ms => 100);
    ok(time - $t1 < 1, 'a snapshot of another volume on the same storage goes ahead at once');
    waitpid($p2, 0);
    is($?, 0, 'the slow operation on the first volume completed');
    my ($rc2) = qimg_ok('check', $V2);
    is($rc2, 0, 'the other volume is clean');
}

# Four processes racing with creates and deletes on the same volume.
my @kids;
for my $p (1 .. 4) {
    my $k = fork() // die;
    if (!$k) {
        for my $i (1 .. 3) {
            PVE::Storage::Qcow2Chain::snapshot_create($V, "p$p-$i", lock_timeout_ms => 60000);
        }
        PVE::Storage::Qcow2Chain::snapshot_delete($V, "p$p-2", lock_timeout_ms => 60000);
        exit 0;
    }
    push @kids, $k;
}
my $ok = 1;
for (@kids) { waitpid($_, 0); $ok &&= $? == 0 }
ok($ok, 'all racing processes succeeded');
$list = PVE::Storage::Qcow2Chain::snapshot_list($V);
is_deeply([sort map { $_->{name} } grep { $_->{kind} eq 'snapshot' } @{ $list->{nodes} }],
    [sort('waited', map { ("p$_-1", "p$_-3") } 1 .. 4)], 'every create and delete took effect once');
my @bad;
for my $n (@{ $list->{nodes} }) {
    my ($rc2, $o) = qimg_ok('check', $n->{file});
    push @bad, $n->{file} if $rc2 != 0;
}
is_deeply(\@bad, [], 'every file clean');
qimg('convert', '-O', 'raw', $V, 'v.raw');
my $d = slurp('v.raw');
is(substr($d, 0, 65536), "\x22" x 65536, 'live data intact (head)');
is(substr($d, 65536, 65536), "\x11" x 65536, 'live data intact (from the deleted snapshot)');

done_testing();
