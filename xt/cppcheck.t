# cppcheck over the C core: no warnings, style or portability findings.
use strict;
use warnings;

use Test::More;

my @cmd = ('cppcheck', '--quiet', '--error-exitcode=1', '--enable=warning,portability,performance',
    '--inline-suppr', '-I', 'src', '--std=c11', '-D__GNUC__', 'src');
my $out = `@cmd 2>&1`;
is($?, 0, 'cppcheck finds nothing in src/') or diag($out);
done_testing();
