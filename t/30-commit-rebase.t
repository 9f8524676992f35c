# commit and rebase against qemu-img: each scenario builds a chain with
# qemu-img/qemu-io in ours/ and copies it to theirs/; we run our operation
# on ours/, qemu-img the same on theirs/; then every layer's guest view
# must compare identical and every image of ours must check clean.
# Scenarios in the spirit of qemu's iotests 020, 024, 097, 274 and 314.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Path qw(make_path remove_tree);
use QcTest;
use Test::More;
use Time::HiRes qw(time);
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;

# Build a chain in $root: [file, create options, size or undef, backing file, [qemu-io cmds], backing fmt]
sub build {
    my ($root, @layers) = @_;
    remove_tree($root);
    make_path($root);
    for my $l (@layers) {
        my ($f, $o, $size, $b, $cmds, $bfmt) = @$l;
        make_path("$root/" . ($f =~ s{[^/]*$}{}r)) if $f =~ m{/};
        if (($o // '') eq 'raw') {
            qimg('create', '-q', '-f', 'raw', "$root/$f", $size);
            qio(["$root/$f", 'raw'], @$cmds) if $cmds && @$cmds;
            next;
        }
        if (($o // '') =~ /^convert-c(?::(.*))?$/) {
            # a compressed layer: data from a raw pattern, compressed, over backing $b
            qimg('create', '-q', '-f', 'raw', "$root/src.raw", $size);
            qio(["$root/src.raw", 'raw'], @$cmds);
            qimg('convert', '-q', '-c', '-O', 'qcow2', ($1 ? ('-o', $1) : ()),
                ($b ? ('-B', $b, '-F', 'qcow2') : ()), "$root/src.raw", "$root/$f");
            unlink "$root/src.raw";
            next;
        }
        qimg('create', '-q', '-f', 'qcow2', ($o ? ('-o', $o) : ()),
            ($b ? ('-b', $b, '-F', $bfmt // 'qcow2') : ()), "$root/$f", (defined $size ? $size : ()));
        qio("$root/$f", @$cmds) if $cmds && @$cmds;
    }
    remove_tree('theirs');
    system('cp', '-a', $root, 'theirs') == 0 or die;
}

sub verify {
    my ($name, @files) = @_;
    for my $f (@files) {
        my $fmt = $f =~ /\.raw$/ ? 'raw' : 'qcow2';
        my ($rc, $o, $e) = qimg_ok('compare', '-f', $fmt, '-F', $fmt, "ours/$f", "theirs/$f");
        is($rc, 0, "$name: $f reads as qemu-img's result") or diag("$o$e");
        next if $fmt eq 'raw';
        ($rc, $o, $e) = qimg_ok('check', "ours/$f");
        is($rc, 0, "$name: $f checks clean") or diag("$o$e");
    }
}

sub both {
    my ($name, $ours, $theirs, @verify) = @_;
    my ($rc, $o, $e) = our_cli(@$ours);
    is($rc, 0, "$name: qcow2-chain @$ours") or diag("$o$e");
    chdir 'theirs' or die;
    qimg(@$theirs);
    chdir '..' or die;
    verify($name, @verify);
}

my @mixed_base = ('write -q -P 0x10 0 4M', 'write -q -P 0x11 5M 3M', 'write -q -z 9M 1M');
my @mixed_top = ('write -q -P 0x20 100k 3k', 'write -q -z 1M 200k', 'write -q -P 0x21 3M 3M',
                 'discard -q 5M 64k', 'write -q -P 0x22 12M 1M', 'write -q -z 15M 1M');

# --- commit ------------------------------------------------------------
build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base], ['top.qcow2', '', undef, 'base.qcow2', \@mixed_top]);
chdir 'ours'; my @c = ('commit', 'top.qcow2'); chdir '..';
both('020: commit into the backing file', ['commit', 'ours/top.qcow2'], ['commit', '-q', 'top.qcow2'],
    'base.qcow2', 'top.qcow2');
{
    my $top = PVE::Storage::Qcow2Chain::map_image('ours/top.qcow2');
    ok(!grep({ $_->{depth} == 0 && $_->{present} } @$top), '020: the top is empty after commit');
}

build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base], ['top.qcow2', '', undef, 'base.qcow2', \@mixed_top]);
both('097: commit -d keeps the top', ['commit', '-d', 'ours/top.qcow2'], ['commit', '-q', '-d', 'top.qcow2'],
    'base.qcow2', 'top.qcow2');

build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base],
    ['mid.qcow2', 'cluster_size=4k', undef, 'base.qcow2', ['write -q -P 0x30 2M 1M', 'write -q -z 6M 100k']],
    ['top.qcow2', '', undef, 'mid.qcow2', \@mixed_top]);
