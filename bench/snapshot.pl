#!/usr/bin/perl
# bench/snapshot.pl - snapshot operations ours against the same steps done
# Proxmox's way (rename + `qemu-img create`; `qemu-img info --backing-chain`
# + JSON decode; `qemu-img rebase` of the child + unlink for a middle
# snapshot; `qemu-img commit` of the child + rename for the first one),
# measured in one run. Deleting a middle snapshot holding 1 GiB is measured
# on tmpfs, on the disk (ext4) and, as root, on a loop-mounted XFS with
# reflinks; deletes on a volume with Proxmox's defaults (metadata
# preallocation) on the disk, ours both ways and automatic.
#
#   perl -Mblib bench/snapshot.pl [--no-xfs] [--only=proxmox]
use strict;
use warnings;

use File::Temp qw(tempdir);
use JSON::PP;
use Time::HiRes qw(time);
use PVE::Storage::Qcow2Chain;

my $no_xfs = grep { $_ eq '--no-xfs' } @ARGV;
my ($only) = map { /^--only=(\w+)$/ ? $1 : () } @ARGV;
my $F = 'vm-100-disk-0.qcow2';
my @overlay = ('-o', 'cluster_size=128k,extended_l2=on,preallocation=metadata');

sub sh { system(@_) == 0 or die "failed: @_\n" }

sub best {
    my ($n, $code, $setup) = @_;
    my $best;
    for (1 .. $n) {
        $setup->() if $setup;
        my $t0 = time;
        $code->();
        my $t = time - $t0;
        $best = $t if !defined($best) || $t < $best;
    }
    return $best;
}

