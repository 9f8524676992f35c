# Renaming snapshots: the old name goes only when nothing else is built on
# it (as for delete), and renames that touch "current" (the live disk) keep
# every other snapshot and never leave the volume missing: current -> D
# takes snapshot D; S -> current replaces the live disk by S only when the
# live disk is S's one child and its data is in S (after QEMU's commit of a
# running VM). Guest views are read with qemu-img.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Path qw(make_path);
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;
my $SIZE = 4 << 20;
my $n = 0;

sub view { qimg('convert', '-O', 'raw', $_[0], "$dir/view.raw"); return slurp("$dir/view.raw") }
sub sf { PVE::Storage::Qcow2Chain::snapshot_file(@_) }
sub tree {
    my ($vol) = @_;
    my $l = PVE::Storage::Qcow2Chain::snapshot_list($vol);
    return { map { $_->{name} => $_->{parent} // '' } grep { $_->{kind} =~ /^(current|snapshot)$/ } @{ $l->{nodes} } };
}
# every name of the volume reads as recorded, and every file is clean
sub intact {
    my ($vol, $want) = @_;
    my @bad;
    for my $s (sort keys %$want) {
        my $f = $s eq 'current' ? $vol : sf($vol, $s);
        if (!-e $f) { push @bad, "$s missing"; next }
        push @bad, "$s differs" if view($f) ne $want->{$s};
        my ($rc, $o, $e) = qimg_ok('check', $f);
        push @bad, "$s: check $rc $e" if $rc != 0;
    }
    return @bad;
}

# a -> {c, b -> current}, every name's view
sub branched {
    my ($vol) = @_;
    branched_volume($vol, $SIZE);
    return { map { $_ => view($_ eq 'current' ? $vol : sf($vol, $_)) } qw(current a b c) };
}

# ---- 1. a snapshot another image is built on keeps its name ---------------
{
    my $V = 'vm-100-disk-0.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $V, $SIZE);
    qio($V, 'write -q -P 0x11 0 1M');
    PVE::Storage::Qcow2Chain::snapshot_create($V, 'A');
    qimg('create', '-q', '-f', 'qcow2', '-b', sf($V, 'A'), '-F', 'qcow2', 'vm-101-disk-0.qcow2');
    my $cv = view('vm-101-disk-0.qcow2');
    eval { PVE::Storage::Qcow2Chain::snapshot_rename($V, 'A', 'B') };
    like("$@", qr/^snapshot 'A' is the backing file of 'vm-101-disk-0\.qcow2'; not renamed$/m,
        'rename of a snapshot a linked clone is built on: refused');
    ok(-e sf($V, 'A') && !-e sf($V, 'B'), '.. the snapshot keeps its name');
    is(view('vm-101-disk-0.qcow2'), $cv, '.. and the clone reads as before');
    my ($rc, $o, $e) = our_cli('snapshot', '--rename', 'A=B', $V);
    ok($rc != 0 && $e =~ /backing file of/, 'CLI: refused too') or diag("$rc $e");
}

# ---- 2. renames that touch current ----------------------------------------
# a has other children: it cannot become the live disk
{
    my $V = 'vm-200-disk-0.qcow2';
    my $want = branched($V);
    eval { PVE::Storage::Qcow2Chain::snapshot_rename($V, 'a', 'current') };
    like("$@", qr/cannot rename 'a' to 'current': the live disk is not built on it/,
        "a -> {c, b -> current}: a=current refused");
    is_deeply([intact($V, $want)], [], '.. the live disk and every snapshot read as before');
    is_deeply(tree($V), { current => 'b', a => '', b => 'a', c => 'a' }, '.. the tree is unchanged');

    eval { PVE::Storage::Qcow2Chain::snapshot_rename($V, 'b', 'current', running => 1) };
    is("$@", '', "b=current with running: b, the live disk's parent, becomes the live disk") or diag($@);
    $want->{current} = $want->{b};
    delete $want->{b};
    is_deeply([intact($V, $want)], [], '.. the live disk is b, a and c read as before');
    is_deeply(tree($V), { current => 'a', a => '', c => 'a' }, '.. b is gone from the tree');
    ok(!-e sf($V, 'b'), '.. and its file');

    # now a has two children: c and the live disk
    eval { PVE::Storage::Qcow2Chain::snapshot_rename($V, 'a', 'current', running => 1) };
    like("$@", qr/cannot rename 'a' to 'current': 'c' is built on it too/, 'a -> {c, current}: a=current refused');
    is_deeply([intact($V, $want)], [], '.. nothing changed');
}

# current -> D takes snapshot D: the volume stays, with every snapshot
{
    my $V = 'vm-300-disk-0.qcow2';
    my $want = branched($V);
    eval { PVE::Storage::Qcow2Chain::snapshot_rename($V, 'current', 'c') };
    like("$@", qr/target snapshot 'c' already exists/, 'current=c: the target exists');
    PVE::Storage::Qcow2Chain::snapshot_rename($V, 'current', 'D');
    $want->{D} = $want->{current};
    is_deeply([intact($V, $want)], [], 'current=D: the volume and every snapshot read as before, D as the live disk did');
    is_deeply(tree($V), { current => 'D', a => '', b => 'a', c => 'a', D => 'b' }, ".. D is the live disk's new parent");
    qio($V, 'write -q -P 0x55 0 64k');
    is(view(sf($V, 'D')), $want->{D}, '.. and keeps its data when the live disk is written');
}

# S -> current: the live disk's own data must be in S
{
    my $V = 'vm-400-disk-0.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $V, $SIZE);
    qio($V, 'write -q -P 0x11 0 1M');
    PVE::Storage::Qcow2Chain::snapshot_create($V, 'S');
    my $s = view(sf($V, 'S'));
    PVE::Storage::Qcow2Chain::snapshot_rename($V, 'S', 'current');
    ok(!-e sf($V, 'S') && view($V) eq $s, 'S=current with an empty live disk: the live disk is S');
    PVE::Storage::Qcow2Chain::snapshot_create($V, 'S');
    qio($V, 'write -q -P 0x22 0 64k');
    my $cur = view($V);
    eval { PVE::Storage::Qcow2Chain::snapshot_rename($V, 'S', 'current') };
    like("$@", qr/cannot rename 'S' to 'current': the live disk holds data that 'S' does not/,
        'S=current offline with data in the live disk: refused');
    is(view($V), $cur, '.. the live disk reads as before');
    # what a running VM does first: QEMU commits the live disk into S
    qimg('commit', '-q', '-d', $V);
    my ($rc, $o, $e) = our_cli('snapshot', '--rename', 'S=current', '--running', $V);
    is($rc, 0, 'CLI: S=current --running after the commit') or diag($e);
    ok(!-e sf($V, 'S'), '.. S is gone');
    is(view($V), $cur, '.. the live disk reads as before the commit');
    ($rc) = qimg_ok('check', $V);
    is($rc, 0, '.. and is clean');
}

# ---- what "current" means is documented -----------------------------------
{
    my ($rc, $o, $e) = our_cli('snapshot', '--help');
    like("$o$e", qr/current=TO .*FROM=current/s, 'snapshot --help explains "current" in --rename');
    my $pod = slurp("$FindBin::Bin/../lib/PVE/Storage/Qcow2Chain.pm");
    my ($item) = $pod =~ /^(=item snapshot_rename.*?)^=item/ms;
    like($item // '', qr/C<current> names the live disk/, 'the POD of snapshot_rename explains "current"');
    ($rc, $o, $e) = run_cmd('podchecker', "$FindBin::Bin/../bin/qcow2-chain");
    like("$o$e", qr/pod syntax OK/, 'the man page is valid POD');
    like(slurp("$FindBin::Bin/../bin/qcow2-chain"), qr/^In C<--rename>, C<current> names the live disk/m,
        'the man page explains "current" in --rename');
}

done_testing();
