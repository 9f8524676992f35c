# A small filesystem that fills up in the middle of each operation:
# create, guest writes, commit, rebase, snapshot, rollback, delete. Each
# fails with a clear "No space left on device", leaves nothing corrupt and
# nothing lost, and succeeds when retried after space is freed.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp qw(tempdir);
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

die "this test mounts a tmpfs: run it as root (CI does)\n" if $> != 0;
my $mnt = tempdir('qc-enospc-XXXXXX', TMPDIR => 1, CLEANUP => 0);
system('mount', '-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', $mnt) == 0 or die "mount tmpfs failed\n";
END { system('umount', '-l', $mnt) if $mnt; rmdir $mnt if $mnt }
chdir $mnt or die;
my $V = 'vm-100-disk-0.qcow2';

sub avail { my $a = `df --output=avail -B1 '$mnt' | tail -1`; chomp $a; return $a + 0 }

# Leave only $left bytes free.
sub fill {
    my ($left) = @_;
    unlink 'filler';
    my $n = avail() - $left;
    return if $n <= 0;
    open(my $fh, '>', 'filler') or die;
    my $chunk = "\xaa" x (1 << 20);
    while ($n > 0) {
        my $k = $n < length($chunk) ? $n : length($chunk);
        last if !syswrite($fh, $chunk, $k);
        $n -= $k;
    }
    close $fh;
}

sub view { qimg('convert', '-O', 'raw', $_[0], '/dev/shm/qc-enospc-view.raw'); return slurp('/dev/shm/qc-enospc-view.raw') }

sub clean_all {
    my ($what) = @_;
    my @bad;
    for my $f (grep { $_ ne 'filler' } glob('*')) {
        my ($rc, $o) = qimg_ok('check', $f);
        push @bad, "$f: $rc" if $rc != 0 && $rc != 3;
    }
    is_deeply(\@bad, [], "$what: no image corrupt");
}

sub nospc {
    my ($what, $code) = @_;
    eval { $code->() };
    my $e = $@;
    like("$e", qr/No space left on device|No space left/, "$what: fails with a clear ENOSPC error") or diag("got: $e");
    is(ref($e) && $e->code, 'nospc', "$what: error code nospc");
    unlike("$e", qr/\n./, "$what: one line");
}

# Setup: a volume with data, a snapshot, more data.
PVE::Storage::Qcow2Chain::create($V, size => '64M');
guest_write($V, 0, "\x11" x (8 << 20));
PVE::Storage::Qcow2Chain::snapshot_create($V, 's1');
guest_write($V, 1 << 20, "\x22" x (2 << 20));
my $cur = view($V);
my $s1 = view("snap-s1-$V");

# create
fill(100_000);
nospc('create', sub { PVE::Storage::Qcow2Chain::create('new.qcow2', size => '64M', preallocation => 'metadata') });
ok(!-e 'new.qcow2' && !glob('.new.qcow2.*'), 'create: nothing left behind');
unlink 'filler';
PVE::Storage::Qcow2Chain::create('new.qcow2', size => '64M', preallocation => 'metadata');
ok(-e 'new.qcow2', 'create: retry after freeing space works');
unlink 'new.qcow2';

# guest writes
fill(300_000);
nospc('write', sub {
    guest_write($V, 16 << 20, "\x33" x (4 << 20));
});
clean_all('write');
is(view("snap-s1-$V"), $s1, 'write: the snapshot is intact');
is(substr(view($V), 0, 16 << 20), substr($cur, 0, 16 << 20), 'write: data written before is intact');
unlink 'filler';
guest_write($V, 16 << 20, "\x33" x (4 << 20));
substr($cur, 16 << 20, 4 << 20) = "\x33" x (4 << 20);
is(view($V), $cur, 'write: retry works');

# snapshot create (the new overlay needs room)
fill(20_000);
nospc('snapshot create', sub { PVE::Storage::Qcow2Chain::snapshot_create($V, 's2') });
ok(!-e "snap-s2-$V", 'snapshot create: no snapshot file left');
is(view($V), $cur, 'snapshot create: the live disk is as before');
unlink 'filler';
PVE::Storage::Qcow2Chain::snapshot_create($V, 's2');
ok(-e "snap-s2-$V", 'snapshot create: retry works');

# rollback
guest_write($V, 0, "\x44" x 65536);
my $cur2 = view($V);
fill(20_000);
nospc('rollback', sub { PVE::Storage::Qcow2Chain::snapshot_rollback($V, 's1') });
is(view($V), $cur2, 'rollback: the live disk is as before');
unlink 'filler';
PVE::Storage::Qcow2Chain::snapshot_rollback($V, 's1');
is(view($V), $s1, 'rollback: retry works');

# commit and rebase (data has to move)
{
    guest_write($V, 30 << 20, "\x55" x (6 << 20));
    my $v = view($V);
    fill(1_000_000);
    nospc('commit', sub { PVE::Storage::Qcow2Chain::commit($V, keep => 1) });
    is(view($V), $v, 'commit: the live disk reads as before');
    clean_all('commit');
    unlink 'filler';
    fill(1_000_000);
    nospc('rebase', sub { PVE::Storage::Qcow2Chain::rebase($V, backing_file => '') });
    is(view($V), $v, 'rebase: the live disk reads as before');
    clean_all('rebase');
    unlink 'filler';
    PVE::Storage::Qcow2Chain::rebase($V, backing_file => '');
    is(view($V), $v, 'rebase: retry works');
}

# delete (streaming s1 into its children needs room)
{
    PVE::Storage::Qcow2Chain::snapshot_create($V, 's3');
    my %views = map { $_ => view("snap-$_-$V") } qw(s1 s2 s3);
    my $v = view($V);
    fill(500_000);
    nospc('delete', sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 's1', delete_method => 'stream') });
    clean_all('delete');
    is(view($V), $v, 'delete: the live disk is as before');
    is(view("snap-$_-$V"), $views{$_}, "delete: snapshot $_ intact") for qw(s2 s3);
    unlink 'filler';
    PVE::Storage::Qcow2Chain::snapshot_delete($V, 's1', delete_method => 'stream');
    ok(!-e "snap-s1-$V", 'delete: retry works');
    is(view("snap-$_-$V"), $views{$_}, "delete: $_ still exact after the retry") for qw(s2 s3);
    is(view($V), $v, 'delete: the live disk still exact');
}
clean_all('the end');
chdir "/";
done_testing();
