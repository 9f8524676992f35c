#!/usr/bin/perl
# bench/lvm.pl - volume chains on shared thick LVM, ours (storage type
# qcow2lvm) against Proxmox's LVM plugin procedure, measured in one run:
#
#   space: a 32 GiB disk, three snapshots each taken after 1 GiB of
#          writes: the bytes of LV the snapshots (and the whole chain) take.
#          Proxmox: every snapshot LV is the volume's old LV, measured
#          fully allocated; ours: shrunk to what it holds.
#   delete of a middle snapshot holding 1 GiB: Proxmox's procedure
#          (`qemu-img rebase -b PARENT -F qcow2 -f qcow2 CHILD` on the
#          block devices, then lvremove) against volume_snapshot_delete,
#          when its child holds 64 MiB and when it holds 1 GiB too.
#
# Root, lvm2 and qemu-utils needed. The volume group lives on sparse PV
# files in a scratch directory on ext4 (default /work/tmp, --dir DIR), with
# loop devices standing in for device-mapper as in the tests
# (t/lib/QcLVM.pm); everything is removed at the end. Writes about 8 GiB.
#
#   perl -Mblib bench/lvm.pl [--dir DIR] [--rounds N]
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use File::Path qw(make_path);
use File::Temp qw(tempdir);
use Getopt::Long;
use JSON::PP;
use Time::HiRes qw(time);

my ($base, $rounds) = ('/work/tmp', 3);
GetOptions('dir=s' => \$base, 'rounds=i' => \$rounds) or die "usage: $0 [--dir DIR] [--rounds N]\n";
make_path($base);
$ENV{QC_TEST_TMP} = $base;

use QcLVM;
use QcTest;

die "needs root, lvm2 and loop devices: " . lvm_usable() . "\n" if lvm_usable();
my $dir = tempdir('qc-bench-lvm-XXXXXX', DIR => $base, CLEANUP => 1);
my $GiB = 1 << 30;
my ($P, $scfg) = lvm_storage(dir => $dir, pvs => 10, pv_size => 33 * $GiB);
my ($vg, $sid) = ($scfg->{vgname}, 'san');
sub dev { "/dev/$vg/$_[0]" }
sub sh { system(@_) == 0 or die "failed: @_\n" }
sub run { PVE::Tools::run_command([@_], outfunc => sub { }, errfunc => sub { }) }
sub measure_kib {
    my (@o) = @_;
    my $m = decode_json(scalar `qemu-img measure --output=json -O qcow2 --size 32G @o`);
    return int($m->{'fully-allocated'} / 1024);
}
sub lv_bytes {
    my ($re) = @_;
    my $l = lvm_lvs();
    my $sum = 0;
    $sum += $l->{$_}{size} for grep { /$re/ } keys %$l;
    return $sum;
}
sub gib { sprintf('%.2f GiB', $_[0] / $GiB) }

# 1 GiB before each snapshot, in its own region of the disk
my @writes = ('write -q -P 0x11 0 1G', 'write -q -P 0x22 8G 1G', 'write -q -P 0x33 16G 1G');

# ---- Proxmox's procedure (LVMPlugin with snapshot-as-volume-chain) ----
my $pvol = 'vm-200-disk-0.qcow2';
PVE::Storage::LVMPlugin::lvcreate($vg, $pvol, measure_kib(), ['pve-vm-200', "\@pve-$pvol"]);
sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', dev($pvol), '32G');
for my $i (1 .. 3) {
    sh('qemu-io', '-f', 'qcow2', '-c', $writes[$i - 1], dev($pvol));
    my $snap = "snap_vm-200-disk-0_s$i.qcow2";
    PVE::Storage::LVMPlugin::lvrename($scfg, $pvol, $snap);
    PVE::Storage::LVMPlugin::lvcreate($vg, $pvol, measure_kib('-o', 'extended_l2=on,cluster_size=128k'), ['pve-vm-200', "\@pve-$pvol"]);
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', $snap, '-o',
        'extended_l2=on,cluster_size=128k,preallocation=metadata', dev($pvol));
}

# ---- ours ----
my $vol = $P->cluster_lock_storage($sid, 1, undef, sub { $P->alloc_image($sid, $scfg, 100, 'qcow2', undef, 32 * 1024 * 1024) });
for my $i (1 .. 3) {
    sh('qemu-io', '-f', 'qcow2', '-c', $writes[$i - 1], dev($vol));
    $P->volume_snapshot($scfg, $sid, $vol, "s$i");
}