both('097: commit -b into a deeper base', ['commit', '-b', 'base.qcow2', 'ours/top.qcow2'],
    ['commit', '-q', '-b', 'base.qcow2', 'top.qcow2'], 'base.qcow2', 'mid.qcow2', 'top.qcow2');

build('ours', ['base.qcow2', '', '8M', undef, ['write -q -P 0x40 0 8M']],
    ['top.qcow2', '', '20M', 'base.qcow2', ['write -q -P 0x41 7M 2M', 'write -q -P 0x42 15M 1M', 'write -q -z 18M 1M']]);
both('274: commit a larger top (the base grows)', ['commit', 'ours/top.qcow2'], ['commit', '-q', 'top.qcow2'],
    'base.qcow2', 'top.qcow2');
is(PVE::Storage::Qcow2Chain::info('ours/base.qcow2')->{'virtual-size'}, 20 << 20, '274: base grew to 20M');

build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base],
    ['top.qcow2', 'cluster_size=128k,extended_l2=on', undef, 'base.qcow2',
        ['write -q -P 0x50 1k 3k', 'write -q -P 0x51 200k 6k', 'write -q -z 2M 20k', 'write -q -P 0x52 8M 1M',
         'discard -q 10M 128k']]);
both('commit extended-L2 128k into a 64k base (partial subclusters)', ['commit', 'ours/top.qcow2'],
    ['commit', '-q', 'top.qcow2'], 'base.qcow2', 'top.qcow2');

build('ours', ['base.qcow2', 'cluster_size=2M', '32M', undef, ['write -q -P 0x60 0 20M']],
    ['top.qcow2', 'cluster_size=1M', undef, 'base.qcow2', ['write -q -P 0x61 1M 3M', 'write -q -P 0x62 5000k 10k']]);
both('commit 1M clusters into 2M clusters', ['commit', 'ours/top.qcow2'], ['commit', '-q', 'top.qcow2'],
    'base.qcow2', 'top.qcow2');

build('ours', ['base.qcow2', 'cluster_size=4k', '16M', undef, \@mixed_base],
    ['top.qcow2', 'cluster_size=2M', undef, 'base.qcow2', ['write -q -P 0x63 1M 3M', 'write -q -z 6M 2M']]);
both('commit 2M clusters into 4k clusters', ['commit', 'ours/top.qcow2'], ['commit', '-q', 'top.qcow2'],
    'base.qcow2', 'top.qcow2');

build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base],
    ['top.qcow2', 'convert-c', '16M', 'base.qcow2', ['write -q -P 0x70 0 3M', 'write -q -P 0x71 8M 2M']]);
both('commit a compressed layer', ['commit', 'ours/top.qcow2'], ['commit', '-q', 'top.qcow2'],
    'base.qcow2', 'top.qcow2');

build('ours', ['base.raw', 'raw', '16M', undef, ['write -q -P 0x80 1M 2M']],
    ['top.qcow2', '', undef, 'base.raw', \@mixed_top, 'raw']);
both('commit into a raw base', ['commit', 'ours/top.qcow2'], ['commit', '-q', 'top.qcow2'], 'base.raw', 'top.qcow2');

# --- rebase ------------------------------------------------------------
build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base],
    ['mid.qcow2', '', undef, 'base.qcow2', ['write -q -P 0x90 1M 2M', 'write -q -z 5M 1M', 'write -q -P 0x91 10M 3k']],
    ['top.qcow2', '', undef, 'mid.qcow2', ['write -q -P 0x92 1500k 100k', 'write -q -P 0x93 10M 64k']]);
