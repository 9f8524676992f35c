#!/usr/bin/perl
# Build the C unit tests and the probe driver with AddressSanitizer and
# UBSan (t/c/bin/), then run the unit tests. --build-only: just build.
use strict;
use warnings;

use Cwd qw(abs_path);
use Fcntl qw(:flock);
use File::Basename qw(dirname);

my $root = abs_path(dirname(__FILE__) . '/../..');
my $bin = "$root/t/c/bin";
mkdir $bin;
# t/01 and t/05 build here at the same time under `prove -j`: one builds,
# the other waits and then finds the binaries up to date.
open(my $lock, '>', "$bin/.build-lock") or die "$bin/.build-lock: $!\n";
flock($lock, LOCK_EX) or die "$bin/.build-lock: $!\n";

my $cc = $ENV{CC} // 'cc';
my $pc = `pkg-config --cflags --libs json-c libzstd zlib`;
die "pkg-config failed: install libjson-c-dev libzstd-dev zlib1g-dev\n" if $?;
chomp $pc;
my @src = glob("$root/src/*.c");
my @hdr = glob("$root/src/*.h");
my $flags = "-std=c11 -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter -fsanitize=address,undefined "
    . "-fno-sanitize-recover=undefined -fno-omit-frame-pointer -I$root/src";

sub mtime { (stat $_[0])[9] // 0 }

my $jobs = (`nproc 2>/dev/null` =~ /^(\d+)/ ? $1 : 2);

# Run shell commands, $jobs at a time; die naming the first that failed.
sub run_parallel {
    my (@cmds) = @_;
    my (%running, @failed);
    while (@cmds || %running) {
        if (@cmds && keys(%running) < $jobs) {
            my $cmd = shift @cmds;
            my $pid = fork() // die "fork: $!\n";
            exec('/bin/sh', '-c', $cmd) or exit 127 if !$pid;
            $running{$pid} = $cmd;
            next;
        }
        my $pid = wait();
        push @failed, $running{$pid} if $?;
        delete $running{$pid};
    }
    die "build failed: $failed[0]\n" if @failed;
    return;
}

# The core once into objects (every program links the same ones), then
# the programs: name => [sources besides the core].
my $newest_hdr = 0;
for (@hdr, glob("$root/fuzz/*.h")) { my $m = mtime($_); $newest_hdr = $m if $m > $newest_hdr }
mkdir "$bin/obj";
my (@objs, @compile);
for my $c (@src) {
    (my $o = $c) =~ s{.*/(.*)\.c$}{$bin/obj/$1.o};
    push @objs, $o;
    my $m = mtime($o);
    push @compile, "$cc $flags -c -o $o $c" if $m < mtime($c) || $m < $newest_hdr;
}
run_parallel(@compile);
my $core_time = 0;
for (@objs) { my $m = mtime($_); $core_time = $m if $m > $core_time }
my %progs = (
    'qc-probe' => ["$root/t/c/qc-probe.c"],
    'test-core' => ["$root/t/c/test-core.c"],
    'test-seam' => ["$root/t/c/test-seam.c", "$root/fuzz/memfs.c"],
    'test-oom' => ["$root/t/c/test-oom.c", "$root/fuzz/memfs.c"],
    map { ("replay-$_" => ["$root/fuzz/replay.c", "$root/fuzz/fuzz_$_.c", "$root/fuzz/memfs.c"]) }
        qw(header open chain check volume),
);
my @link;
for my $prog (sort keys %progs) {
    my $out = "$bin/$prog";
    my @main = @{ $progs{$prog} };
    my $newest = $newest_hdr > $core_time ? $newest_hdr : $core_time;
    for (@main) { my $m = mtime($_); $newest = $m if $m > $newest }
    next if -x $out && mtime($out) >= $newest;
    push @link, "$cc $flags -I$root/fuzz -o $out.tmp @main @objs $pc && mv $out.tmp $out";
}
run_parallel(@link);
close $lock;
exit 0 if grep { $_ eq '--build-only' } @ARGV;
$ENV{ASAN_OPTIONS} = 'detect_leaks=1';
# one TAP stream: each program numbers its own tests, the caller reads the lines
my $rc = 0;
for my $t (qw(test-core test-seam test-oom)) {
    system("$bin/$t") == 0 or $rc = 1;
}
exit $rc;