my ($ps, $os) = (lv_bytes(qr/^snap_vm-200-/), lv_bytes(qr/^snap_vm-100-/));
my ($pt, $ot) = (lv_bytes(qr/vm-200-/), lv_bytes(qr/vm-100-/));
printf("space of 3 snapshots (1 GiB each, 32 GiB disk)   ours %s   Proxmox %s   %5.1fx less\n", gib($os), gib($ps), $ps / $os);
printf("space of the whole chain (with the live volume)  ours %s   Proxmox %s   %5.1fx less\n", gib($ot), gib($pt), $pt / $ot);

# ---- deleting a middle snapshot holding 1 GiB ----
# s3 (1 GiB, parent s2) after 64 MiB more were written to the volume: ours
# commits the small child into it; then s2 (1 GiB, parent s1), whose child
# now holds 1 GiB too: the same amount moves either way. Each timed delete
# starts with cold caches and ends with everything on disk; the group is
# put back as it was before each round, median of $rounds.
sh('qemu-io', '-f', 'qcow2', '-c', 'write -q -P 0x44 20G 64M', dev($_)) for $pvol, $vol;
sub cold { sh('sync'); open(my $fh, '>', '/proc/sys/vm/drop_caches') or die "drop_caches: $!\n"; print $fh "3\n"; close $fh }
# a timed delete: [seconds, of them the stand-in's device-mapper work]
sub timed {
    my ($code) = @_;
    cold();
    my ($t0, $s0) = (time, $QcLVM::standin_seconds);
    $code->();
    sh('sync');
    return [time - $t0, $QcLVM::standin_seconds - $s0];
}
sub pve_delete {
    my ($snap, $parent, $child) = @_;
    return timed(sub {
        # Proxmox's steps (LVMPlugin::volume_snapshot_delete, a snapshot with a parent)
        PVE::Storage::LVMPlugin->activate_volume($sid, $scfg, $pvol);
        run('/usr/bin/qemu-img', 'rebase', '-b', "snap_vm-200-disk-0_$parent.qcow2", '-F', 'qcow2', '-f', 'qcow2', dev($child));
        $P->cluster_lock_storage($sid, 1, undef, sub { run('/sbin/lvremove', '-f', "$vg/snap_vm-200-disk-0_$snap.qcow2") });
    });
}
sub our_delete {
    my ($snap) = @_;
    return timed(sub { $P->volume_snapshot_delete($scfg, $sid, $vol, $snap) });
}
# the median round by total time
sub median { my @s = sort { $a->[0] <=> $b->[0] } @_; return $s[$#s / 2] }
my @cases = (['s3', 's2', 'its child holds 64 MiB'], ['s2', 's1', 'its child holds 1 GiB']);
my (%pd, %od);
lvm_save('deletes');
for my $round (1 .. $rounds) {
    lvm_restore('deletes') if $round > 1;
    for my $case (@cases) {
        my ($snap, $parent) = @$case;
        push @{ $pd{$snap} }, pve_delete($snap, $parent, $pvol);
        push @{ $od{$snap} }, our_delete($snap);
        my ($rc, $o, $e) = QcTest::run_cmd('qemu-img', 'compare', '-f', 'qcow2', '-F', 'qcow2', dev($vol), dev($pvol));
        die "after deleting $snap the volumes differ: $o$e" if $rc != 0;
    }
}
# Without the stand-in: its loop devices and listings are device-mapper's
# work, which real lvm2 does inside each command (here lvm2 runs with
# activation disabled), so the truth on real device-mapper lies between.
print "delete of a middle snapshot of 1 GiB (median of $rounds rounds; in brackets: without the stand-in's device-mapper work)\n";
for my $case (@cases) {
    my ($snap, undef, $what) = @$case;
    my ($o, $p) = (median(@{ $od{$snap} }), median(@{ $pd{$snap} }));
    my ($on, $pn) = ($o->[0] - $o->[1], $p->[0] - $p->[1]);
    printf("  %-24s ours %5.2f s (%5.2f)   Proxmox %5.2f s (%5.2f)   %4.1fx (%4.1fx)   rounds: ours %s; Proxmox %s\n",
        "$what:", $o->[0], $on, $p->[0], $pn, $p->[0] / $o->[0], $pn / $on,
        join(' ', map { sprintf('%.2f', $_->[0]) } @{ $od{$snap} }), join(' ', map { sprintf('%.2f', $_->[0]) } @{ $pd{$snap} }));
}
printf("after the deletes: ours %s of snapshot LVs, Proxmox %s\n", gib(lv_bytes(qr/^snap_vm-100-/)), gib(lv_bytes(qr/^snap_vm-200-/)));
