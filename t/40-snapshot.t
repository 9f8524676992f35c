# External snapshots of a volume, model-based: seeded random sequences of
# guest writes, snapshot, rollback to any snapshot and delete of any
# snapshot. After every step the live disk equals the model, every
# surviving snapshot reads exactly as when it was taken, and qemu-img check
# is clean on every file (guest views read with qemu-img).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::MD5 qw(md5_hex);
use QcHooks qw(with_fault);
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

my $dir = scratch();
chdir $dir or die;
my $SIZE = 4 << 20;

# Verify the whole volume against the model (name => [guest view, its MD5]
# of each snapshot); returns a list of problems.
# (Guest views compared by digest, qemu-img run once per content of a
# chain: QcTest::view_md5, qimg_check. Most files do not change in a step.)
sub verify {
    my ($vol, $model, $current) = @_;
    my @bad;
    push @bad, 'current differs' if view_md5($vol) ne md5_hex($current);
    my $list = PVE::Storage::Qcow2Chain::snapshot_list($vol);
    my %seen = map { $_->{name} => $_ } grep { $_->{kind} eq 'snapshot' } @{ $list->{nodes} };
    for my $s (sort keys %$model) {
        my $f = PVE::Storage::Qcow2Chain::snapshot_file($vol, $s);
        if (!$seen{$s}) { push @bad, "snapshot $s missing"; next }
        push @bad, "snapshot $s differs" if view_md5($f) ne $model->{$s}[1];
    }
    push @bad, "unexpected snapshot $_" for grep { !exists $model->{$_} } keys %seen;
    push @bad, "stray or external files" if grep { $_->{kind} eq 'stray' } @{ $list->{nodes} };
    for my $f ($vol, map { PVE::Storage::Qcow2Chain::snapshot_file($vol, $_) } keys %$model) {
        my ($rc, $o, $e) = qimg_check($f);
        push @bad, "$f: check $rc $o$e" if $rc != 0;
    }
    return @bad;
}

# A guest write through qemu-io or our API, applied to the model in $cur too.
sub model_write {
    my ($vol, $cur, $off, $len, $byte, $via_qemu) = @_;
    if ($via_qemu) {
        qio($vol, sprintf('write -q -P 0x%02x %d %d', $byte, $off, $len));
    } else {
        my $img = PVE::Storage::Qcow2Chain::Image->open($vol, rw => 1);
        $img->write($off, chr($byte) x $len);
        $img->close;
    }
    substr($$cur, $off, $len) = chr($byte) x $len;
}

