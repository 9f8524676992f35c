# The C core's unit tests, built and run under AddressSanitizer + UBSan.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use QcTest;
use Test::More;

my ($rc, $out, $err) = run_cmd($^X, "$FindBin::Bin/c/run-ctest.pl");
my @lines = split /\n/, $out;
for my $l (@lines) {
    if ($l =~ /^(not )?ok \d+ - (.*)$/) {
        ok(!$1, "C: $2");
    }
}
is($rc, 0, 'C unit tests exit cleanly under ASan/UBSan') or diag($err);
ok(scalar(grep { /^ok / } @lines) >= 20, 'C unit tests ran');
done_testing();
