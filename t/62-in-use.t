# A VM nobody locks: Proxmox's QEMU (and its qemu-img) run with image
# locking off, so our lock bytes never see them. A real qemu-io and a real
# qemu-storage-daemon hold the chain with locking off on every layer and
# write while we try to change it: every change of a file they have open is
# refused, naming the process, and their writes all arrive (guest views
# compared afterwards). Files an operation changes stay write-locked until
# it is durable; a listing completes nothing while a file is in use; a
# failure after the journal says the operation will be completed.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::UNIX;
use POSIX ();
use QcHooks qw(with_fault);
use QcTest;
use Test::More;
use Time::HiRes qw(sleep);
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

my $dir = scratch();
chdir $dir or die;
my $V = 'vm-100-disk-0.qcow2';
my $SIZE = 8 << 20;
sub sf { PVE::Storage::Qcow2Chain::snapshot_file($V, $_[0]) }
sub view { my ($f, $fmt) = @_; qimg('convert', '-f', $fmt // 'qcow2', '-O', 'raw', $f, "$dir/view.raw"); return slurp("$dir/view.raw") }

# base s1 -> s2 -> current, data in every layer
sub setup {
    unlink glob('*.qcow2'), glob('.*.qcow2*'), 'ref.raw';
    qimg('create', '-q', '-f', 'qcow2', $V, $SIZE);
    qio($V, 'write -q -P 0x11 0 3M');
    PVE::Storage::Qcow2Chain::snapshot_create($V, 's1');
    qio($V, 'write -q -P 0x22 1M 2M');
    PVE::Storage::Qcow2Chain::snapshot_create($V, 's2');
    qio($V, 'write -q -P 0x33 2M 1M');
}

# The guest's view as it must be: the view before, plus every write the
# guest made (kept in a raw reference file).
my %ref;
sub ref_start { open(my $fh, '>:raw', 'ref.raw') or die; print $fh view($V); close $fh }
sub ref_write {
    my ($off, $len, $byte) = @_;
    patch('ref.raw', $off, chr($byte) x $len);
}

# The guest: a qemu-io holding the chain with locking off on every layer
# (QcTest::qio_holder), writing when asked; the reference follows its writes.
sub guest_start {
    my $g = qio_holder($V, "$dir/guest.out");
    guest_put($g, 7 << 20, 4096, 0x70);
    return $g;
}

sub guest_put {
    my ($g, $off, $len, $byte) = @_;
    holder_do($g, sprintf('write -P 0x%x %d %d', $byte, $off, $len), 'wrote');
    ref_write($off, $len, $byte) if -e 'ref.raw';
}

sub files { return join(' ', sort glob('*.qcow2'), glob('.*.qcow2*')) }

# ---- every change of a held file is refused, by every route -----------------
setup();
my %before = (s1 => view(sf('s1')), s2 => view(sf('s2')));
my $s1sum = slurp(sf('s1'));
my $s2sum = slurp(sf('s2'));
ref_start();
my $g = guest_start();
my $who = qr/is in use by process $g->{pid} \(qemu-io\); not changing it while another process has it open\n\z/;
my @refused = (
    ['snapshot -d s1 (commit into s1)', 's1|s2', [qw(snapshot -d s1 --method=commit), $V]],
    ['snapshot -d s1 (stream into s2)', 's1|s2', [qw(snapshot -d s1 --method=stream), $V]],
    ['snapshot -d s2 (stream into the live disk)', 's2|current', [qw(snapshot -d s2), $V]],
    ['commit of the live disk', 'current', ['commit', $V]],
    ['commit of s2 into s1', 's1|s2', ['commit', sf('s2')]],
    ["rebase -b ''", 'current', ['rebase', '-b', '', $V]],
    ['snapshot -a s1', 'current', [qw(snapshot -a s1), $V]],
    ['snapshot -c (the writer would go on in the snapshot)', 'current', [qw(snapshot -c new), $V]],
    ['snapshot --rename s2=x (its child is held)', 'current', [qw(snapshot --rename s2=x), $V]],
    ['a guest write', 'current', [qw(write -P 0x99), $V, 0, 512]],
);
my $i = 0;
for my $t (@refused) {
    my ($what, $files, $cmd) = @$t;
    my $list = files();
    my ($rc, $out, $err) = our_cli(@$cmd);
    is($rc, 1, "CLI $what: refused");
    my $names = join('|', map { $_ eq 'current' ? quotemeta($V) : quotemeta(sf($_)) } split(/\|/, $files));
    like($err, qr/^qcow2-chain: '(?:$names)' $who/, "CLI $what: one line naming the file, qemu-io's pid and command") or diag($err);
    is(files(), $list, "CLI $what: no file appeared or went");
    guest_put($g, ($i++ % 6) << 20, 64 << 10, 0x40 + $i); # the guest goes on writing
}
my %api = (
    'snapshot_delete' => sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 's1') },
    'snapshot_rollback' => sub { PVE::Storage::Qcow2Chain::snapshot_rollback($V, 's2') },
    'Image->open rw' => sub { PVE::Storage::Qcow2Chain::Image->open($V, rw => 1) },
);
for my $k (sort keys %api) {
    eval { $api{$k}->() };
    my $e = $@;
    like("$e", $who, "API $k: refused naming qemu-io");
    is(ref($e) && $e->code, 'locked', "API $k: error code 'locked'");
}
my $l = PVE::Storage::Qcow2Chain::snapshot_list($V);
ok(!exists $l->{pending}, 'listing works next to the writer, nothing pending');
is(slurp(sf('s1')), $s1sum, 'snapshot s1 untouched, byte for byte');
is(slurp(sf('s2')), $s2sum, 'snapshot s2 untouched, byte for byte');
guest_put($g, 5 << 20, 128 << 10, 0x5a);
holder_stop($g);
is(view($V), slurp('ref.raw'), "the guest's view holds every write it made");
is(view(sf($_)), $before{$_}, "snapshot $_ reads as before") for qw(s1 s2);
for my $f ($V, sf('s1'), sf('s2')) {
    my ($rc) = qimg_ok('check', $f);
    is($rc, 0, "$f clean");
}
PVE::Storage::Qcow2Chain::snapshot_delete($V, 's1');
ok(!-e sf('s1'), 'with the writer gone the delete works');
is(view($V), slurp('ref.raw'), '.. and the guest view is still intact');

