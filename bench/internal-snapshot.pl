#!/usr/bin/perl
# bench/internal-snapshot.pl - internal snapshots, ours against qemu-img,
# measured in one run on the disk (default /var/tmp; ext4 here):
#
#  1. create and delete of an internal snapshot on a 64 GiB disk with
#     16 GiB written, against `qemu-img snapshot -c` / `-d` (best of 3,
#     alternating), with the refcount walk both must do (clusters, tables);
#  2. splitting out a snapshot that differs from its neighbour by 1 GiB
#     (ours: only the differing clusters, on a backing file showing the
#     neighbour) against the manual qemu-img procedure (`snapshot -c` of a
#     temporary, `-a`, `convert`, `-a`, `-d`), from a cold page cache, with
#     the bytes each reads from the disk.
#
#   perl -Mblib bench/internal-snapshot.pl [--dir DIR] [--written GIB]
# Needs about 2 x (written + 1) GiB free in DIR; removes its files at the end.
use strict;
use warnings;

use File::Temp qw(tempdir);
use Getopt::Long;
use JSON::PP;
use Time::HiRes qw(time);
use PVE::Storage::Qcow2Chain;

my ($dir, $written) = ('/var/tmp', 16);
GetOptions('dir=s' => \$dir, 'written=i' => \$written) or die "bad options\n";
my $GiB = 1 << 30;

sub sh { system(@_) == 0 or die "failed: @_\n" }

# Seconds and bytes read from the disk of one external command.
sub timed_cmd {
    my (@cmd) = @_;
    my $t0 = time;
    my $out = `/usr/bin/time -f '%I' @cmd 2>&1 >/dev/null`;
    die "failed: @cmd\n$out" if $?;
    my ($blocks) = $out =~ /(\d+)\s*\z/;
    return (time - $t0, $blocks * 512);
}

sub read_bytes {
    open(my $fh, '<', '/proc/self/io') or return 0;
    my ($b) = map { /^read_bytes:\s+(\d+)/ ? $1 : () } <$fh>;
    return $b // 0;
}

sub drop_caches {
    sh('sync');
    if (open(my $fh, '>', '/proc/sys/vm/drop_caches')) { print $fh "3\n"; close $fh }
}

my $d = tempdir('qc-bis-XXXXXX', DIR => $dir, CLEANUP => 1);
my $F = "$d/vm-100-disk-0.qcow2";
sh('qemu-img', 'create', '-q', '-f', 'qcow2', $F, '64G');
printf("writing %d GiB into a 64 GiB disk ...\n", $written);
# 1 GiB pieces spread over the disk
for my $i (0 .. $written - 1) {
    my $off = int($i * 60 / $written) * $GiB;
    sh('qemu-io', '-f', 'qcow2', '-c', sprintf('write -q -P %d %d %d', 1 + $i % 250, $off, $GiB), $F);
}
my $c = decode_json(scalar `qemu-img check --output=json $F`);
printf("%d data clusters of 64 KiB (%.1f GiB) in %d L2 tables (of 8192 entries): a create or delete changes the"
    . " refcount of every one, with qemu-img as with ours\n",
    $c->{'allocated-clusters'}, $c->{'allocated-clusters'} / 16384, int(($c->{'allocated-clusters'} + 8191) / 8192));

