#!/usr/bin/perl
# bench/commit-rebase.pl - the two operations that delete a snapshot, ours
# against qemu-img 7.2 in the same run, on tmpfs, on the disk and (as root)
# on a loop-mounted XFS with reflinks:
#   commit: a 1 GiB-allocated 128k/extended-L2 overlay into its 8 GiB base
#   safe rebase: the Proxmox middle-snapshot delete (top rebased over a
#     middle layer holding 1 GiB onto the base)
#
# Each figure is the median of --rounds runs (default 3), every run on
# freshly built and synced twin chains. Before each timed run the page
# cache is dropped (as root) and, unless --cold, that tool's own chain is
# read back in: otherwise whichever tool runs second pays for evicting the
# other's 7 GiB. --cold times both from the disk, as for a snapshot taken
# long ago (tmpfs has no cold state).
#
#   perl -Mblib bench/commit-rebase.pl [--no-xfs] [--cold] [--rounds N]
use strict;
use warnings;

use File::Temp qw(tempdir);
use Getopt::Long;
use Time::HiRes qw(time);
use PVE::Storage::Qcow2Chain;

my ($no_xfs, $cold, $rounds) = (0, 0, 3);
GetOptions('no-xfs' => \$no_xfs, 'cold' => \$cold, 'rounds=i' => \$rounds) && $rounds > 0
    or die "usage: bench/commit-rebase.pl [--no-xfs] [--cold] [--rounds N]\n";
die "--cold drops the page cache: run it as root\n" if $cold && $> != 0;
warn "not root: the page cache is not dropped between runs, the second tool may pay for the first\n" if $> != 0;

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
}

# The cache state a timed run starts from (see the top).
sub settle {
    my ($d) = @_;
    sh('sync');
    return if $> != 0;
    open(my $fh, '>', '/proc/sys/vm/drop_caches') or die "drop_caches: $!\n";
    print $fh "3\n";
    close($fh) or die "drop_caches: $!\n";
    return if $cold;
    for my $f (glob("$d/*.qcow2")) {
        open(my $in, '<', $f) or die "$f: $!\n";
        1 while sysread($in, my $buf, 1 << 20);
    }
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

# Each round builds twin chains, one for qemu-img and one for us, times
# both (in alternating order) and compares the two results with qemu-img.
my %run = (
    commit => {
        ours => sub { PVE::Storage::Qcow2Chain::commit("$_[0]/mid.qcow2") },
        'qemu-img' => sub { qemu('img', 'commit', '-q', "$_[0]/mid.qcow2") },
        result => 'base.qcow2',
    },
    rebase => {
        ours => sub {
            PVE::Storage::Qcow2Chain::rebase("$_[0]/top.qcow2", backing_file => 'base.qcow2', backing_fmt => 'qcow2');
        },
        'qemu-img' => sub { qemu('img', 'rebase', '-q', '-b', 'base.qcow2', '-F', 'qcow2', "$_[0]/top.qcow2") },
        result => 'top.qcow2',
    },
);
for my $f (@fs) {
    my ($name, $d) = @$f;
    my %t;
    for my $round (1 .. $rounds) {
        for my $op ('commit', 'rebase') {
            my %dir = map { ($_ => "$d/$_") } 'ours', 'qemu-img';
            for my $who (keys %dir) {
                mkdir $dir{$who};
                build($dir{$who});
            }
            for my $who ($round % 2 ? ('qemu-img', 'ours') : ('ours', 'qemu-img')) {
                settle($dir{$who});
                push @{$t{$op}{$who}}, timed(sub { $run{$op}{$who}->($dir{$who}) });
            }
            sh('qemu-img', 'compare', '-q', '-f', 'qcow2', '-F', 'qcow2', map { "$dir{$_}/$run{$op}{result}" } 'ours',
                'qemu-img');
            unlink map { glob("$_/*.qcow2") } values %dir; # free tmpfs memory before the next run
        }
    }
    for my $op ('commit', 'rebase') {
        my ($o, $q) = map { median(@{$t{$op}{$_}}) } 'ours', 'qemu-img';
        printf("%-14s %-7s ours %7.3f s   qemu-img %7.3f s   %6.1fx faster  (median of %d%s)\n", $name, $op, $o, $q,
            $q / $o, $rounds, $cold && $name ne 'tmpfs' ? ', cold cache' : '');
    }
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2;
}

END {
    if ($mnt) {
        system('umount', $mnt);
        unlink $loop_img;
        rmdir $mnt;
    }
}
