# Every public function of every module is documented.
use strict;
use warnings;

use Test::More;
use Test::Pod::Coverage 1.00;

my @modules = grep { !/^PVE::Storage::(?:Plugin|DirPlugin|SectionConfig|JSONSchema|Tools)$|^PVE::(?:Storage|SectionConfig|JSONSchema|Tools)$/ }
    all_modules('lib');
# The plugin needs Proxmox's base modules: the test stand-ins provide them.
unshift @INC, 't/lib';
plan tests => scalar @modules;
for my $m (@modules) {
    # XSUBs starting with _ are private; DESTROY and the Plugin's PVE hooks are documented in groups
    pod_coverage_ok($m, { also_private => [qr/^_/, qr/^DESTROY$/] }, "$m is documented");
}