# ---- 1. create and delete ----
my (%best, $i);
for my $round (1 .. 3) {
    for my $who ($round % 2 ? qw(ours qemu) : qw(qemu ours)) {
        my $name = "b" . ++$i;
        my ($tc, $td);
        if ($who eq 'ours') {
            my $t0 = time;
            PVE::Storage::Qcow2Chain::internal_snapshot_create($F, $name);
            $tc = time - $t0;
            $t0 = time;
            PVE::Storage::Qcow2Chain::internal_snapshot_delete($F, $name);
            $td = time - $t0;
        } else {
            ($tc) = timed_cmd('qemu-img', 'snapshot', '-c', $name, $F);
            ($td) = timed_cmd('qemu-img', 'snapshot', '-d', $name, $F);
        }
        $best{"$who create"} = $tc if !defined $best{"$who create"} || $tc < $best{"$who create"};
        $best{"$who delete"} = $td if !defined $best{"$who delete"} || $td < $best{"$who delete"};
    }
}
# the same through our command line (a process each, as qemu-img)
my ($cli_c) = timed_cmd($^X, '-Mblib', 'bin/qcow2-chain', 'snapshot', '--internal', '-c', 'cli', $F);
my ($cli_d) = timed_cmd($^X, '-Mblib', 'bin/qcow2-chain', 'snapshot', '--internal', '-d', 'cli', $F);
for my $op (qw(create delete)) {
    printf("internal snapshot %-6s  ours %8.1f ms (CLI process %8.1f ms)   qemu-img snapshot %8.1f ms   %5.1fx (CLI %4.1fx)\n",
        $op, $best{"ours $op"} * 1e3, ($op eq 'create' ? $cli_c : $cli_d) * 1e3, $best{"qemu $op"} * 1e3,
        $best{"qemu $op"} / $best{"ours $op"}, $best{"qemu $op"} / ($op eq 'create' ? $cli_c : $cli_d));
}
my ($rc) = system("qemu-img check -q $F") >> 8;
print "qemu-img check after the runs: ", ($rc == 0 ? 'clean' : "exit $rc"), "\n";

# ---- 2. split out a snapshot that differs from its neighbour by 1 GiB ----
PVE::Storage::Qcow2Chain::internal_snapshot_create($F, 'a');
sh('qemu-io', '-f', 'qcow2', '-c', sprintf('write -q -P 77 %d %d', 62 * $GiB, $GiB), $F);
PVE::Storage::Qcow2Chain::internal_snapshot_create($F, 'b');
sh('qemu-io', '-f', 'qcow2', '-c', sprintf('write -q -P 78 %d %d', 63 * $GiB, 64 << 20), $F); # the live disk moves on

drop_caches();
my $rb0 = read_bytes();
my $t0 = time;
my $st = PVE::Storage::Qcow2Chain::snapshot_split($F, 'b', "$d/snap-b.qcow2", base => 'a',
    backing_file => 'snap-a.qcow2', backing_fmt => 'qcow2');
my $ours_t = time - $t0;
my $ours_disk = read_bytes() - $rb0;

drop_caches();
my ($manual_t, $manual_disk) = (0, 0);
for my $step (['snapshot', '-c', 'tmp', $F], ['snapshot', '-a', 'b', $F], ['convert', '-O', 'qcow2', $F, "$d/manual-b.qcow2"],
              ['snapshot', '-a', 'tmp', $F], ['snapshot', '-d', 'tmp', $F]) {
    my ($t, $b) = timed_cmd('qemu-img', @$step);
    $manual_t += $t;
    $manual_disk += $b;
}
printf("split of a snapshot 1 GiB away from its neighbour   ours %7.2f s   qemu-img (snapshot -c, -a, convert, -a, -d) %7.2f s   %5.1fx\n",
    $ours_t, $manual_t, $manual_t / $ours_t);
printf("  bytes read: ours %.2f GiB of data (%.2f GiB from the disk; %d of %d L2 entries compared, %d clusters copied)"
    . "   qemu-img %.2f GiB from the disk\n",
    $st->{'bytes-read'} / $GiB, $ours_disk / $GiB, $st->{'compared-entries'}, $st->{clusters}, $st->{'copied-clusters'},
    $manual_disk / $GiB);
printf("  ours holds %.2f GiB (the difference), qemu-img's copy the whole %.2f GiB view\n", $st->{'copied-clusters'} * 65536 / $GiB,
    (-s "$d/manual-b.qcow2") / $GiB);