for my $seed (1 .. 3) {
    srand($seed);
    my $vol = "vm-10$seed-disk-0.qcow2";
    # a 64k base volume, as Proxmox allocates it
    qimg('create', '-q', '-f', 'qcow2', $vol, $SIZE);
    qio($vol, 'write -q -P 0x01 0 3M');
    my $cur = "\x01" x (3 << 20) . "\0" x ($SIZE - (3 << 20));
    my (%model, @problems, %ops);
    my $n = 0;
    for my $step (1 .. 40) {
        my @snaps = sort keys %model;
        my $r = rand();
        my $what;
        if ($r < 0.35) {
            my $off = int(rand($SIZE - 1));
            my $len = 1 + int(rand(rand() < 0.5 ? 8192 : 300000));
            $len = $SIZE - $off if $off + $len > $SIZE;
            model_write($vol, \$cur, $off, $len, 1 + int(rand(255)), rand() < 0.5);
            $what = "write $off+$len";
        } elsif ($r < 0.6 || !@snaps) {
            my $name = 's' . ++$n . (rand() < 0.3 ? '-with-dash' : '');
            PVE::Storage::Qcow2Chain::snapshot_create($vol, $name);
            $model{$name} = [$cur, md5_hex($cur)];
            $what = "snapshot $name";
        } elsif ($r < 0.75) {
            my $s = $snaps[int(rand(@snaps))];
            PVE::Storage::Qcow2Chain::snapshot_rollback($vol, $s);
            $cur = $model{$s}[0];
            $what = "rollback $s";
        } else {
            my $s = $snaps[int(rand(@snaps))];
            my $m = (qw(auto commit stream))[int(rand(3))];
            PVE::Storage::Qcow2Chain::snapshot_delete($vol, $s, delete_method => $m);
            delete $model{$s};
            $what = "delete $s ($m)";
        }
        $ops{ $what =~ s/ .*//r }++;
        my @bad = verify($vol, \%model, $cur);
        push @problems, "step $step ($what): @bad" if @bad;
        last if @problems;
    }
    is_deeply(\@problems, [], "seed $seed: 40 random steps (" . join(', ', map { "$ops{$_} $_" } sort keys %ops)
        . ") keep every snapshot and the live disk exact");
}

# Deleting a snapshot with several children (a branch point).
{
    my $vol = 'vm-200-disk-0.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $vol, $SIZE);
    my $cur = "\0" x $SIZE;
    model_write($vol, \$cur, 0, 1 << 20, 0x11);
    PVE::Storage::Qcow2Chain::snapshot_create($vol, 'root');
    my %model = (root => [$cur, md5_hex($cur)]);
    model_write($vol, \$cur, 100000, 5000, 0x22);
    PVE::Storage::Qcow2Chain::snapshot_create($vol, 'a');
    $model{a} = [$cur, md5_hex($cur)];
    PVE::Storage::Qcow2Chain::snapshot_rollback($vol, 'root');
    $cur = $model{root}[0];
    model_write($vol, \$cur, 200000, 7000, 0x33);
    PVE::Storage::Qcow2Chain::snapshot_create($vol, 'b');
    $model{b} = [$cur, md5_hex($cur)];
    model_write($vol, \$cur, 300000, 9000, 0x44);
    my $tree = PVE::Storage::Qcow2Chain::snapshot_list($vol);
    my ($root) = grep { ($_->{name} // '') eq 'root' } @{ $tree->{nodes} };
    is_deeply([sort @{ $root->{children} }], ['a', 'b'], 'a branch: root has two children');
    PVE::Storage::Qcow2Chain::snapshot_delete($vol, 'root');
    delete $model{root};
    is_deeply([verify($vol, \%model, $cur)], [], 'deleting the branch point keeps both branches exact');
    my $t2 = PVE::Storage::Qcow2Chain::snapshot_list($vol);
    ok(!grep({ ($_->{name} // '') eq 'root' } @{ $t2->{nodes} }), 'root is gone');
}

# Errors are clear and change nothing.
{
    my $vol = 'vm-300-disk-0.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $vol, $SIZE);
    PVE::Storage::Qcow2Chain::snapshot_create($vol, 'one');
    eval { PVE::Storage::Qcow2Chain::snapshot_create($vol, 'one') };
    like("$@", qr/snapshot 'one' already exists/, 'an existing snapshot is never replaced');
    eval { PVE::Storage::Qcow2Chain::snapshot_rollback($vol, 'nope') };
    like("$@", qr/snapshot 'nope' does not exist/, 'rollback to a missing snapshot');
    eval { PVE::Storage::Qcow2Chain::snapshot_delete($vol, 'nope') };
    like("$@", qr/snapshot 'nope' does not exist/, 'delete of a missing snapshot');
    for my $bad ('current', '1abc', 'a b', 'x' x 41, 'a/b', '') {
        eval { PVE::Storage::Qcow2Chain::snapshot_create($vol, $bad) };
        like("$@", qr/invalid snapshot name/, "invalid name '$bad' refused");
    }
    eval { PVE::Storage::Qcow2Chain::snapshot_rename($vol, 'one', 'one') };
    like("$@", qr/target snapshot 'one' already exists/, "rename onto an existing name");
    PVE::Storage::Qcow2Chain::snapshot_rename($vol, 'one', 'two');
    my $t = PVE::Storage::Qcow2Chain::snapshot_list($vol);
    my ($cur) = grep { $_->{kind} eq 'current' } @{ $t->{nodes} };
    is($cur->{parent}, 'two', 'rename: the child now refers to the new name');
    ok(!-e 'snap-one-vm-300-disk-0.qcow2' && -e 'snap-two-vm-300-disk-0.qcow2', 'rename: files');
    my ($rc) = qimg_ok('check', $vol);
    is($rc, 0, 'rename: volume clean');

    # a file of another volume built on our snapshot keeps it alive
    qimg('create', '-q', '-f', 'qcow2', '-b', 'snap-two-vm-300-disk-0.qcow2', '-F', 'qcow2', 'vm-301-disk-0.qcow2');
    eval { PVE::Storage::Qcow2Chain::snapshot_delete($vol, 'two') };
    like("$@", qr/backing file of 'vm-301-disk-0\.qcow2'/, 'a snapshot used by another image is not deleted');
    ok(-e 'snap-two-vm-300-disk-0.qcow2', '.. and still there');
}

# A linked clone's base is reported as external, never as a snapshot.
{
    qimg('create', '-q', '-f', 'qcow2', 'base-400-disk-0.qcow2', $SIZE);
    my $vol = 'vm-401-disk-0.qcow2';
    qimg('create', '-q', '-f', 'qcow2', '-b', 'base-400-disk-0.qcow2', '-F', 'qcow2', $vol);
    PVE::Storage::Qcow2Chain::snapshot_create($vol, 's');
    open(my $fh, '>', "snap-junk-$vol") or die; print $fh "not an image"; close $fh;
    my $t = PVE::Storage::Qcow2Chain::snapshot_list($vol);
    my %k = map { ($_->{name} // $_->{file}) => $_->{kind} } @{ $t->{nodes} };
    is($k{'base-400-disk-0.qcow2'}, 'external', "linked clone's base: external");
    is($k{"snap-junk-$vol"}, 'stray', 'unreadable snap file: stray');
    is($k{s}, 'snapshot', 'the real snapshot');
    PVE::Storage::Qcow2Chain::snapshot_delete($vol, 's');
    my ($rc) = qimg_ok('compare', $vol, 'base-400-disk-0.qcow2');
    is($rc, 0, 'deleting the snapshot over an external base keeps the data');
}

# A journal that names files outside the volume is not acted upon.
{
    my $vol = 'vm-402-disk-0.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $vol, $SIZE);
    PVE::Storage::Qcow2Chain::snapshot_create($vol, 's');
    open(my $fh, '>', 'bystander') or die; print $fh "keep me"; close $fh;
    open($fh, '>', ".$vol.journal") or die;
    print $fh qq({"op":"delete","snap":"x","file":"$dir/bystander","how":"unlink","parent":"","children":[]});
    close $fh;
    eval { PVE::Storage::Qcow2Chain::snapshot_list($vol) };
    like("$@", qr/journal names files that are not this volume's/, 'a journal naming a foreign file is refused');
    ok(-e 'bystander', '.. and the foreign file is still there');
    unlink ".$vol.journal";
    ok(eval { PVE::Storage::Qcow2Chain::snapshot_list($vol) }, 'with the journal gone the volume works again') or diag($@);
}

# ---- the direction of a delete: the bytes each way really copies --------
# Volumes made as Proxmox makes them (metadata preallocation; overlays with
# 128k clusters, extended L2 and metadata preallocation): clusters that
# preallocation reserved but nothing wrote, and zero clusters, copy nothing
# and count as nothing. The result says which way was taken and what each
# way copies; the data moved is exactly that, the guest views stay as they
# were (qemu-img compare) and every file is clean (qemu-img check).
{
    my $M = 1 << 20;
    my $case = sub {
        my ($name, $x_writes, $child_writes, $want) = @_;
        mkdir $name;
        my $vol = "$name/vm-100-disk-0.qcow2";
        PVE::Storage::Qcow2Chain::create($vol, size => '64M', preallocation => 'metadata');
        qio($vol, @$x_writes) if @$x_writes;
        PVE::Storage::Qcow2Chain::snapshot_create($vol, 'x');
        qio($vol, @$child_writes) if @$child_writes;
        PVE::Storage::Qcow2Chain::snapshot_create($vol, 'after');
        my $child = PVE::Storage::Qcow2Chain::snapshot_file($vol, 'after');
        qimg('convert', '-O', 'raw', $child, "$name/before.raw");
        my $r = PVE::Storage::Qcow2Chain::snapshot_delete($vol, 'x');
        is_deeply($r, { snapshot => 'x', %$want }, "$name: $want->{method}, moving $want->{bytes} bytes")
            or diag(explain($r));
        my ($rc, $o) = qimg_ok('compare', '-f', 'raw', '-F', 'qcow2', "$name/before.raw", $child);
        is($rc, 0, "$name: the child reads as before") or diag($o);
        is((qimg_ok('check', $child))[0], 0, "$name: clean for qemu-img check");
        ok(!-e PVE::Storage::Qcow2Chain::snapshot_file($vol, 'x'), "$name: the snapshot is gone");
    };
    # the first snapshot, which its child covers: streaming copies nothing
    # (the old chooser counted the whole preallocated volume and committed)
    $case->('covered', ['write -q -P 1 0 4M'], ['write -q -P 2 0 16M'],
        { method => 'stream', bytes => 0, 'commit-bytes' => 16 * $M, 'stream-bytes' => 0 });
    # a small child over a big snapshot: commit
    $case->('small-child', ['write -q -P 1 0 16M'], ['write -q -P 2 32M 1M'],
        { method => 'commit', bytes => $M, 'commit-bytes' => $M, 'stream-bytes' => 16 * $M });
    # partly covered; zero clusters on either side count as nothing
    $case->('partly', ['write -q -P 1 0 8M', 'write -q -z 40M 8M'], ['write -q -P 2 4M 4M', 'write -q -P 3 20M 2M',
        'write -q -z 48M 8M'], { method => 'stream', bytes => 4 * $M, 'commit-bytes' => 6 * $M, 'stream-bytes' => 4 * $M });
    # forced the other way, it copies what it said
    mkdir 'forced';
    my $vol = 'forced/vm-100-disk-0.qcow2';
    PVE::Storage::Qcow2Chain::create($vol, size => '64M', preallocation => 'metadata');
    qio($vol, 'write -q -P 1 0 4M');
    PVE::Storage::Qcow2Chain::snapshot_create($vol, 'x');
    qio($vol, 'write -q -P 2 0 16M');
    my $r = PVE::Storage::Qcow2Chain::snapshot_delete($vol, 'x', delete_method => 'commit');
    is_deeply([@$r{qw(method bytes commit-bytes)}], ['commit', 16 * $M, 16 * $M], 'forced commit copies what it counted')
        or diag(explain($r));
    # several children: each is streamed
    PVE::Storage::Qcow2Chain::snapshot_create($vol, $_) for ('y', 'z');
    PVE::Storage::Qcow2Chain::snapshot_rollback($vol, 'y');
    $r = PVE::Storage::Qcow2Chain::snapshot_delete($vol, 'y');
    is_deeply($r, { snapshot => 'y', method => 'stream', bytes => 32 * $M }, 'two children: both streamed, 16 MiB each')
        or diag(explain($r));
    PVE::Storage::Qcow2Chain::snapshot_create($vol, 'w');
    my ($rc, $o) = our_cli('snapshot', '-d', 'w', '-v', $vol);
    like($o, qr/^snapshot 'w': deleted by committing its child into it, 0 B copied \(streaming it into the child would copy 16 MiB\)\n\z/,
        'snapshot -d -v says which way and how much') or diag($o);
    ($rc, $o) = our_cli('snapshot', '-d', 'z', '-p', $vol);
    like($o, qr/^snapshot 'z': deleted \(no children\)\n\z/, '.. and -p for a snapshot without children') or diag($o);
}

# The commit itself copies no never-written cluster: a top image with
# metadata preallocation, 60 of its 64 MiB written (too many for QEMU's
# preallocation heuristic to notice the rest: data clusters over holes of
# its file) committed into an empty base allocates 60 MiB there, not 64.
{
    qimg('create', '-q', '-f', 'qcow2', 'pa-base.qcow2', '64M');
    qimg('create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', 'pa-top.qcow2', '64M');
    qio('pa-top.qcow2', 'write -q -P 2 0 60M');
    qimg('rebase', '-u', '-b', 'pa-base.qcow2', '-F', 'qcow2', 'pa-top.qcow2');
    qimg('convert', '-O', 'raw', 'pa-top.qcow2', 'pa-view.raw');
    my $before = (stat 'pa-base.qcow2')[12];
    PVE::Storage::Qcow2Chain::commit('pa-top.qcow2');
    my $grew = ((stat 'pa-base.qcow2')[12] - $before) * 512;
    ok($grew < 62 << 20, 'commit of a preallocated top: no block allocated for its never-written clusters')
        or diag("the base grew by $grew bytes");
    my ($rc, $o) = qimg_ok('compare', '-f', 'raw', '-F', 'qcow2', 'pa-view.raw', 'pa-base.qcow2');
    is($rc, 0, '.. and the base reads as the top did (zeros there)') or diag($o);
    is((qimg_ok('check', 'pa-base.qcow2'))[0], 0, '.. clean for qemu-img check');
}

# A delete interrupted after its journal (a power cut at the last step that
# leaves one) is completed by the next call, which says so.
{
    mkdir 'rec';
    my $vol = 'rec/vm-100-disk-0.qcow2';
    my $setup = sub {
        unlink glob('rec/*'), glob('rec/.*.qcow2*');
        PVE::Storage::Qcow2Chain::create($vol, size => '8M', preallocation => 'metadata');
        qio($vol, 'write -q -P 1 0 1M');
        PVE::Storage::Qcow2Chain::snapshot_create($vol, 'x');
        qio($vol, 'write -q -P 2 0 2M');
    };
    $setup->();
    my $st = with_fault(['none'], sub { PVE::Storage::Qcow2Chain::snapshot_delete($vol, 'x') });
    for (my $k = $st->{count}; $k > 0; $k--) {
        $setup->();
        eval { with_fault(['crash', $k, 5], sub { PVE::Storage::Qcow2Chain::snapshot_delete($vol, 'x') }) };
        last if -e "rec/.vm-100-disk-0.qcow2.journal";
    }
    ok(-e "rec/.vm-100-disk-0.qcow2.journal", 'a power cut late in a delete leaves its journal');
    my $r = PVE::Storage::Qcow2Chain::snapshot_delete($vol, 'x');
    is($r->{method}, 'recovered', '.. the next delete completes it and says so') or diag(explain($r));
    ok(!-e PVE::Storage::Qcow2Chain::snapshot_file($vol, 'x'), '.. the snapshot is gone');
}

done_testing();
