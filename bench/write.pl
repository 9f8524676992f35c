#!/usr/bin/perl
# bench/write.pl - guest writes into a fresh overlay: ours (in-process,
# PVE::Storage::Qcow2Chain::Image) against qemu-io, same machine, same run.
#   1 GiB of sequential 64 KiB writes, 1 GiB of 4 KiB writes at random offsets,
#   on tmpfs (/dev/shm) and on the disk (/var/tmp). Prints time and ratio.
#
#   perl -Mblib bench/write.pl [tmpfs-dir] [disk-dir]
use strict;
use warnings;

use File::Temp qw(tempdir);
use Time::HiRes qw(time);
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

my @dirs = (
    [tmpfs => tempdir('qc-bench-XXXXXX', DIR => $ARGV[0] // '/dev/shm', CLEANUP => 1)],
    [disk => tempdir('qc-bench-XXXXXX', DIR => $ARGV[1] // '/var/tmp', CLEANUP => 1)],
);
my $GiB = 1 << 30;

sub sh { system(@_) == 0 or die "failed: @_\n" }

srand(42);
my @random = map { int(rand($GiB / 4096)) * 4096 } 1 .. $GiB / 4096;
my @workloads = (
    ['1 GiB of 64 KiB sequential writes', 65536, [map { $_ * 65536 } 0 .. $GiB / 65536 - 1]],
    ['1 GiB of 4 KiB random writes', 4096, \@random],
);

for my $d (@dirs) {
    my ($fs, $dir) = @$d;
    # a backing file with data everywhere, so copy-on-write has work to do
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', "$dir/base.qcow2", '1G');
    sh('qemu-io', '-c', 'write -q -P 0x11 0 1G', "$dir/base.qcow2");
    for my $w (@workloads) {
        my ($name, $len, $offs) = @$w;
        my %t;
        for my $who ('ours', 'qemu-io') {
            my $f = "$dir/ov-$who.qcow2";
            unlink $f;
            sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', $f);
            system('sync');
            my $t0 = time;
            if ($who eq 'ours') {
                my $img = PVE::Storage::Qcow2Chain::Image->open($f, rw => 1);
                my $buf = "\x22" x $len;
                $img->write($_, $buf) for @$offs;
                $img->close;
            } else {
                open(my $q, '|-', "qemu-io '$f' >/dev/null") or die;
                printf $q "write -q -P 0x22 %d %d\n", $_, $len for @$offs;
                print $q "flush\nquit\n";
                close $q or die "qemu-io failed\n";
            }
            $t{$who} = time - $t0;
            system('qemu-img', 'check', '-q', $f) == 0 or die "$who: image not clean\n";
        }
        system('qemu-img', 'compare', '-q', "$dir/ov-ours.qcow2", "$dir/ov-qemu-io.qcow2") == 0
            or die "results differ\n";
        printf("%-6s %-36s ours %7.2f s  qemu-io %7.2f s  ratio %.2fx\n", $fs, $name, $t{ours}, $t{'qemu-io'},
            $t{'qemu-io'} / $t{ours});
    }
}
