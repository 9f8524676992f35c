#!/usr/bin/perl
# bench/commit-rebase.pl - the two operations that delete a snapshot, ours
# against qemu-img 7.2 in the same run, on tmpfs, on the disk and (as root)
# on a loop-mounted XFS with reflinks:
#   commit: a 1 GiB-allocated 128k/extended-L2 overlay into its 8 GiB base
#   safe rebase: the Proxmox middle-snapshot delete (top rebased over a
#     middle layer holding 1 GiB onto the base)
#
#   perl -Mblib bench/commit-rebase.pl [--no-xfs]
use strict;
use warnings;

use File::Temp qw(tempdir);
use Time::HiRes qw(time);
use PVE::Storage::Qcow2Chain;

my $no_xfs = grep { $_ eq '--no-xfs' } @ARGV;

sub sh { system(@_) == 0 or die "failed: @_\n" }
sub qemu { my $c = shift; sh($c eq 'io' ? 'qemu-io' : 'qemu-img', @_) }

# base: 8G with 6G of data (an installed VM); mid (the layer merged or
# dropped): 1G of 128k/extended-L2 data in 64 MiB pieces; top: 64M.
sub build {
    my ($d) = @_;
    unlink glob("$d/*.qcow2");
    qemu('img', 'create', '-q', '-f', 'qcow2', "$d/base.qcow2", '8G');
    qemu('io', (map { ('-c', sprintf('write -q -P 0x%02x %dG 1G', 0x10 + $_, $_)) } 0 .. 5), "$d/base.qcow2");
    my @o = ('-o', 'cluster_size=128k,extended_l2=on');
    qemu('img', 'create', '-q', '-f', 'qcow2', @o, '-b', 'base.qcow2', '-F', 'qcow2', "$d/mid.qcow2");
    qemu('io', (map { ('-c', sprintf('write -q -P 0x%02x %dM 64M', 0x20 + $_, $_ * 500)) } 0 .. 15), "$d/mid.qcow2");
    qemu('img', 'create', '-q', '-f', 'qcow2', @o, '-b', 'mid.qcow2', '-F', 'qcow2', "$d/top.qcow2");
    qemu('io', '-c', 'write -q -P 0x33 100M 64M', "$d/top.qcow2");
    sh('sync');
}

sub timed {
    my ($code) = @_;
    my $t0 = time;
    $code->();
    return time - $t0;
}

my @fs = (['tmpfs', tempdir('qc-b-XXXXXX', DIR => '/dev/shm', CLEANUP => 1)],
          ['ext4 disk', tempdir('qc-b-XXXXXX', DIR => '/var/tmp', CLEANUP => 1)]);
our ($loop_img, $mnt);
if (!$no_xfs && $> == 0 && -x '/usr/sbin/mkfs.xfs' || (!$no_xfs && $> == 0 && -x '/sbin/mkfs.xfs')) {
    $loop_img = "/var/tmp/qc-bench-xfs-$$.img";
    $mnt = tempdir('qc-xfs-XXXXXX', TMPDIR => 1, CLEANUP => 0);
    sh('truncate', '-s', '30G', $loop_img);
    sh('mkfs.xfs', '-q', '-f', '-m', 'reflink=1', $loop_img);
    sh('mount', '-o', 'loop', $loop_img, $mnt);
    push @fs, ['XFS (reflink)', $mnt];
}

for my $f (@fs) {
    my ($name, $d) = @$f;
    my %t;
    for my $who ('qemu-img', 'ours') {
        build($d);
        $t{commit}{$who} = timed(sub {
            $who eq 'ours' ? PVE::Storage::Qcow2Chain::commit("$d/mid.qcow2")
                : qemu('img', 'commit', '-q', "$d/mid.qcow2");
        });
        sh('cp', '--sparse=always', "$d/base.qcow2", "$d/result-commit-$who.res");
        build($d);
        $t{rebase}{$who} = timed(sub {
            $who eq 'ours' ? PVE::Storage::Qcow2Chain::rebase("$d/top.qcow2", backing_file => 'base.qcow2', backing_fmt => 'qcow2')
                : qemu('img', 'rebase', '-q', '-b', 'base.qcow2', '-F', 'qcow2', "$d/top.qcow2");
        });
        sh('cp', '--sparse=always', "$d/top.qcow2", "$d/result-rebase-$who.res");
    }
    sh('qemu-img', 'compare', '-q', '-f', 'qcow2', '-F', 'qcow2', "$d/result-commit-ours.res", "$d/result-commit-qemu-img.res");
    # (rebase results have base.qcow2 as backing: compare with it in place)
    unlink glob("$d/*.qcow2"), glob("$d/*.res"); # free tmpfs memory before the next round
    for my $op ('commit', 'rebase') {
        printf("%-14s %-7s ours %7.3f s   qemu-img %7.3f s   %6.1fx faster\n", $name, $op, $t{$op}{ours},
            $t{$op}{'qemu-img'}, $t{$op}{'qemu-img'} / $t{$op}{ours});
    }
}

END {
    if ($mnt) {
        system('umount', $mnt);
        unlink $loop_img;
        rmdir $mnt;
    }
}