# ---- snapshot -c next to a QEMU that switches itself: --running --------------
setup();
$g = guest_start();
my ($rc, $out, $err) = our_cli(qw(snapshot -c live --running), $V);
is($rc, 0, 'snapshot -c --running: taken next to the writer (QEMU switches itself)') or diag($err);
ok(-e sf('live'), '.. the snapshot file is the held disk');
holder_stop($g);

# ---- qemu-storage-daemon exporting the chain, written over NBD ---------------
setup();
ref_start();
my $sock = "$dir/nbd.sock";
my $qsd = qsd_holder($V, $sock, '--nbd-server', "addr.type=unix,addr.path=$sock",
    '--export', 'type=nbd,id=e0,node-name=drive,name=q,writable=on');
my $nbd = "nbd+unix:///q?socket=$sock";
sub nbd_write { my ($off, $len, $byte) = @_; qio([$nbd, 'raw'], sprintf('write -q -P 0x%x %d %d', $byte, $off, $len)); ref_write($off, $len, $byte) }
nbd_write(0, 64 << 10, 0x61);
my $qwho = qr/is in use by process $qsd \(qemu-storage-d\w*\);/;
for my $t (['snapshot -d s1', [qw(snapshot -d s1), $V]], ['snapshot -d s2', [qw(snapshot -d s2), $V]],
    ['commit', ['commit', $V]], ["rebase -b ''", ['rebase', '-b', '', $V]], ['snapshot -a s1', [qw(snapshot -a s1), $V]])
{
    my ($what, $cmd) = @$t;
    my ($rc2, undef, $err2) = our_cli(@$cmd);
    ok($rc2 == 1 && $err2 =~ $qwho, "qemu-storage-daemon: $what refused naming it") or diag($err2);
    nbd_write(1 << 20, 64 << 10, 0x62);
}
kill 'TERM', $qsd;
waitpid($qsd, 0);
is(view($V), slurp('ref.raw'), 'qemu-storage-daemon: every write over NBD arrived');

# ---- the hold: the files a delete writes stay write-locked until it is done ---
# From inside the delete (its progress callback), a stock QEMU (locks on)
# cannot open them for writing, and /proc/locks shows our lock bytes.
sub locks_of {
    my ($f) = @_;
    my $ino = (stat $f)[1];
    open(my $fh, '<', '/proc/locks') or die;
    my %b;
    while (<$fh>) {
        $b{$1} = 1 if /OFDLCK\s+ADVISORY\s+\w+\s+-?\d+\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s+(\d+)\s+(\d+)/ && $1 == $ino && $2 <= 101 && $3 >= 101;
    }
    return scalar keys %b;
}
for my $how (qw(commit stream)) {
    setup();
    qio(sf('s2'), 'write -q -P 0x44 0 6M'); # enough to copy for a while
    my ($x, $child) = (sf('s1'), sf('s2'));
    my (%seen, $calls);
    PVE::Storage::Qcow2Chain::snapshot_delete($V, 's1', delete_method => $how, progress => sub {
        return if $calls++;
        for my $f ($x, $child) {
            $seen{"$f locked"} = locks_of($f);
            my ($rc3, $o3, $e3) = run_cmd('qemu-io', '-c', 'write -P 0xee 0 512', $f);
            $seen{"$f qemu-io"} = "$o3$e3";
        }
        return;
    });
    ok($calls, "delete by $how: progress ran while copying");
    for my $f ($x, $child) {
        ok($seen{"$f locked"}, "delete by $how: during the copy $f carries our write lock");
        like($seen{"$f qemu-io"}, qr/Failed to get "write" lock/, "delete by $how: .. a stock QEMU cannot write $f");
    }
    my ($rc4, $o4) = run_cmd('qemu-io', '-c', 'read -q 0 512', $V);
    is($rc4, 0, "delete by $how: afterwards the lock is gone");
}

