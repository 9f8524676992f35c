# The bridge between internal and external snapshots.
#  - split: a snapshot's exact view in a file of its own, standalone or on a
#    file showing its neighbour, reading only the clusters whose entries
#    differ (counted); while a real QEMU (qemu-storage-daemon, the qcow2
#    driver of QEMU) writes the image over NBD; and a snapshot deleted by
#    QEMU (QMP) during the copy is detected and no file is left.
#  - the whole volume to a chain and back, with every view exact, and the
#    crash matrix of both conversions: after a failure or power cut at any
#    mutating call, the next operation on the volume leaves it entirely as
#    before or entirely as after.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha1_hex);
use File::Copy qw(copy);
use IO::Socket::UNIX;
use JSON::PP;
use POSIX qw(EIO);
use QcHooks qw(with_fault);
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;
my $V = 'vm-100-disk-0.qcow2';
my $MiB = 1 << 20;

# Guest views are compared by digest, qemu-img (convert, check) run once per
# content of a chain (QcTest::view_md5, qimg_check): the crash matrix
# reaches the same states again and again.

# ---- split ----
{
    qimg('create', '-q', '-f', 'qcow2', 'src.qcow2', '256M');
    qio('src.qcow2', 'write -q -P 0x11 0 32M', 'write -q -c -P 0x12 40M 1M', 'write -q -z 48M 1M');
    PVE::Storage::Qcow2Chain::internal_snapshot_create('src.qcow2', 'a');
    # 3 MiB of new data, 1 MiB rewritten, 64k zeroed: 3M/64k + 16 + 1 clusters differ
    qio('src.qcow2', 'write -q -P 0x21 100M 3M', 'write -q -P 0x22 4M 1M', 'write -q -z 8M 64k');
    PVE::Storage::Qcow2Chain::internal_snapshot_create('src.qcow2', 'b');
    qio('src.qcow2', 'write -q -P 0x31 0 8M');
    my $st = PVE::Storage::Qcow2Chain::snapshot_split('src.qcow2', 'a', 'a.qcow2');
    is(view_md5('a.qcow2'), view_md5('src.qcow2', 'a'), 'standalone split: the snapshot\'s exact view');
    $st = PVE::Storage::Qcow2Chain::snapshot_split('src.qcow2', 'b', 'b.qcow2', base => 'a', backing_file => 'a.qcow2',
        backing_fmt => 'qcow2');
    is(view_md5('b.qcow2'), view_md5('src.qcow2', 'b'), 'split on the neighbour\'s file: the exact view');
    is($st->{'copied-clusters'}, 48 + 16, 'only the differing data clusters are copied');
    is($st->{'zeroed-clusters'}, 1, '.. the zeroed one written as zeros');
    is($st->{'bytes-read'}, (48 + 16 + 1) * 65536, '.. and nothing else is read');
    my $mine = 0;
    $mine += $_->{data} && $_->{depth} == 0 ? $_->{length} : 0 for @{ qimg_json('map', '--output=json', 'b.qcow2') };
    is($mine, 4 * $MiB, 'the new file holds only the difference (qemu-img map)');
    for my $f ('a.qcow2', 'b.qcow2') {
        my ($rc, $o, $e) = qimg_ok('check', $f);
        is($rc, 0, "$f: clean") or diag("$o$e");
    }
    eval { PVE::Storage::Qcow2Chain::snapshot_split('src.qcow2', 'b', 'b.qcow2') };
    like($@, qr/already exists/, 'an existing file is never replaced');
    eval { PVE::Storage::Qcow2Chain::snapshot_split('src.qcow2', 'zz', 'z.qcow2') };
    like($@, qr/snapshot 'zz' does not exist/, 'a missing snapshot');
    ok(!-e 'z.qcow2', '.. leaves no file');
}

