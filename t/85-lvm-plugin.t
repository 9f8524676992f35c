# The LVM plugin (storage type qcow2lvm) on a real LVM volume group: lvm2
# runs with activation disabled (no device-mapper in this kernel) and loop
# devices stand in for the activated LVs (t/lib/QcLVM.pm). The plugin runs
# the Proxmox LVM plugin's stand-in (real lvm2 commands) underneath; every
# image is checked with qemu-img, every guest view compared with what it
# was. Proxmox's names and tags, LVs sized by qemu-img measure, snapshot
# LVs shrunk to what they hold, rollback to any snapshot, deletes anywhere,
# renames with 'current', qemu-server's running-VM flows, free_image of the
# whole tree, saferemove.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use QcLVM;
use QcTest;
use Test::More;

if (my $why = lvm_usable()) {
    plan skip_all => $why;
}

my $dir = scratch();
chdir $dir or die;
my $MiB = 1 << 20;
my ($P, $scfg) = lvm_storage(dir => $dir, pvs => 14, pv_size => 96 * $MiB, extent => '1m');
my ($vg, $sid) = ($scfg->{vgname}, 'san');

sub locked { my ($code) = @_; return $P->cluster_lock_storage($sid, 1, undef, $code) }
sub dev { "/dev/$vg/$_[0]" }
sub lvs { lvm_lvs() }
sub view {
    my ($lv) = @_;
    unlink 'view.raw';
    qimg('convert', '-f', 'qcow2', '-O', 'raw', dev($lv), 'view.raw');
    return slurp('view.raw');
}
sub clean {
    my ($lv, $label) = @_;
    my ($rc, $o, $e) = qimg_ok('check', '-f', 'qcow2', dev($lv));
    is($rc, 0, "$label: $lv checks clean") or diag("$o$e");
}
sub full { # qemu-img measure's fully-allocated size, rounded to extents
    my (@o) = @_;
    my $m = qimg_json('measure', '--output=json', '-O', 'qcow2', '--size', '64M', (@o ? ('-o', join(',', @o)) : ()));
    return int(($m->{'fully-allocated'} + $MiB - 1) / $MiB) * $MiB;
}
sub backing { qimg_json('info', '--output=json', '-f', 'qcow2', dev($_[0]))->{'backing-filename'} }
sub tags_ok {
    my ($lv) = @_;
    my %t = map { $_ => 1 } split /,/, lvs()->{$lv}{tags};
    return $t{'pve-vm-100'} && $t{'pve-vm-100-disk-0.qcow2'};
}

my $vol = locked(sub { $P->alloc_image($sid, $scfg, 100, 'qcow2', undef, 64 * 1024) });
is($vol, 'vm-100-disk-0.qcow2', "alloc_image: Proxmox's volume name");
is(lvs()->{$vol}{size}, full(), "the volume's LV has qemu-img measure's fully-allocated size");
ok(tags_ok($vol), "and Proxmox's tags (pve-vm-100, pve-<volume>)");
clean($vol, 'a new volume');
is(qimg_json('info', '--output=json', '-f', 'qcow2', dev($vol))->{'virtual-size'}, 64 * $MiB, 'of the size asked');
is_deeply([map { $_->{volid} } @{ $P->list_images($sid, $scfg, 100) }], ["$sid:$vol"], 'list_images lists it');

my %want; # snapshot => guest view when taken
qio(dev($vol), 'write -q -P 0x11 0 8M');
my $before = view($vol);
$P->volume_snapshot($scfg, $sid, $vol, 's1');
$want{s1} = $before;
my $l = lvs();
ok($l->{'snap_vm-100-disk-0_s1.qcow2'}, "snapshot s1 is the LV snap_vm-100-disk-0_s1.qcow2, Proxmox's name");
is(view($vol), $before, 'the volume reads as before');
is(view('snap_vm-100-disk-0_s1.qcow2'), $before, 'the snapshot holds the data');
is(backing($vol), 'snap_vm-100-disk-0_s1.qcow2', 'the new volume overlay is backed by it (relative LV name)');
is($l->{$vol}{size}, full('cluster_size=128k', 'extended_l2=on'), "the new overlay's LV is measured as Proxmox measures it");
cmp_ok($l->{'snap_vm-100-disk-0_s1.qcow2'}{size}, '<=', 10 * $MiB, "s1's LV shrank to what it holds (8 MiB of data)");
ok(tags_ok('snap_vm-100-disk-0_s1.qcow2'), 'it keeps the tags');
clean($_, 'after snapshot s1') for $vol, 'snap_vm-100-disk-0_s1.qcow2';