# ---- after a failure: back as it was, or told it will be completed ------------
# A delete fails at each of its steps in turn (an injected I/O error). Where
# the journal stays, the error says the delete will be completed; a listing
# next to a writer then reports it and changes nothing; once the writer is
# gone a listing completes it. Where no journal stays, nothing was done.
setup();
my $whole = with_fault(['none'], sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 's1', delete_method => 'commit') })->{count};
my (@untold, @unclean, $pending_checked);
my ($told, $back) = (0, 0);
for my $n (1 .. $whole) {
    setup();
    my ($v0, $s2v) = (view($V), view(sf('s2')));
    eval { with_fault(['error', $n, POSIX::EIO], sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 's1', delete_method => 'commit') }) };
    my $e = "$@";
    next if $e eq ''; # a step whose failure the delete survives
    if (-e ".$V.journal") {
        if ($e =~ /; the delete of snapshot 's1' is recorded in '\S+' and will be completed by the next operation on '\Q$V\E'\n\z/) {
            $told++;
        } else {
            push @untold, "$n: $e";
        }
        next if $pending_checked++;
        ref_start();
        my $w = guest_start();
        my $listed = PVE::Storage::Qcow2Chain::snapshot_list($V);
        like($listed->{pending} // '', qr/delete of snapshot 's1' cannot be finished yet: .*is in use by process $w->{pid} \(qemu-io\)/,
            'a listing next to the writer reports the pending delete');
        ok(-e ".$V.journal", '.. and leaves the journal');
        guest_put($w, 0, 4096, 0x7e);
        holder_stop($w);
        $listed = PVE::Storage::Qcow2Chain::snapshot_list($V);
        ok(!$listed->{pending} && !-e sf('s1') && !-e ".$V.journal", 'with the writer gone a listing completes it');
        is(view($V), slurp('ref.raw'), ".. the guest view holds the writer's data");
    } elsif ($e !~ /will be completed/ && -e sf('s1') && view($V) eq $v0 && view(sf('s2')) eq $s2v) {
        $back++;
    } else {
        push @unclean, "$n: $e";
    }
}
ok($told && $pending_checked, "failures after the journal say the delete will be completed ($told)");
is_deeply(\@untold, [], '.. all of them');
ok($back, "failures before it leave the volume as it was ($back)");
is_deeply(\@unclean, [], '.. all of them');

# ---- rename next to a running QEMU: the old name stays until QEMU switched ----
setup();
ref_start();
my $qmp = "$dir/qmp.sock";
$qsd = qsd_holder($V, $qmp, '--chardev', "socket,id=m,path=$qmp,server=on,wait=off", '--monitor', 'chardev=m');
eval { PVE::Storage::Qcow2Chain::snapshot_rename($V, 's2', 'x') };
like("$@", qr/'\Q$V\E' is in use by process $qsd \(qemu-storage-d\w*\)/, 'offline rename with the child held: refused');
ok(-e sf('s2') && !-e sf('x'), '.. nothing renamed');
PVE::Storage::Qcow2Chain::snapshot_rename($V, 's2', 'x', running => 1);
ok(-e sf('x') && -e sf('s2'), 'running rename: the new name exists, the old one QEMU still uses is kept');
is((stat sf('x'))[1], (stat sf('s2'))[1], '.. both are the same file');
is(PVE::Storage::Qcow2Chain::info($V)->{'backing-filename'}, sf('s2'), '.. the held child still names the old one');
like(PVE::Storage::Qcow2Chain::snapshot_list($V)->{pending} // '', qr/rename of snapshot 's2'/, '.. a listing reports the rename as pending');
ok(-e sf('s2'), '.. and keeps the old name');
# QEMU switches, as qemu-server's blockdev-replace does
my $m = IO::Socket::UNIX->new(Peer => $qmp) or die "qmp: $!";
my $reply = sub { while (my $line = <$m>) { return $line if $line =~ /"return"|"error"/ } };
<$m>;
print $m qq({"execute":"qmp_capabilities"}\n);
$reply->();
print $m qq({"execute":"change-backing-file","arguments":{"device":"drive","image-node-name":"drive","backing-file":") . sf('x') . qq("}}\n);
like($reply->(), qr/"return"/, 'QEMU changed the backing name (change-backing-file)');
my $after = PVE::Storage::Qcow2Chain::snapshot_list($V);
ok(!$after->{pending} && !-e sf('s2') && -e sf('x'), 'the next listing completes the rename: the old name is gone');
is((grep { $_->{name} && $_->{name} eq 'current' } @{ $after->{nodes} })[0]{parent}, 'x', '.. the live disk is on x');
close $m;
kill 'TERM', $qsd;
waitpid($qsd, 0);
is(view($V), slurp('ref.raw'), 'the guest view is intact');
my ($rc5) = qimg_ok('check', $V);
is($rc5, 0, 'volume clean');

done_testing();
