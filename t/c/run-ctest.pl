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

# name => [sources besides the core]
my %progs = (
    'qc-probe' => ["$root/t/c/qc-probe.c"],
    'test-core' => ["$root/t/c/test-core.c"],
    'test-seam' => ["$root/t/c/test-seam.c", "$root/fuzz/memfs.c"],
    'test-oom' => ["$root/t/c/test-oom.c", "$root/fuzz/memfs.c"],
    map { ("replay-$_" => ["$root/fuzz/replay.c", "$root/fuzz/fuzz_$_.c", "$root/fuzz/memfs.c"]) }
        qw(header open chain check volume),
);
for my $prog (sort keys %progs) {
    my $out = "$bin/$prog";
    my @main = @{ $progs{$prog} };
    my $newest = 0;
    for (@src, @hdr, @main, glob("$root/fuzz/*.h")) { my $m = mtime($_); $newest = $m if $m > $newest }
    next if -x $out && mtime($out) >= $newest;
    my $cmd = "$cc $flags -I$root/fuzz -o $out.tmp @main @src $pc";
    system($cmd) == 0 or die "build of $prog failed\n";
    rename("$out.tmp", $out) or die "$out: $!\n";
}
close $lock;
exit 0 if grep { $_ eq '--build-only' } @ARGV;
$ENV{ASAN_OPTIONS} = 'detect_leaks=1';
# one TAP stream: each program numbers its own tests, the caller reads the lines
my $rc = 0;
for my $t (qw(test-core test-seam test-oom)) {
    system("$bin/$t") == 0 or $rc = 1;
}
exit $rc;