# ---- Proxmox's defaults: deletes on a preallocated volume (on the disk) ----
# The volume as Proxmox's alloc_image makes it (`qemu-img create -o
# preallocation=metadata`, 64k clusters), overlays as its snapshots make them
# (128k clusters, extended L2, metadata preallocation); 64 MiB written,
# snapshot s1, 512 MiB, s2, 16 MiB, s3. Delete s2 (the middle: Proxmox
# rebases its child onto s1), then s1 (the first, now covered by its child:
# Proxmox commits the child into s1 and renames s1 over it). Each run starts
# from a copy of the same files; median of 5, rounds alternate the order.
sub median { my @v = sort { $a <=> $b } @_; return $v[$#v / 2] }

sub proxmox_defaults {
    my $d = tempdir('qc-bs-XXXXXX', DIR => '/var/tmp', CLEANUP => 1);
    my $chain = sub {
        my ($dir) = @_;
        mkdir $dir;
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', "$dir/$F", '4G');
        my @steps = (['s1', 64], ['s2', 512], ['s3', 16]);
        for my $i (0 .. $#steps) {
            my ($snap, $mib) = @{ $steps[$i] };
            sh('qemu-io', '-c', sprintf('write -q -P 0x%02x 0 %dM', 0x41 + $i, $mib), "$dir/$F");
            PVE::Storage::Qcow2Chain::snapshot_create("$dir/$F", $snap);
        }
    };
    my $copy = sub {
        my ($from, $to) = @_;
        system('rm', '-rf', $to);
        sh('cp', '-a', '--sparse=always', $from, $to);
        sh('sync');
    };
    $chain->("$d/t1");
    $copy->("$d/t1", "$d/t2");
    PVE::Storage::Qcow2Chain::snapshot_delete("$d/t2/$F", 's2');
    sh('qemu-img', 'convert', '-O', 'raw', "$d/t1/$F", "$d/want.raw");
    my %op = (
        s2 => [
            't1', "delete s2 (middle, 512 MiB)",
            sub {
                my ($w) = @_;
                sh('qemu-img', 'rebase', '-q', '-b', "snap-s1-$F", '-F', 'qcow2', '-f', 'qcow2', "$w/snap-s3-$F");
                unlink "$w/snap-s2-$F" or die;
            },
            'qemu-img rebase'],
        s1 => [
            't2', "delete s1 (first, covered by its 528 MiB child)",
            sub {
                my ($w) = @_;
                sh('qemu-img', 'commit', '-q', "$w/snap-s3-$F");
                rename("$w/snap-s1-$F", "$w/snap-s3-$F") or die;
            },
            'qemu-img commit'],
    );
    print "Proxmox's defaults on ext4 (4 GiB volume with preallocation=metadata), median of 5:\n";
    for my $snap ('s2', 's1') {
        my ($from, $what, $pve, $pve_name) = @{ $op{$snap} };
        my (%t, %how);
        my @who = ('auto', 'commit', 'stream', 'proxmox');
        for my $round (1 .. 5) {
            for my $who ($round % 2 ? @who : reverse @who) {
                my $w = "$d/w";
                $copy->("$d/$from", $w);
                my $t0 = time;
                if ($who eq 'proxmox') {
                    $pve->($w);
                } else {
                    my $r = PVE::Storage::Qcow2Chain::snapshot_delete("$w/$F", $snap,
                        $who eq 'auto' ? () : (delete_method => $who));
                    $how{$who} = sprintf('%s, %s', $r->{method}, human($r->{bytes}));
                }
                push @{ $t{$who} }, time - $t0;
                if ($round == 1) { # every way leaves the same guest view
                    sh('qemu-img', 'compare', '-q', '-f', 'raw', '-F', 'qcow2', "$d/want.raw", "$w/$F");
                }
            }
        }
        my %m = map { $_ => median(@{ $t{$_} }) } keys %t;
        my $cheaper = $m{commit} < $m{stream} ? $m{commit} : $m{stream};
        printf("  %-48s ours %6.3f s (%s)   commit %6.3f s   stream %6.3f s   Proxmox (%s) %6.3f s   %6.1fx; %.2f of our cheaper way\n",
            $what, $m{auto}, $how{auto}, $m{commit}, $m{stream}, $pve_name, $m{proxmox}, $m{proxmox} / $m{auto},
            $m{auto} / $cheaper);
    }
    system('rm', '-rf', $d);
}

sub human {
    my ($b) = @_;
    return $b >= 1 << 20 ? sprintf('%.0f MiB', $b / (1 << 20)) : $b >= 1024 ? sprintf('%.0f KiB', $b / 1024) : "$b B";
}

proxmox_defaults();
exit 0 if ($only // '') eq 'proxmox';

# ---- volume_snapshot and volume_snapshot_info (on the disk) ----
{
    my $d = tempdir('qc-bs-XXXXXX', DIR => '/var/tmp', CLEANUP => 1);
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', "$d/$F", '32G');
    sh('qemu-io', '-c', 'write -q -P 1 0 64M', "$d/$F");
    my $i = 0;
    my $info = sub {
        my ($depth) = @_;
        my $oi = best(50, sub { PVE::Storage::Qcow2Chain::snapshot_list("$d/$F") });
        my $pi = best(5, sub {
            my $out = `qemu-img info --output=json --backing-chain '$d/$F'`;
            die "qemu-img failed\n" if $?;
            decode_json($out);
        });
        printf("volume_snapshot_info   ours %8.3f ms   Proxmox (qemu-img info --backing-chain) %8.3f ms   %6.1fx  (%d snapshots)\n",
            $oi * 1e3, $pi * 1e3, $pi / $oi, $depth);
    };
    PVE::Storage::Qcow2Chain::snapshot_create("$d/$F", 'o' . ++$i) for 1 .. 3;
    $info->(3);
    my $ours = best(17, sub { PVE::Storage::Qcow2Chain::snapshot_create("$d/$F", 'o' . ++$i) });
    my $j = 0;
    my $pve = best(20, sub {
        my $s = 'p' . ++$j;
        rename("$d/$F", "$d/snap-$s-$F") or die;
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', @overlay, '-b', "snap-$s-$F", '-F', 'qcow2', "$d/$F");
    });
    printf("volume_snapshot        ours %8.3f ms   Proxmox (rename + qemu-img create) %8.3f ms   %6.1fx\n",
        $ours * 1e3, $pve * 1e3, $pve / $ours);
    # now 40 snapshots deep (the info qemu-server needs at every VM start)
    $info->(40);
}

# ---- deleting a middle snapshot holding 1 GiB ----
our ($loop_img, $mnt);
my @fs = (['tmpfs', tempdir('qc-bs-XXXXXX', DIR => '/dev/shm', CLEANUP => 1)],
          ['ext4 disk', tempdir('qc-bs-XXXXXX', DIR => '/var/tmp', CLEANUP => 1)]);
if (!$no_xfs && $> == 0 && (-x '/usr/sbin/mkfs.xfs' || -x '/sbin/mkfs.xfs')) {
    $loop_img = "/var/tmp/qc-bench-xfs-$$.img";
    $mnt = tempdir('qc-xfs-XXXXXX', TMPDIR => 1);
    sh('truncate', '-s', '20G', $loop_img);
    sh('mkfs.xfs', '-q', '-f', '-m', 'reflink=1', $loop_img);
    sh('mount', '-o', 'loop', $loop_img, $mnt);
    push @fs, ['XFS (reflink)', $mnt];
}
END {
    if ($mnt) { system('umount', $mnt); unlink $loop_img; rmdir $mnt }
}

for my $f (@fs) {
    my ($name, $d) = @$f;
    my $setup = sub {
        unlink glob("$d/*.qcow2");
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', "$d/snap-base-$F", '8G');
        sh('qemu-io', (map { ('-c', sprintf('write -q -P 0x%02x %dG 1G', 0x10 + $_, $_)) } 0 .. 3), "$d/snap-base-$F");
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', @overlay, '-b', "snap-base-$F", '-F', 'qcow2', "$d/snap-mid-$F");
        sh('qemu-io', (map { ('-c', sprintf('write -q -P 0x%02x %dM 64M', 0x20 + $_, $_ * 500)) } 0 .. 15), "$d/snap-mid-$F");
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', @overlay, '-b', "snap-mid-$F", '-F', 'qcow2', "$d/$F");
        sh('qemu-io', '-c', 'write -q -P 0x33 100M 64M', "$d/$F");
        sh('sync');
    };
    my $ours = best(1, sub { PVE::Storage::Qcow2Chain::snapshot_delete("$d/$F", 'mid') }, $setup);
    sh('qemu-img', 'convert', '-O', 'raw', "$d/$F", "$d/ours.raw") if $name =~ /ext4/;
    my $pve = best(1, sub {
        sh('qemu-img', 'rebase', '-q', '-b', "$d/snap-base-$F", '-F', 'qcow2', '-f', 'qcow2', "$d/$F");
        unlink "$d/snap-mid-$F";
    }, $setup);
    if ($name =~ /ext4/) {
        sh('qemu-img', 'convert', '-O', 'raw', "$d/$F", "$d/pve.raw");
        sh('cmp', '-s', "$d/ours.raw", "$d/pve.raw");
        unlink "$d/ours.raw", "$d/pve.raw";
    }
    printf("delete middle snapshot (1 GiB) on %-14s ours %7.3f s   Proxmox (qemu-img rebase) %7.3f s   %6.1fx\n",
        $name, $ours, $pve, $pve / $ours);
    unlink glob("$d/*.qcow2");
}