qio(dev($vol), 'write -q -P 0x22 4M 8M');
$want{s2} = view($vol);
$P->volume_snapshot($scfg, $sid, $vol, 's2');
qio(dev($vol), 'write -q -P 0x33 10M 6M');
$want{s3} = view($vol);
$P->volume_snapshot($scfg, $sid, $vol, 's3');
qio(dev($vol), 'write -q -P 0x44 30M 1M');
$want{current} = view($vol);

my $info = $P->volume_snapshot_info($scfg, $sid, $vol);
is_deeply({ map { $_ => [@{ $info->{$_} }{qw(order parent child volname)}] } keys %$info }, {
    current => [0, 's3', undef, $vol],
    s3 => [1, 's2', 'current', 'snap_vm-100-disk-0_s3.qcow2'],
    s2 => [2, 's1', 's3', 'snap_vm-100-disk-0_s2.qcow2'],
    s1 => [3, undef, 's2', 'snap_vm-100-disk-0_s1.qcow2'],
}, "volume_snapshot_info: Proxmox's order, parent, child and LV names");
is($info->{s2}{file}, dev('snap_vm-100-disk-0_s2.qcow2'), 'with the LV path as file');
is($info->{s2}{volid}, "$sid:snap_vm-100-disk-0_s2.qcow2", 'and its volid');
is($info->{s2}{'virtual-size'}, 64 * $MiB, 'and virtual size');

my $snap_bytes = 0;
$snap_bytes += lvs()->{"snap_vm-100-disk-0_$_.qcow2"}{size} for qw(s1 s2 s3);
cmp_ok($snap_bytes * 5, '<', 3 * full(), "three snapshot LVs take $snap_bytes bytes, not 3 x " . full());

is_deeply($P->qemu_blockdev_options($scfg, $sid, $vol, undef, { 'snapshot-name' => 's2' }),
    { driver => 'host_device', filename => dev('snap_vm-100-disk-0_s2.qcow2') },
    'qemu_blockdev_options of a snapshot: its LV as a host_device');
is($P->volume_qemu_snapshot_method($sid, $scfg, $vol), 'mixed', 'volume_qemu_snapshot_method: mixed');
is_deeply([map { $_->{volid} } @{ $P->list_images($sid, $scfg, 100) }], ["$sid:$vol"], 'snapshot LVs are not volumes');
eval { $P->parse_volname('snap_vm-100-disk-0_s2.qcow2') };
like("$@", qr/is a snapshot volume, not a volume/, 'nor can they be parsed as volumes');
eval { $P->volume_snapshot($scfg, $sid, $vol, 's2') };
is("$@", "target snapshot 's2' already exists\n", 'an existing snapshot name is refused');

# ---- rollback to any snapshot, and a branch --------------------------------
ok($P->volume_rollback_is_possible($scfg, $sid, $vol, 's1'), 'rollback to the oldest snapshot is possible');
$P->volume_snapshot_rollback($scfg, $sid, $vol, 's1');
is(view($vol), $want{s1}, 'rolled back to s1, not the newest');
is(view("snap_vm-100-disk-0_$_.qcow2"), $want{$_}, "snapshot $_ still holds its data") for qw(s1 s2 s3);
ok(!grep({ /^qc_/ } keys %{ lvs() }), 'no temporary LV is left');
qio(dev($vol), 'write -q -P 0x55 20M 2M');
$want{s4} = view($vol);
$P->volume_snapshot($scfg, $sid, $vol, 's4');
qio(dev($vol), 'write -q -P 0x66 40M 1M');
$want{current} = view($vol);
$info = $P->volume_snapshot_info($scfg, $sid, $vol);
is_deeply([sort @{ $info->{s1}{children} }], ['s2', 's4'], 'a snapshot after a rollback starts a branch');
is_deeply([@{ $info->{current} }{qw(order parent)}], [0, 's4'], 'current is on the new branch');
eval { $P->volume_snapshot_rollback($scfg, $sid, $vol, 'nope') };
like("$@", qr/snapshot 'nope' does not exist/, 'rollback to a missing snapshot is refused');

