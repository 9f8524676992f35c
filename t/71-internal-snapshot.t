# Internal snapshots against qemu-img: create, apply, delete and list on
# images of every layout (v2, v3, extended L2, small clusters, wide and
# narrow refcounts, compressed clusters), mixed with qemu-img's own
# snapshot operations and QEMU's guest writes. After every step qemu-img
# check is clean, qemu-img lists what we list, and every snapshot and the
# live disk read (qemu-img convert -l / plain) as they did when taken
# (compared by digest: QcTest::view_md5).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX ();
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

my $dir = scratch();
chdir $dir or die;

sub qinfo_snaps { return qimg_json('info', '--output=json', '-U', $_[0])->{snapshots} // [] }

# qemu-img check clean, qemu-img's list = ours, every remembered view unchanged.
sub verify {
    my ($f, $views, $what) = @_;
    my ($rc, $o, $e) = qimg_check($f);
    is($rc, 0, "$what: qemu-img check is clean") or diag("$o$e");
    is_deeply(PVE::Storage::Qcow2Chain::internal_snapshot_list($f), qinfo_snaps($f), "$what: qemu-img lists what we list");
    my @bad = grep { view_md5($f, $_ eq 'current' ? undef : $_) ne $views->{$_} } sort keys %$views;
    is("@bad", '', "$what: every snapshot and the live disk read as when taken");
}

my @layouts = (
    ['v3, 64k clusters', []],
    ['v2 (compat 0.10)', ['-o', 'compat=0.10']],
    ['extended L2, 128k clusters', ['-o', 'extended_l2=on,cluster_size=128k']],
    ['4k clusters, 64-bit refcounts', ['-o', 'cluster_size=4k,refcount_bits=64']],
    ['512-byte clusters', ['-o', 'cluster_size=512']],
    ['zstd compression', ['-o', 'compression_type=zstd']],
);

for my $l (@layouts) {
    my ($name, $o) = @$l;
    my $f = 'img.qcow2';
    unlink $f;
    qimg('create', '-q', '-f', 'qcow2', @$o, $f, '8M');
    qio($f, 'write -q -P 0x11 0 3M', 'write -q -c -P 0x12 4M 128k', 'write -q -z 5M 64k', 'write -q -P 0x13 7M 1k');
    my %v = (current => view_md5($f));
    PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 's1');
    $v{s1} = $v{current};
    verify($f, \%v, "$name: create s1");
    qio($f, 'write -q -P 0x21 1M 300k', 'write -q -c -P 0x22 4608k 128k', 'write -q -P 0x23 6M 1M');
    $v{current} = view_md5($f);
    qimg('snapshot', '-c', 'q2', $f);
    $v{q2} = $v{current};
    qio($f, 'write -q -P 0x31 0 64k', 'discard -q 2M 512k');
    $v{current} = view_md5($f);
    PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 's3');
    $v{s3} = $v{current};
    qio($f, 'write -q -P 0x41 512k 1M');
    $v{current} = view_md5($f);
    verify($f, \%v, "$name: QEMU's snapshot between ours, QEMU writes after ours");
    my @ids = map { $_->{id} } @{ qinfo_snaps($f) };
    is("@ids", '1 2 3', "$name: IDs numbered as QEMU numbers them");

    PVE::Storage::Qcow2Chain::internal_snapshot_apply($f, 'q2');
    $v{current} = $v{q2};
    verify($f, \%v, "$name: apply QEMU's snapshot");
    qio($f, 'write -q -P 0x51 3M 2M');
    $v{current} = view_md5($f);
    verify($f, \%v, "$name: QEMU writes after the apply (copy on write of the shared clusters)");
    PVE::Storage::Qcow2Chain::internal_snapshot_apply($f, '1'); # by ID, as qemu-img
    $v{current} = $v{s1};
    verify($f, \%v, "$name: apply by ID");

    PVE::Storage::Qcow2Chain::internal_snapshot_delete($f, 's1');
    delete $v{s1};
    verify($f, \%v, "$name: delete the snapshot the live disk came from");
    qio($f, 'write -q -P 0x61 0 2M');
    $v{current} = view_md5($f);
    verify($f, \%v, "$name: QEMU writes in place where nothing is shared any more");
    qimg('snapshot', '-d', 's3', $f);
    delete $v{s3};
    PVE::Storage::Qcow2Chain::internal_snapshot_delete($f, 'q2');
    delete $v{q2};
    verify($f, \%v, "$name: QEMU deletes ours, we delete QEMU's");
    my $c = qimg_json('check', '--output=json', $f);
    ok(!$c->{leaks}, "$name: nothing leaked after all snapshots are gone");
}

