#!/usr/bin/perl
# bench/inspect.pl - chain inspection: in-process PVE::Storage::Qcow2Chain::info
# against what Proxmox does today (spawn `qemu-img info --output=json
# --backing-chain` and decode the JSON), measured in the same run.
# Also shows that inspection time grows linearly with the chain length.
#
#   perl -Mblib bench/inspect.pl [DIR]
use strict;
use warnings;

use File::Temp qw(tempdir);
use JSON::PP;
use Time::HiRes qw(time);
use PVE::Storage::Qcow2Chain;

my $dir = $ARGV[0] // tempdir('qc-bench-XXXXXX', TMPDIR => 1, CLEANUP => 1);

sub sh { system(@_) == 0 or die "failed: @_\n" }

sub chain {
    my ($n) = @_;
    my $d = "$dir/chain$n";
    mkdir $d;
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', "$d/l0.qcow2", '100G');
    for my $i (1 .. $n - 1) {
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-u', '-b', 'l' . ($i - 1) . '.qcow2', '-F', 'qcow2',
            '-o', 'cluster_size=128k,extended_l2=on', "$d/l$i.qcow2", '100G');
    }
    return "$d/l" . ($n - 1) . '.qcow2';
}

# Best-of timing of $iter calls of $code, per call in seconds.
sub timeit {
    my ($iter, $code) = @_;
    my $best;
    for (1 .. 3) {
        my $t0 = time;
        $code->() for 1 .. $iter;
        my $t = (time - $t0) / $iter;
        $best = $t if !defined($best) || $t < $best;
    }
    return $best;
}

my $top3 = chain(3);
my $ours = timeit(2000, sub { PVE::Storage::Qcow2Chain::info($top3, backing_chain => 1) });
my $theirs = timeit(20, sub {
    my $out = `qemu-img info --output=json --backing-chain '$top3'`;
    die "qemu-img failed\n" if $?;
    decode_json($out);
});
printf("3-layer chain: ours %.1f us, qemu-img + decode_json %.1f us: %.0fx faster\n",
    $ours * 1e6, $theirs * 1e6, $theirs / $ours);

my %per;
for my $n (10, 50, 100, 200) {
    my $top = chain($n);
    my $t = timeit($n >= 100 ? 50 : 200, sub { PVE::Storage::Qcow2Chain::info($top, backing_chain => 1) });
    $per{$n} = $t / $n;
    printf("%3d-layer chain: %.2f ms, %.1f us per layer\n", $n, $t * 1e3, $per{$n} * 1e6);
}
printf("per-layer cost at 200 vs 10 layers: %.2fx (1.0 = linear)\n", $per{200} / $per{10});
my $t200 = timeit(5, sub {
    my $out = `qemu-img info --output=json --backing-chain '$dir/chain200/l199.qcow2'`;
    decode_json($out);
});
printf("200-layer chain with qemu-img + decode_json: %.2f ms (%.0fx slower than ours)\n",
    $t200 * 1e3, $t200 / ($per{200} * 200));
