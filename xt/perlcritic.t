# perlcritic at severity 4 (stern) over the modules and the command line.
use strict;
use warnings;

use Test::More;
use Perl::Critic;

my $critic = Perl::Critic->new(-severity => 4, -profile => 'xt/perlcriticrc');
my @files = ('bin/qcow2-chain', glob('lib/PVE/Storage/*.pm'), glob('lib/PVE/Storage/*/*.pm'));
for my $f (@files) {
    my @v = $critic->critique($f);
    is(scalar(@v), 0, "$f: perlcritic clean") or diag(join('', map { "$_" } @v));
}
done_testing();