# ---- errors ----
{
    my $f = 'err.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $f, '4M');
    PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 'a');
    my $before = slurp($f);
    eval { PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 'a') };
    like($@, qr/snapshot 'a' already exists/, 'a name that exists is refused');
    eval { PVE::Storage::Qcow2Chain::internal_snapshot_create($f, '1') };
    like($@, qr/snapshot '1' already exists/, 'a name that is an existing ID is refused (qemu-img looks IDs up first)');
    eval { PVE::Storage::Qcow2Chain::internal_snapshot_apply($f, 'nope') };
    like($@, qr/snapshot 'nope' does not exist/, 'apply of a missing snapshot');
    eval { PVE::Storage::Qcow2Chain::internal_snapshot_delete($f, 'nope') };
    like($@, qr/snapshot 'nope' does not exist/, 'delete of a missing snapshot');
    eval { PVE::Storage::Qcow2Chain::internal_snapshot_create($f, '') };
    like($@, qr/invalid snapshot name/, 'an empty name is refused');
    ok(slurp($f) eq $before, 'refused operations change nothing');
    qimg('create', '-q', '-f', 'raw', 'r.raw', '1M');
    eval { PVE::Storage::Qcow2Chain::internal_snapshot_create('r.raw', 'a') };
    like($@, qr/not a qcow2 image/, 'raw images have no internal snapshots');

    # 1-bit refcounts cannot count a second reference: refused as QEMU refuses, nothing changed
    qimg('create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=1', 'one.qcow2', '4M');
    qio('one.qcow2', 'write -q -P 0x11 0 1M');
    my $b1 = slurp('one.qcow2');
    eval { PVE::Storage::Qcow2Chain::internal_snapshot_create('one.qcow2', 'a') };
    like($@, qr/would overflow 1 bits/, '1-bit refcounts: refused with a clear error');
    ok(slurp('one.qcow2') eq $b1, '1-bit refcounts: the image is unchanged');
    my ($rc) = qimg_ok('check', 'one.qcow2');
    is($rc, 0, '1-bit refcounts: check clean');
}

# ---- unknown extra data in the table survives our rewrite ----
{
    my $f = 'extra.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $f, '4M');
    qimg('snapshot', '-c', 'old', $f);
    # widen the entry's extra data from 24 to 32 bytes in place (the table keeps its cluster)
    my $h = peek($f, 0, 72);
    my $st = unpack('Q>', substr($h, 64, 8));
    my $e = peek($f, $st, 4096);
    my ($idl, $nl) = unpack('n n', substr($e, 12, 4));
    my $xs = unpack('N', substr($e, 36, 4));
    is($xs, 24, 'QEMU writes 24 bytes of extra data');
    my $unknown = "UNKNOWN!";
    my $new = substr($e, 0, 36) . pack('N', 32) . substr($e, 40, 24) . $unknown . substr($e, 64, $idl + $nl);
    patch($f, $st, $new . "\0" x 8);
    my ($rc) = qimg_ok('check', $f);
    is($rc, 0, 'hand-widened table is valid for QEMU');
    PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 'new');
    $h = peek($f, 0, 72);
    $st = unpack('Q>', substr($h, 64, 8));
    $e = peek($f, $st, 4096);
    is(unpack('N', substr($e, 36, 4)), 32, 'the old entry keeps its 32 bytes of extra data');
    is(substr($e, 64, 8), $unknown, '.. with the unknown bytes verbatim');
    ($rc) = qimg_ok('check', $f);
    is($rc, 0, 'check clean after the rewrite');
    is_deeply([map { $_->{name} } @{ qinfo_snaps($f) }], ['old', 'new'], 'both listed by qemu-img');
}

# ---- a snapshot taken at another size ----
{
    my $f = 'size.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $f, '4M');
    qio($f, 'write -q -P 0x11 0 4M');
    PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 'small');
    my $small = view_md5($f);
    qimg('resize', '-q', $f, '1G');
    qio($f, 'write -q -P 0x22 900M 1M');
    PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 'big');
    # the 1 GiB view kept as a raw file, for qemu-img compare (which skips what both leave unallocated)
    qimg('convert', '-O', 'raw', '-l', 'snapshot.name=big', $f, 'big.raw');
    PVE::Storage::Qcow2Chain::internal_snapshot_apply($f, 'small');
    is(qimg_json('info', '--output=json', $f)->{'virtual-size'}, 4 << 20, 'apply restores the size the snapshot was taken at');
    is(view_md5($f), $small, '.. and its data');
    PVE::Storage::Qcow2Chain::internal_snapshot_apply($f, 'big');
    is(qimg_json('info', '--output=json', $f)->{'virtual-size'}, 1 << 30, 'and back to the larger one');
    my ($crc, $co, $ce) = qimg_ok('compare', '-f', 'raw', '-F', 'qcow2', 'big.raw', $f);
    is($crc, 0, '.. with its data') or diag("$co$ce");
    my ($rc, $o, $e) = qimg_ok('check', $f);
    is($rc, 0, 'check clean') or diag("$o$e");
}

