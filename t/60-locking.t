# QEMU's image locks, both ways, with a real QEMU holding the image:
# qemu-io kept open in the background, and qemu-storage-daemon exporting the
# image writable over NBD. Inspection works next to it, and snapshot creation
# when the holder says it switches to the new overlay itself; everything
# that would modify the image is refused with QEMU's words before touching
# anything. And qemu-img sees our locks.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX ();
use QcTest;
use Test::More;
use Time::HiRes qw(sleep);
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

my $dir = scratch();
chdir $dir or die;
my $V = 'vm-100-disk-0.qcow2';
qimg('create', '-q', '-f', 'qcow2', 'base.qcow2', '16M');
qio('base.qcow2', 'write -q -P 1 0 1M');
qimg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', $V);
qio($V, 'write -q -P 2 64k 64k');

# Somebody holds QEMU's "write" permission byte (101) on the image: read
# /proc/locks rather than probing with qemu-img, which would race the holder.
sub held {
    my $ino = (stat $V)[1];
    open(my $fh, '<', '/proc/locks') or die;
    while (<$fh>) {
        return 1 if /OFDLCK\s+ADVISORY\s+\w+\s+\S+\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s+(\d+)\s+(\d+)/ && $1 == $ino && $2 <= 101 && $3 >= 101;
    }
    return 0;
}

sub wait_held {
    for (1 .. 100) { return 1 if held(); sleep 0.05 }
    return 0;
}

sub holders {
    my ($start, $stop, $what) = @_;
    ok($start->(), "$what holds the image");
    my $before = slurp($V);

    my $i = eval { PVE::Storage::Qcow2Chain::info($V, backing_chain => 1) };
    ok($i && @$i == 2, "$what: info works next to it") or diag($@);
    ok(eval { PVE::Storage::Qcow2Chain::map_image($V) }, "$what: map works next to it") or diag($@);

    my %refused = (
        'guest write' => sub { my $img = PVE::Storage::Qcow2Chain::Image->open($V, rw => 1); $img->write(0, 'x') },
        'check' => sub { PVE::Storage::Qcow2Chain::check($V) },
        'check -r leaks' => sub { PVE::Storage::Qcow2Chain::check($V, repair => 'leaks') },
        'commit' => sub { PVE::Storage::Qcow2Chain::commit($V) },
        'rebase' => sub { PVE::Storage::Qcow2Chain::rebase($V, backing_file => '', backing_fmt => 'qcow2') },
        'convert' => sub { PVE::Storage::Qcow2Chain::convert_raw($V, 'out.raw') },
    );
    for my $op (sort keys %refused) {
        eval { $refused{$op}->() };
        my $e = $@;
        like("$e", qr/^Failed to get (shared )?"write" lock: Is another process using the image \[\Q$V\E\]\?\n\z/,
            "$what: $op refused with QEMU's words");
        is(ref($e) && $e->code, 'locked', "$what: $op error code 'locked'");
    }
    is(slurp($V), $before, "$what: the image is untouched");

    # snapshots: taking one works only when the holder switches to the new
    # overlay itself (running); rollback and delete do not
    eval { PVE::Storage::Qcow2Chain::snapshot_create($V, 'live') };
    like("$@", qr/^Failed to get "write" lock: Is another process using the image \[\Q$V\E\]\?\n\z/,
        "$what: taking a snapshot of the held image is refused (it would go on writing into the snapshot)");
    ok(!-e "snap-live-$V", "$what: .. nothing taken");
    PVE::Storage::Qcow2Chain::snapshot_create($V, 'live', running => 1);
    ok(-e "snap-live-$V", "$what: snapshot taken while the image is held, when QEMU switches itself (running)");
    my @a = stat("snap-live-$V");
    is_deeply([@a[0, 1]], [$what =~ /storage-daemon/ ? @a[0, 1] : @a[0, 1]], "$what: the snapshot file is the held inode");
    eval { PVE::Storage::Qcow2Chain::snapshot_rollback($V, 'live') };
    is("$@", '', "$what: rollback of the new overlay (not held) works");
    # deleting the held snapshot: refused before anything is recorded or changed
    eval { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'live') };
    like("$@", qr/^Failed to get "write" lock: Is another process using the image \[.*snap-live-\Q$V\E\]\?\n\z/,
        "$what: deleting the snapshot it holds is refused with QEMU's words");
    ok(!-e ".$V.journal", "$what: .. before any journal is written");
    my $l = eval { PVE::Storage::Qcow2Chain::snapshot_list($V) };
    ok($l && grep({ ($_->{name} // "") eq "live" } @{ $l->{nodes} }), "$what: .. listing still works and shows the snapshot") or diag($@);
    $stop->();
    ok(-e "snap-live-$V", "$what: the refused delete did not happen later either");
    ok(!held(), "$what released the image");
    PVE::Storage::Qcow2Chain::snapshot_delete($V, 'live');
    my ($rc) = qimg_ok('check', $V);
    is($rc, 0, "$what: image clean afterwards");
}

# qemu-io, interactive, kept open
{
    my $pid;
    holders(sub {
        $pid = open(my $in, '|-', "exec qemu-io -f qcow2 '$V' >/dev/null 2>&1") or die;
        $main::QIO = $in;
        return wait_held();
    }, sub {
        print $main::QIO "quit\n";
        close $main::QIO;
        waitpid($pid, 0) if $pid;
    }, 'qemu-io');
}

# qemu-storage-daemon exporting the image writable
{
    my $pid;
    holders(sub {
        $pid = fork() // die;
        if (!$pid) {
            open(STDOUT, '>', '/dev/null');
            open(STDERR, '>', 'qsd.err');
            exec('qemu-storage-daemon', '--blockdev', "driver=file,node-name=f,filename=$dir/$V",
                '--blockdev', 'driver=qcow2,node-name=q,file=f',
                '--nbd-server', "addr.type=unix,addr.path=$dir/nbd.sock",
                '--export', 'type=nbd,id=e0,node-name=q,writable=on') or POSIX::_exit(1);
        }
        return wait_held();
    }, sub {
        kill 'TERM', $pid;
        waitpid($pid, 0);
    }, 'qemu-storage-daemon');
}

# The other way round: QEMU sees our locks.
{
    my $img = PVE::Storage::Qcow2Chain::Image->open($V, rw => 1);
    my ($rc, $o, $e) = run_cmd('qemu-img', 'info', $V);
    isnt($rc, 0, 'while we write, qemu-img info is refused');
    like($e, qr/Failed to get shared "write" lock/, '.. by our lock');
    ($rc) = run_cmd('qemu-img', 'info', '-U', $V);
    is($rc, 0, '.. but qemu-img info -U works');
    ($rc, $o, $e) = run_cmd('qemu-io', '-c', 'write 0 512', $V);
    isnt($rc || ($o =~ /Failed|lock/ ? 1 : 0), 0, 'qemu-io cannot write while we hold the image');
    $img->close;
    ($rc) = run_cmd('qemu-img', 'info', $V);
    is($rc, 0, 'after close qemu-img works again');
}

done_testing();
