use strict;
use warnings;

use Test::More tests => 6;

use_ok('PVE::Storage::Qcow2Chain');
use_ok('PVE::Storage::Qcow2Chain::Error');
like(PVE::Storage::Qcow2Chain::core_version(), qr/^\d+\.\d+\.\d+$/, 'core version');
is(PVE::Storage::Qcow2Chain::core_version(), $PVE::Storage::Qcow2Chain::VERSION, 'Perl and C versions agree');
is(\&PVE::Storage::Qcow2Chain::map, \&PVE::Storage::Qcow2Chain::map_image, 'map: the old name of map_image still works');
is(\&PVE::Storage::Qcow2Chain::read, \&PVE::Storage::Qcow2Chain::read_image, 'read: the old name of read_image still works');
