# Every fuzz corpus file and every past crash, replayed through the fuzz
# targets built with AddressSanitizer and UBSan (no clang needed).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use QcTest;
use Test::More;

my $root = "$FindBin::Bin/..";
my ($rc, $o, $e) = run_cmd($^X, "$root/t/c/run-ctest.pl", '--build-only');
is($rc, 0, 'fuzz replay drivers built') or diag("$o$e");
local $ENV{ASAN_OPTIONS} = 'exitcode=99:detect_leaks=1';
local $ENV{UBSAN_OPTIONS} = 'exitcode=99:print_stacktrace=1:halt_on_error=1';
for my $t (qw(header open chain check volume)) {
    my @inputs = (glob("$root/fuzz/corpus/$t/*"), glob("$root/fuzz/crashes/$t/*"));
    ($rc, $o, $e) = run_cmd("$root/t/c/bin/replay-$t", @inputs);
    is($rc, 0, "$t: " . scalar(@inputs) . ' inputs replayed without a memory error, leak or crash') or diag($e);
    like($o, qr/replayed \d+ inputs/, "$t: replay ran");
}
done_testing();