both('024: rebase over a dropped middle layer', ['rebase', '-b', 'base.qcow2', '-F', 'qcow2', 'ours/top.qcow2'],
    ['rebase', '-q', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'], 'top.qcow2');
is(PVE::Storage::Qcow2Chain::info('ours/top.qcow2')->{'backing-filename'}, 'base.qcow2', '024: backing name recorded');

build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base], ['other.qcow2', '', '16M', undef, ['write -q -P 0xa0 0 16M']],
    ['top.qcow2', '', undef, 'base.qcow2', \@mixed_top]);
both('024: rebase onto an unrelated image', ['rebase', '-b', 'other.qcow2', '-F', 'qcow2', 'ours/top.qcow2'],
    ['rebase', '-q', '-b', 'other.qcow2', '-F', 'qcow2', 'top.qcow2'], 'top.qcow2');

build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base], ['top.qcow2', '', undef, 'base.qcow2', \@mixed_top]);
both('rebase -b "" (no backing any more)', ['rebase', '-b', '', 'ours/top.qcow2'],
    ['rebase', '-q', '-b', '', 'top.qcow2'], 'top.qcow2');
ok(!defined PVE::Storage::Qcow2Chain::info('ours/top.qcow2')->{'backing-filename'}, 'rebase -b "": no backing name');

build('ours', ['base.qcow2', 'cluster_size=32k', '8M', undef, ['write -q -P 0xb0 0 8M']],
    ['mid.qcow2', 'cluster_size=32k', undef, 'base.qcow2', ['write -q -P 0xb1 1M 100k']],
    ['top.qcow2', 'cluster_size=64k', '12M', 'mid.qcow2', ['write -q -P 0xb2 33k 1k', 'write -q -P 0xb3 9M 64k']]);
both('024: overlay cluster twice the backing\'s, overlay larger than the old backing',
    ['rebase', '-b', 'base.qcow2', '-F', 'qcow2', 'ours/top.qcow2'],
    ['rebase', '-q', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'], 'top.qcow2');

build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base],
    ['mid.qcow2', '', undef, 'base.qcow2', ['write -q -P 0xc0 3M 1M']],
    ['sub/top.qcow2', '', undef, '../mid.qcow2', ['write -q -P 0xc1 0 64k']]);
both('024: relative backing from a sub-directory', ['rebase', '-b', '../base.qcow2', '-F', 'qcow2', 'ours/sub/top.qcow2'],
    ['rebase', '-q', '-b', '../base.qcow2', '-F', 'qcow2', 'sub/top.qcow2'], 'sub/top.qcow2');

build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base],
    ['mid.qcow2', 'cluster_size=64k,extended_l2=on', undef, 'base.qcow2', ['write -q -P 0xd0 3k 5k', 'write -q -z 100k 9k']],
    ['top.qcow2', 'cluster_size=64k,extended_l2=on', undef, 'mid.qcow2', ['write -q -P 0xd1 0 2k', 'write -q -P 0xd2 102k 1k']]);
both('314: rebase with subclusters', ['rebase', '-b', 'base.qcow2', '-F', 'qcow2', 'ours/top.qcow2'],
    ['rebase', '-q', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'], 'top.qcow2');

build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base], ['c.qcow2', 'convert-c', '16M', 'base.qcow2', ['write -q -P 0xe0 2M 2M']],
    ['top.qcow2', '', undef, 'c.qcow2', ['write -q -P 0xe1 2500k 4k']]);
both('rebase over a dropped compressed layer', ['rebase', '-b', 'base.qcow2', '-F', 'qcow2', 'ours/top.qcow2'],
    ['rebase', '-q', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'], 'top.qcow2');

build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base], ['other.qcow2', '', '16M', undef, []],
    ['top.qcow2', '', undef, 'base.qcow2', \@mixed_top]);
