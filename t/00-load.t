use strict;
use warnings;

use Test::More tests => 4;

use_ok('PVE::Storage::Qcow2Chain');
use_ok('PVE::Storage::Qcow2Chain::Error');
like(PVE::Storage::Qcow2Chain::core_version(), qr/^\d+\.\d+\.\d+$/, 'core version');
is(PVE::Storage::Qcow2Chain::core_version(), $PVE::Storage::Qcow2Chain::VERSION, 'Perl and C versions agree');