# ---- split next to a running QEMU ----
{
    my $qsd = need_tool('qemu-storage-daemon', 'qemu-system-common');
    my $f = 'live.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $f, '128M');
    qio($f, 'write -q -P 0x11 0 64M');
    PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 's');
    qio($f, 'write -q -P 0x12 8M 8M');
    PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 't');
    my $want = view_md5($f, 's');
    my $pid = fork() // die;
    if (!$pid) {
        { exec($qsd, '--blockdev', "driver=file,node-name=f,filename=$f,locking=off", '--blockdev', 'driver=qcow2,node-name=q,file=f',
            '--nbd-server', 'addr.type=unix,addr.path=nbd.sock', '--export', 'type=nbd,id=e,node-name=q,writable=on',
            '--chardev', 'socket,id=m,path=qmp.sock,server=on,wait=off', '--monitor', 'chardev=m') }
        POSIX::_exit(127);
    }
    for (1 .. 100) { last if -S 'nbd.sock' && -S 'qmp.sock'; select(undef, undef, undef, 0.05) }
    # QEMU's guest writes all over the disk while the copy runs
    my $writer = fork() // die;
    if (!$writer) {
        my @w = map { sprintf('write -q -P %d %dM 1M', 0x40 + $_, ($_ * 37) % 127) } 1 .. 60;
        { exec('qemu-io', '-f', 'raw', (map { ('-c', $_) } @w), 'nbd+unix:///q?socket=nbd.sock') }
        POSIX::_exit(127);
    }
    my $st = PVE::Storage::Qcow2Chain::snapshot_split($f, 's', 'live-s.qcow2', progress => sub { select(undef, undef, undef, 0.001); return });
    waitpid($writer, 0);
    is($? >> 8, 0, 'QEMU wrote through NBD meanwhile');
    is(view_md5('live-s.qcow2'), $want, 'split while QEMU writes: the snapshot\'s exact view');
    # QEMU deletes the snapshot during the copy: detected, no file left
    my $qmp = sub {
        my ($cmd) = @_;
        my $s = IO::Socket::UNIX->new(Peer => 'qmp.sock') or die "qmp: $!";
        my $greet = <$s>;
        print $s encode_json({ execute => 'qmp_capabilities' }), "\n";
        my $ok = <$s>;
        print $s encode_json($cmd), "\n";
        my $r = <$s>;
        $r = <$s> while $r =~ /"event"/;
        close $s;
        return decode_json($r);
    };
    my $deleted;
    eval {
        PVE::Storage::Qcow2Chain::snapshot_split($f, 't', 'live-t.qcow2', progress => sub {
            $deleted //= $qmp->({ execute => 'blockdev-snapshot-delete-internal-sync', arguments => { device => 'q', name => 't' } });
            return;
        });
    };
    ok($deleted && exists $deleted->{return}, 'QEMU deleted the snapshot during the copy') or diag(explain($deleted));
    like($@, qr/snapshot 't' was deleted or replaced while it was copied/, 'the split notices and fails');
    ok(!-e 'live-t.qcow2' && !glob('.live-t.qcow2.*'), '.. and leaves no file');
    kill 'TERM', $pid;
    waitpid($pid, 0);
    my ($rc, $o, $e) = qimg_ok('check', $f);
    is($rc, 0, 'the image QEMU wrote is clean') or diag("$o$e");
}

# ---- the whole volume, to a chain and back ----
sub make_volume {
    unlink glob('*.qcow2'), glob('.vm-100*');
    qimg('create', '-q', '-f', 'qcow2', $V, '16M');
    qio($V, 'write -q -P 0x11 0 6M');
    qimg('snapshot', '-c', 'first', $V);
    qio($V, 'write -q -P 0x22 4M 2M');
    PVE::Storage::Qcow2Chain::internal_snapshot_create($V, 'second');
    PVE::Storage::Qcow2Chain::internal_snapshot_apply($V, 'first'); # a branch: third comes from first
    qio($V, 'write -q -P 0x33 8M 1M');
    qimg('snapshot', '-c', 'third', $V);
    qio($V, 'write -q -P 0x44 12M 64k');
}

make_volume();
my %v = (current => view_md5($V), map { ($_ => view_md5($V, $_)) } qw(first second third));
PVE::Storage::Qcow2Chain::volume_to_external($V);
my $list = PVE::Storage::Qcow2Chain::snapshot_list($V);
my %node = map { ($_->{name} => $_) } @{ $list->{nodes} };
is_deeply([map { $node{$_}{parent} } qw(first second third current)], [undef, 'first', 'second', 'third'],
    'to-external: the chain in the order the snapshots were taken');
is(view_md5(PVE::Storage::Qcow2Chain::snapshot_file($V, $_)), $v{$_}, "to-external: $_ exact") for qw(first second third);
is(view_md5($V), $v{current}, 'to-external: the live disk keeps its view');
is_deeply(PVE::Storage::Qcow2Chain::internal_snapshot_list($V), [], 'to-external: no internal snapshots left');
my $third = 0;
$third += $_->{data} && $_->{depth} == 0 ? $_->{length} : 0
    for @{ qimg_json('map', '--output=json', PVE::Storage::Qcow2Chain::snapshot_file($V, 'third')) };
ok($third <= 3 * $MiB, sprintf('to-external: a file holds what differs from the one before (third: %d MiB)', $third / $MiB));
PVE::Storage::Qcow2Chain::volume_to_internal($V);
is_deeply([map { $_->{name} } @{ PVE::Storage::Qcow2Chain::internal_snapshot_list($V) }], [qw(first second third)],
    'to-internal: the snapshots again, in order');