both('rebase -u rewrites the header only', ['rebase', '-u', '-b', 'other.qcow2', '-F', 'qcow2', 'ours/top.qcow2'],
    ['rebase', '-q', '-u', '-b', 'other.qcow2', '-F', 'qcow2', 'top.qcow2'], 'top.qcow2');

# --- arguments are checked before anything is copied -------------------------
build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base],
    ['mid.qcow2', '', undef, 'base.qcow2', ['write -q -P 0x90 1M 2M']],
    ['top.qcow2', '', undef, 'mid.qcow2', ['write -q -P 0x92 1500k 100k']]);
my $before = slurp('ours/top.qcow2');
my ($rc, $o, $e) = our_cli('rebase', '-b', 'base.qcow2', 'ours/top.qcow2');
isnt($rc, 0, 'rebase without -F fails');
like($e, qr/format of the new backing file must be given/, '.. saying so');
($rc, $o, $e) = our_cli('rebase', '-b', 'nothere.qcow2', '-F', 'qcow2', 'ours/top.qcow2');
like($e, qr/nothere\.qcow2.*No such file/, 'rebase onto a missing file fails clearly');
my $long = ('x' x 1100) . '.qcow2';
($rc, $o, $e) = our_cli('rebase', '-u', '-b', $long, '-F', 'qcow2', 'ours/top.qcow2');
like($e, qr/longer than 1023 bytes/, 'a name over 1023 bytes is refused');
is(slurp('ours/top.qcow2'), $before, 'the image is untouched by the refused rebases');
{
    qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', 'small.qcow2', '1M');
    my $b0 = slurp('small.qcow2');
    ($rc, $o, $e) = our_cli('rebase', '-u', '-b', 'y' x 450, '-F', 'qcow2', 'small.qcow2');
    like($e, qr/No space left in the file header/, 'a name that does not fit in cluster 0: qemu-img\'s words');
    my ($qrc, $qo, $qe) = qimg_ok('rebase', '-u', '-b', 'y' x 450, '-F', 'qcow2', 'small.qcow2');
    isnt($qrc, 0, '.. qemu-img refuses it too');
    is(slurp('small.qcow2'), $b0, '.. and the image is unchanged');
}
eval { PVE::Storage::Qcow2Chain::commit('ours/top.qcow2', base => 'nothere.qcow2') };
like("$@", qr/nothere\.qcow2/, 'commit -b with a base not in the chain fails');
is(slurp('ours/top.qcow2'), $before, 'and changes nothing');

# the rate limit holds copies to the given bytes per second
{
    build('ours', ['base.qcow2', '', '16M', undef, []], ['top.qcow2', '', undef, 'base.qcow2', ['write -q -P 0x12 0 4M']]);
    my $t0 = time;
    PVE::Storage::Qcow2Chain::commit('ours/top.qcow2', rate_limit => 4 << 20);
    my $t = time - $t0;
    ok($t >= 0.8, sprintf('commit of 4 MiB at 4 MiB/s takes about a second (%.2f s)', $t));
    my ($rc) = qimg_ok('compare', 'ours/base.qcow2', 'theirs/top.qcow2');
    is($rc, 0, '.. and is complete');
}

# progress is reported and reaches the total
{
    build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base], ['top.qcow2', '', undef, 'base.qcow2', \@mixed_top]);
    my @seen;
    PVE::Storage::Qcow2Chain::commit('ours/top.qcow2', progress => sub { push @seen, [@_]; return });
    ok(@seen > 2, 'commit reports progress');
    is($seen[-1][0], $seen[-1][1], 'progress reaches the total');
    build('ours', ['base.qcow2', '', '16M', undef, \@mixed_base], ['top.qcow2', '', undef, 'base.qcow2', \@mixed_top]);
    eval { PVE::Storage::Qcow2Chain::commit('ours/top.qcow2', progress => sub { 'cancel' }) };
    like("$@", qr/cancelled/, 'a progress callback can cancel');
    my ($rc2) = qimg_ok('compare', 'ours/top.qcow2', 'theirs/top.qcow2');
    is($rc2, 0, 'a cancelled commit leaves the top\'s view unchanged');
}

done_testing();
