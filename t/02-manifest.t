# MANIFEST lists exactly the files in the repository (so `make dist` ships
# everything and nothing else).
use strict;
use warnings;

use FindBin;
use Test::More;

my $root = "$FindBin::Bin/..";
plan skip_all => 'not a git checkout' if !-e "$root/.git";
my @git = grep { length } split /\n/, `cd '$root' && git ls-files`;
open(my $fh, '<', "$root/MANIFEST") or die;
my @man = grep { length && !/^#/ } map { chomp; s/\s.*//r } <$fh>;
close $fh;
my %m = map { $_ => 1 } @man;
my %g = map { $_ => 1 } @git;
is_deeply([sort grep { !$m{$_} } @git], [], 'every tracked file is in MANIFEST');
is_deeply([sort grep { !$g{$_} } @man], [], 'every MANIFEST entry is tracked');
done_testing();