# ---- snapshots with VM state (savevm of a real QEMU) ----
{
    my $qemu = need_tool('qemu-system-x86_64', 'qemu-system-x86');
    my $f = 'vm.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $f, '64M');
    qio($f, 'write -q -P 0x11 0 2M');
    my $monitor = sub {
        my (@cmds) = @_;
        open(my $in, '>', 'mon.txt') or die;
        print $in map { "$_\n" } @cmds, 'quit';
        close $in;
        my ($rc, $o, $e) = run_cmd('sh', '-c', "$qemu -nodefaults -machine none -display none -monitor stdio"
            . " -drive if=none,id=d0,format=qcow2,file=$f,file.locking=off < mon.txt");
        return "$o$e";
    };
    my $out = $monitor->('savevm vm1');
    my ($vm1) = grep { $_->{name} eq 'vm1' } @{ qinfo_snaps($f) };
    ok($vm1 && $vm1->{'vm-state-size'} > 0, "QEMU's savevm stored VM state ($vm1->{'vm-state-size'} bytes)") or diag($out);
    my $disk1 = view_md5($f, 'vm1');
    qio($f, 'write -q -P 0x22 1M 1M');
    PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 'disk-only');
    my $c = qimg_json('check', '--output=json', $f);
    ok(!$c->{corruptions} && !$c->{leaks}, 'our create next to a VM-state snapshot: check clean');
    my ($again) = grep { $_->{name} eq 'vm1' } @{ qinfo_snaps($f) };
    is_deeply($again, $vm1, 'the VM-state snapshot keeps its table entry');
    $out = $monitor->('loadvm vm1', 'info snapshots');
    unlike($out, qr/error|fail|could not/i, 'QEMU loads the VM state after our create') or diag($out);
    is(view_md5($f), $disk1, '.. and the disk shows the snapshot');
    PVE::Storage::Qcow2Chain::internal_snapshot_delete($f, 'disk-only');
    $out = $monitor->('loadvm vm1');
    unlike($out, qr/error|fail|could not/i, 'QEMU loads the VM state after our delete of another snapshot') or diag($out);
    $c = qimg_json('check', '--output=json', $f);
    ok(!$c->{corruptions} && !$c->{leaks}, '.. check clean');
    my $end_with = $c->{'image-end-offset'};
    $monitor->('savevm vm2');
    my ($vm2) = grep { $_->{name} eq 'vm2' } @{ qinfo_snaps($f) };
    my $alloc_before = qimg_json('check', '--output=json', $f)->{'allocated-clusters'};
    PVE::Storage::Qcow2Chain::internal_snapshot_delete($f, 'vm1');
    PVE::Storage::Qcow2Chain::internal_snapshot_delete($f, 'vm2');
    $c = qimg_json('check', '--output=json', $f);
    ok(!$c->{corruptions} && !$c->{leaks}, 'deleting VM-state snapshots frees their state: no leaks');
    is_deeply(qinfo_snaps($f), [], 'no snapshots left');
    ok($vm2 && $vm2->{'vm-state-size'} > 0, 'a second savevm after ours works');
    cmp_ok($c->{'image-end-offset'}, '<=', $end_with + (1 << 20), 'space of the deleted state is reusable');
}

# ---- a 16 TiB sparse disk: bounded memory ----
{
    my $f = 'huge.qcow2';
    my $T = 1 << 40;
    qimg('create', '-q', '-f', 'qcow2', $f, '16T');
    qio($f, 'write -q -P 0x11 0 64k', "write -q -P 0x12 @{[8 * $T]} 64k", "write -q -P 0x13 @{[16 * $T - 65536]} 64k");
    my $base = peak_mib(sub { PVE::Storage::Qcow2Chain::core_version() });
    my %p;
    $p{create} = peak_mib(sub { PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 'a') });
    qio($f, "write -q -P 0x21 @{[8 * $T]} 4k");
    $p{'create again'} = peak_mib(sub { PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 'b') });
    $p{apply} = peak_mib(sub { PVE::Storage::Qcow2Chain::internal_snapshot_apply($f, 'a') });
    $p{delete} = peak_mib(sub { PVE::Storage::Qcow2Chain::internal_snapshot_delete($f, 'b') });
    ok($p{$_} - $base < 64, sprintf('%s on a 16 TiB disk: %.1f MiB above the baseline', $_, $p{$_} - $base)) for sort keys %p;
    my ($rc, $o, $e) = qimg_ok('check', $f);
    is($rc, 0, '16 TiB: check clean') or diag("$o$e");
    my $img = PVE::Storage::Qcow2Chain::Image->open($f);
    is($img->read(8 * $T, 8), "\x12" x 8, '16 TiB: the live disk shows snapshot a');
    $img->close;
}

done_testing();