is(view_md5($V, $_), $v{$_}, "to-internal: $_ exact") for qw(first second third);
is(view_md5($V), $v{current}, 'to-internal: the live disk keeps its view');
ok(!glob('snap-*'), 'to-internal: the snapshot files are gone');
my ($rc, $o, $e) = qimg_ok('check', $V);
is($rc, 0, 'to-internal: clean') or diag("$o$e");

# names that are no volume snapshot names
{
    make_volume();
    qimg('snapshot', '-c', 'bad name', $V);
    qimg('snapshot', '-c', '2024.01', $V);
    my $before = sha1_hex(slurp($V));
    eval { PVE::Storage::Qcow2Chain::volume_to_external($V) };
    like($@, qr/not valid .*volume snapshot names: 'bad name', '2024\.01'/, 'invalid names: refused, all listed');
    is(sha1_hex(slurp($V)), $before, '.. nothing changed');
    ok(!glob('snap-*') && !glob('.vm-100-disk-0.qcow2.convert-*'), '.. no file left');
    PVE::Storage::Qcow2Chain::volume_to_external($V, names => { 'bad name' => 'bad-name', '2024.01' => 'v2024_01' });
    ok(-e PVE::Storage::Qcow2Chain::snapshot_file($V, 'bad-name') && -e PVE::Storage::Qcow2Chain::snapshot_file($V, 'v2024_01'),
        'mapped names: converted under their new names');
}

# ---- crash matrix of both conversions ----
sub state_of {
    my @int = map { $_->{name} } @{ PVE::Storage::Qcow2Chain::internal_snapshot_list($V) };
    my %s = (internal => "@int", current => view_md5($V), map { ("int $_" => view_md5($V, $_)) } @int);
    for my $n (grep { $_->{kind} eq 'snapshot' } @{ PVE::Storage::Qcow2Chain::snapshot_list($V)->{nodes} }) {
        $s{"ext $n->{name}"} = view_md5($n->{file});
    }
    $s{files} = join(' ', sort { $a cmp $b } glob('*.qcow2'), glob('.vm-100*convert*'));
    return json_canon(\%s);
}

for my $op (['to-external', \&PVE::Storage::Qcow2Chain::volume_to_external, sub { make_volume() }],
            ['to-internal', \&PVE::Storage::Qcow2Chain::volume_to_internal, sub { make_volume(); PVE::Storage::Qcow2Chain::volume_to_external($V) }]) {
    my ($name, $run, $setup) = @$op;
    $setup->();
    mkdir 'orig';
    unlink glob('orig/*');
    copy($_, "orig/$_") or die for glob('*.qcow2');
    my $restore = sub { unlink glob('*.qcow2'), glob('.vm-100*'); copy($_, s{^orig/}{}r) or die for glob('orig/*.qcow2') };
    my $before = state_of();
    my %stats = %{ with_fault(['none'], sub { $run->($V) }) };
    my $after = state_of();
    my $n = $stats{count};
    my @points = $n <= 16 ? (1 .. $n) : (1 .. 4, map({ 4 + int($_ * ($n - 8) / 8) } 1 .. 7), $n - 3 .. $n);
    my (%fails, $runs);
    for my $mode (['error', EIO], ['crash', EIO, 5]) {
        for my $k (@points) {
            $restore->();
            eval { with_fault([$mode->[0], $k, $mode->[1], $mode->[2] // 0], sub { $run->($V) }) };
            $runs++;
            my $label = "$mode->[0] at call $k" . (defined $mode->[2] ? " seed $mode->[2]" : '');
            eval { PVE::Storage::Qcow2Chain::volume_recover($V) };
            push @{ $fails{$label} }, "recovery: $@" if $@;
            push @{ $fails{$label} }, 'journal left' if -e ".$V.journal";
            my $now = state_of();
            push @{ $fails{$label} }, 'neither before nor after' if $now ne $before && $now ne $after;
            for my $f (glob('*.qcow2')) {
                my ($rc2, $o2, $e2) = qimg_check($f);
                push @{ $fails{$label} }, "$f: check $rc2" if $rc2 != 0 && $rc2 != 3;
            }
            if ($now ne $after) {
                eval { $run->($V) };
                push @{ $fails{$label} }, "redo: $@" if $@;
                push @{ $fails{$label} }, 'redo gives another result' if state_of() ne $after;
            }
        }
    }
    diag(explain(\%fails)) if %fails;
    is_deeply(\%fails, {}, "$name: $n mutating I/O calls, $runs failures and power cuts: before or after, redo works");
}

done_testing();
