# A 16 TiB sparse disk is a normal case: every operation on it runs in
# bounded memory (checked with the peak resident size of a child process)
# and gives results qemu-img agrees with.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX ();
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

my $dir = scratch();
chdir $dir or die;
my $V = 'vm-100-disk-0.qcow2';
my $T = 1 << 40;

my $base = peak_mib(sub { PVE::Storage::Qcow2Chain::core_version() });
my %peak;
$peak{create} = peak_mib(sub { PVE::Storage::Qcow2Chain::create($V, size => '16T') });
$peak{write} = peak_mib(sub {
    my $img = PVE::Storage::Qcow2Chain::Image->open($V, rw => 1);
    $img->write($_, "\x5a" x 65536) for 0, 8 * $T, 16 * $T - 65536;
    $img->close;
});
# (metadata preallocation of a 16 TiB overlay would pass ext4's file size limit)
$peak{snapshot} = peak_mib(sub { PVE::Storage::Qcow2Chain::snapshot_create($V, 's1', preallocation => 'off') });
$peak{'write overlay'} = peak_mib(sub {
    my $img = PVE::Storage::Qcow2Chain::Image->open($V, rw => 1);
    $img->write($_, "\x6b" x 4096) for 4096, 12 * $T, 16 * $T - 4096;
    $img->close;
});
$peak{map} = peak_mib(sub { PVE::Storage::Qcow2Chain::map_image($V) });
$peak{'info chain'} = peak_mib(sub { PVE::Storage::Qcow2Chain::info($V, backing_chain => 1) });
$peak{check} = peak_mib(sub { PVE::Storage::Qcow2Chain::check($V) });
$peak{'snapshot list'} = peak_mib(sub { PVE::Storage::Qcow2Chain::snapshot_list($V) });
my $before = qimg_json('map', '--output=json', $V);
$peak{'delete (commit)'} = peak_mib(sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 's1', delete_method => 'commit') });
for my $op (sort keys %peak) {
    ok($peak{$op} - $base < 64, sprintf('%s on a 16 TiB disk: %.1f MiB above the baseline', $op, $peak{$op} - $base));
}
my ($rc, $o, $e) = qimg_ok('check', $V);
is($rc, 0, 'qemu-img check is clean on the 16 TiB disk') or diag("$o$e");
is(qimg_json('info', '--output=json', $V)->{'virtual-size'}, 16 * $T, 'virtual size 16 TiB');
my $img = PVE::Storage::Qcow2Chain::Image->open($V);
is($img->read(16 * $T - 4096, 4096), "\x6b" x 4096, 'data at the very end');
is($img->read(8 * $T, 16), "\x5a" x 16, 'data in the middle');
is($img->read(4 * $T, 16), "\0" x 16, 'zeros elsewhere');
$img->close;
is_deeply(PVE::Storage::Qcow2Chain::map_image($V), qimg_json('map', '--output=json', $V), 'map equals qemu-img map');
ok((stat $V)[12] * 512 < 64 << 20, 'the file stays small on disk');
done_testing();