sub all_views {
    my ($label) = @_;
    my $i = $P->volume_snapshot_info($scfg, $sid, $vol);
    for my $s (sort keys %$i) {
        is(view($i->{$s}{volname}), $want{$s}, "$label: $s reads as it did");
        clean($i->{$s}{volname}, $label);
    }
    ok(!grep({ /^qc_/ } keys %{ lvs() }), "$label: no temporary LV is left");
}

# ---- deletes anywhere -------------------------------------------------------
$P->volume_snapshot_delete($scfg, $sid, $vol, 's2');
ok(!lvs()->{'snap_vm-100-disk-0_s2.qcow2'}, 'deleting s2 (middle of a branch): its LV is gone');
delete $want{s2};
all_views('after deleting s2');
cmp_ok(lvs()->{'snap_vm-100-disk-0_s3.qcow2'}{size}, '<=', 20 * $MiB, 'the layer that received data shrank again');

$P->volume_snapshot_delete($scfg, $sid, $vol, 's1');
delete $want{s1};
ok(!lvs()->{'snap_vm-100-disk-0_s1.qcow2'}, 'deleting s1 (a branch point): its LV is gone');
all_views('after deleting s1');
is(backing('snap_vm-100-disk-0_s3.qcow2'), undef, 'both children stand alone now');

# ---- renames ---------------------------------------------------------------
locked(sub { $P->rename_snapshot($scfg, $sid, $vol, 's4', 'four') });
$want{four} = delete $want{s4};
is(backing($vol), 'snap_vm-100-disk-0_four.qcow2', 'rename_snapshot: the child points at the new LV name');
all_views('after renaming s4');
eval { locked(sub { $P->rename_snapshot($scfg, $sid, $vol, 'four', 's3') }) };
is("$@", "target snapshot 's3' already exists\n", 'renaming onto an existing snapshot is refused');

# ---- qemu-server's running-VM flows --------------------------------------------
# resize of a snapshot LV with the VM running: only the LV grows
my $size3 = lvs()->{'snap_vm-100-disk-0_s3.qcow2'}{size};
$P->volume_resize($scfg, $sid, $vol, 64 * $MiB, 1, 's3');
cmp_ok(lvs()->{'snap_vm-100-disk-0_s3.qcow2'}{size}, '>=', full(), 'volume_resize running with a snapshot name: the LV grows');
is(view('snap_vm-100-disk-0_s3.qcow2'), $want{s3}, 'and the image is untouched');
# activation gives snapshot LVs room for QEMU's merges, deactivation takes it back
$P->deactivate_volume($sid, $scfg, $vol);
ok(!-e dev($vol), 'deactivate_volume deactivates the chain');
my $held = lvs()->{'snap_vm-100-disk-0_four.qcow2'}{size};
$P->activate_volume($sid, $scfg, $vol);
ok(-e dev($vol) && -e dev('snap_vm-100-disk-0_four.qcow2'), "activate_volume activates the whole chain (Proxmox's select)");
cmp_ok(lvs()->{'snap_vm-100-disk-0_four.qcow2'}{size}, '>=', full('cluster_size=128k', 'extended_l2=on'),
    'and grows the snapshot LVs for merges while running');
$P->deactivate_volume($sid, $scfg, $vol);
$P->activate_volume($sid, $scfg, $vol);
$P->deactivate_volume($sid, $scfg, $vol);
is(lvs()->{'snap_vm-100-disk-0_four.qcow2'}{size}, $held, 'deactivation shrinks them back to what they hold');
# the first snapshot deleted while running: QEMU commits current into it, then
# qemu-server deletes 'current' (running) and renames the snapshot to current
$P->activate_volume($sid, $scfg, $vol); # at VM start: room for QEMU's merges
qimg('commit', '-q', '-d', dev($vol)); # what block-commit does to the data
$P->volume_snapshot_delete($scfg, $sid, $vol, 'current', 1);
ok(lvs()->{$vol}, "running delete of 'current': the volume stays until the rename replaces it");
{
    # QEMU did not let go of the old volume (a failed detach): it is renamed
    # out of the way, not removed, and goes once it is closed
    open(my $held, '<', dev($vol)) or die "$vol: $!";
    locked(sub { $P->rename_snapshot($scfg, $sid, $vol, 'four', 'current') });
    ok(!lvs()->{'snap_vm-100-disk-0_four.qcow2'} && lvs()->{$vol}, 'rename_snapshot four -> current: the snapshot LV is the volume now');
    ok(lvs()->{'qc_vm-100-disk-0_old.qcow2'}, 'the old volume, still open, was renamed out of the way');
    close $held;
    $P->with_volume($scfg, $sid, $vol, sub { }); # what the next operation does first
    ok(!lvs()->{'qc_vm-100-disk-0_old.qcow2'}, 'closed, it is removed by the next operation');
}
delete $want{four};
all_views('after the running delete of the first snapshot');
# a running delete of a middle snapshot: QEMU streamed it; only its LV goes
$P->volume_snapshot_delete($scfg, $sid, $vol, 's3', 1);
ok(!lvs()->{'snap_vm-100-disk-0_s3.qcow2'}, 'running delete: the merged snapshot LV is removed');
delete $want{s3};

# a running delete of a snapshot a branch still stands on: QEMU streamed it
# into the live chain's child, but its LV must stay
{
    my $v4 = locked(sub { $P->alloc_image($sid, $scfg, 103, 'qcow2', undef, 64 * 1024) });
    my $lv = sub { "snap_vm-103-disk-0_$_[0].qcow2" };
    qio(dev($v4), 'write -q -P 0x91 0 1M');
    $P->volume_snapshot($scfg, $sid, $v4, 'p');
    qio(dev($v4), 'write -q -P 0x92 1M 1M');
    $P->volume_snapshot($scfg, $sid, $v4, 'x');
    qio(dev($v4), 'write -q -P 0x93 2M 1M');
    $P->volume_snapshot($scfg, $sid, $v4, 'old');
    $P->volume_snapshot_rollback($scfg, $sid, $v4, 'x');
    qio(dev($v4), 'write -q -P 0x94 3M 1M');
    $P->volume_snapshot($scfg, $sid, $v4, 'b'); # current <- b <- x <- p, and old <- x
    my $old_view = view($lv->('old'));
    $P->activate_volume($sid, $scfg, $v4); # at VM start: room for QEMU's merges
    qimg('rebase', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', $lv->('p'), dev($lv->('b'))); # what block-stream does
    eval { $P->volume_snapshot_delete($scfg, $sid, $v4, 'x', 1) };
    like($@, qr/^snapshot 'x' is still the backing file of 'snap_vm-103-disk-0_old\.qcow2'; not deleted/,
        'a running delete of a snapshot a branch stands on is refused');
    ok(lvs()->{ $lv->('x') }, 'its LV stays');
    is(view($lv->('old')), $old_view, 'and the branch reads as before');
    $P->deactivate_volume($sid, $scfg, $v4);
    locked(sub { $P->free_image($sid, $scfg, $v4, 0, 'qcow2') });
}

# ---- a layer with holes is compacted ------------------------------------------
{
    my $v2 = locked(sub { $P->alloc_image($sid, $scfg, 101, 'qcow2', undef, 64 * 1024) });
    qio(dev($v2), 'write -q -P 0x77 0 20M', 'discard -q 0 18M'); # 2 MiB left at the end of 20 MiB
    my $v = view($v2);
    $P->volume_snapshot($scfg, $sid, $v2, 'holes');
    my $lv = 'snap_vm-101-disk-0_holes.qcow2';
    is(view($lv), $v, 'a layer whose data lies after freed clusters, compacted: reads as before');
    is(view($v2), $v, 'and the volume too');
    cmp_ok(lvs()->{$lv}{size}, '<=', 4 * $MiB, 'its LV holds its 2 MiB, not the 20 MiB it spanned');
    clean($lv, 'compacted');
    my $w = locked(sub { $P->free_image($sid, $scfg, $v2, 0, 'qcow2') });
    ok(!grep({ /vm-101-/ } keys %{ lvs() }), 'free_image removes every LV of the volume');
}

# ---- absolute backing names ----------------------------------------------------
# QEMU's block-commit names the base by its device path (/dev/VG/LV) in the
# layer above, until qemu-server's rename makes it relative again
{
    my $v3 = locked(sub { $P->alloc_image($sid, $scfg, 102, 'qcow2', undef, 64 * 1024) });
    my ($a1, $a2) = map { "snap_vm-102-disk-0_$_.qcow2" } qw(a1 a2);
    qio(dev($v3), 'write -q -P 0x81 0 2M');
    $P->volume_snapshot($scfg, $sid, $v3, 'a1');
    qio(dev($v3), 'write -q -P 0x82 1M 2M');
    $P->volume_snapshot($scfg, $sid, $v3, 'a2');
    qio(dev($v3), 'write -q -P 0x83 2M 64k');
    my %v = (a1 => view($a1), current => view($v3));
    qimg('rebase', '-q', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', dev($a2), dev($v3));
    qimg('rebase', '-q', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', dev($a1), dev($a2));
    my $info = $P->volume_snapshot_info($scfg, $sid, $v3);
    is_deeply([map { $info->{$_}{parent} // '-' } qw(current a2 a1)], ['a2', 'a1', '-'],
        'a chain whose backing names are device paths of its LVs: volume_snapshot_info sees the same chain');
    locked(sub { $P->rename_snapshot($scfg, $sid, $v3, 'a2', 'b2') });
    is(backing($v3), 'snap_vm-102-disk-0_b2.qcow2', 'rename_snapshot repoints a layer naming the old LV by its path');
    $P->volume_snapshot_delete($scfg, $sid, $v3, 'a1');
    is(view($v3), $v{current}, 'deleting a snapshot named by its path: the volume reads as before');
    ok(!lvs()->{$a1}, 'and its LV is gone');
    clean($_, 'after deletes through device paths') for $v3, 'snap_vm-102-disk-0_b2.qcow2';
    locked(sub { $P->free_image($sid, $scfg, $v3, 0, 'qcow2') });
}

# ---- saferemove, and free_image of the whole tree ------------------------------
{
    my $safe = { %$scfg, saferemove => 1 };
    $P->volume_snapshot($safe, $sid, $vol, 'z1');
    qio(dev($vol), 'write -q -P 0x99 0 1M');
    $P->volume_snapshot($safe, $sid, $vol, 'z2');
    $P->volume_snapshot_delete($safe, $sid, $vol, 'z2');
    ok(!grep({ /^del-/ } keys %{ lvs() }), 'saferemove: the removed LV was zeroed and removed by the cleanup worker');
    my $worker = locked(sub { $P->free_image($sid, $safe, $vol, 0, 'qcow2') });
    ok(grep({ /^del-/ } keys %{ lvs() }), 'free_image with saferemove renames the LVs to del-...');
    $worker->();
    is_deeply([grep { /vm-100/ } keys %{ lvs() }], [], 'and its worker removes them all');
    # saferemove twice in one delete: the snapshot committed into is then
    # compacted (the child's discards freed most of it), each old LV zeroed
    my $v5 = locked(sub { $P->alloc_image($sid, $safe, 104, 'qcow2', undef, 64 * 1024) });
    my ($k1, $k2) = map { "snap_vm-104-disk-0_$_.qcow2" } qw(k1 k2);
    qio(dev($v5), 'write -q -P 0xa1 0 8M');
    $P->volume_snapshot($safe, $sid, $v5, 'k1');
    qio(dev($v5), 'discard -q 0 6M', 'write -q -P 0xa2 7M 64k');
    $P->volume_snapshot($safe, $sid, $v5, 'k2');
    qio(dev($v5), 'write -q -P 0xa3 7M 64k');
    my %v5 = (k2 => view($k2), current => view($v5));
    $P->volume_snapshot_delete($safe, $sid, $v5, 'k1');
    ok(!lvs()->{$k1}, 'saferemove: deleting k1 by commit of its smaller child');
    is(view($k2), $v5{k2}, 'k2 reads as it did') and is(view($v5), $v5{current}, 'and the volume too');
    cmp_ok(lvs()->{$k2}{size}, '<=', 4 * $MiB, "k2's LV holds its 2 MiB, not the 8 MiB k1 spanned");
    clean($k2, 'after a delete by commit and a compaction with saferemove');
    ok(!grep({ /^del-/ } keys %{ lvs() }), 'both replaced LVs were zeroed and removed');
    locked(sub { my $w = $P->free_image($sid, $scfg, $v5, 0, 'qcow2'); $w->() if $w });

    my ($tags) = lvm_run('vgs', '--noheadings', '-o', 'vg_tags', $vg);
    unlike($tags, qr/qcj:/, 'no journal is left in the volume group');
}

done_testing();
