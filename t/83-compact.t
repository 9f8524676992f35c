# compact: a layer copied into an image holding exactly what it holds.
# Layers built by qemu-img/qemu-io (data, zeros hiding the backing,
# discards, extended L2 subclusters, compression, metadata preallocation,
# v2, small clusters) are compacted into new files and onto block devices
# holding old data; the copy reads as the layer on the same backing file
# (qemu-img compare), maps the same kinds (qemu-img map), checks clean,
# takes no more than measure --layer says (and than the layer), and a
# file compacted in place keeps its children's view.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use QcBlock;
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;
my $MiB = 1 << 20;

sub view {
    my ($f) = @_;
    unlink "$f.view";
    qimg('convert', '-f', 'qcow2', '-O', 'raw', $f, "$f.view");
    return slurp("$f.view");
}

# the layer's own allocation: kinds per range, host offsets left out
sub kinds {
    my ($f) = @_;
    my $m = qimg_json('map', '--output=json', '-f', 'qcow2', $f);
    my @k;
    for my $e (@$m) {
        my $kind = join(',', $e->{depth} == 0 ? 'here' : 'below', $e->{zero} ? 'zero' : '', $e->{data} ? 'data' : '');
        if (@k && $k[-1][2] eq $kind && $k[-1][0] + $k[-1][1] == $e->{start}) {
            $k[-1][1] += $e->{length};
        } else {
            push @k, [$e->{start}, $e->{length}, $kind];
        }
    }
    return \@k;
}

qimg('create', '-q', '-f', 'qcow2', 'base.qcow2', '16M');
qio('base.qcow2', 'write -q -P 0x11 0 16M');

my @layers = (
    ['plain', '', 'write -q -P 0x22 1M 3M', 'write -q -P 0x23 9000k 5k', 'write -q -z 5M 300k', 'discard -q 6M 1M'],
    ['xl2', 'cluster_size=128k,extended_l2=on', 'write -q -P 0x32 100k 9k', 'write -q -z 4M 20k', 'write -q -P 0x33 8M 2M',
        'write -q -P 0x34 15M 1000'],
    ['xl2-prealloc', 'cluster_size=128k,extended_l2=on,preallocation=metadata', 'write -q -P 0x42 3M 200k',
        'write -q -z 10M 64k'],
    ['small', 'cluster_size=4k', 'write -q -P 0x52 0 10k', 'write -q -P 0x53 12M 1M', 'write -q -z 14M 4k'],
    ['v2', 'compat=0.10', 'write -q -P 0x62 2M 2M', 'write -q -P 0x63 11M 64k'],
    ['big-clusters', 'cluster_size=2M', 'write -q -P 0x72 3M 10k', 'write -q -z 6M 2M'],
);

sub build {
    my ($name, $opts, @cmds) = @_;
    unlink "$name.qcow2";
    qimg('create', '-q', '-f', 'qcow2', '-o', join(',', grep { length } $opts, 'backing_file=base.qcow2,backing_fmt=qcow2'),
        "$name.qcow2");
    qio("$name.qcow2", @cmds);
}

for my $l (@layers) {
    my ($name, $opts, @cmds) = @$l;
    build($name, $opts, @cmds);
    my $want = view("$name.qcow2");
    my $need = PVE::Storage::Qcow2Chain::measure("$name.qcow2", layer => 1, output_format => 'qcow2',
        map({ split /=/ } grep { /cluster_size|extended_l2|compat/ } split /,/, $opts));
    PVE::Storage::Qcow2Chain::compact("$name.qcow2", "$name-c.qcow2");
    is(view("$name-c.qcow2"), $want, "$name: the compacted copy reads as the layer on the same backing file");
    is_deeply(kinds("$name-c.qcow2"), kinds("$name.qcow2"), "$name: it holds data, zeros and holes where the layer does");
    my ($rc, $o, $e) = qimg_ok('check', "$name-c.qcow2");
    is($rc, 0, "$name: the copy checks clean") or diag("$o$e");
    my $info = qimg_json('info', '--output=json', "$name-c.qcow2");
    my $src = qimg_json('info', '--output=json', "$name.qcow2");
    is_deeply([@$info{qw(cluster-size virtual-size backing-filename backing-filename-format)}],
        [@$src{qw(cluster-size virtual-size backing-filename backing-filename-format)}], "$name: same format and backing file");
    my $end = qimg_json('check', '--output=json', "$name-c.qcow2")->{'image-end-offset'};
    cmp_ok($end, '<=', $need->{required}, "$name: it ends within what measure --layer says ($end <= $need->{required})");
    cmp_ok(-s "$name-c.qcow2", '<=', -s "$name.qcow2", "$name: and is no larger than the layer");
}

# in place, under a child: the child's view is kept
build('mid', 'cluster_size=128k,extended_l2=on,preallocation=metadata', 'write -q -P 0x81 1M 2M', 'write -q -z 9M 1M');
qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2');
qio('top.qcow2', 'write -q -P 0x82 2M 100k');
my $top = view('top.qcow2');
my $mid = view('mid.qcow2');
my $size = -s 'mid.qcow2';
PVE::Storage::Qcow2Chain::compact('mid.qcow2', undef);
is(view('mid.qcow2'), $mid, 'compacted in place: the layer reads as before');
is(view('top.qcow2'), $top, 'and its child too');
cmp_ok(-s 'mid.qcow2', '<', $size / 4, 'and it is a fraction of the preallocated layer');
ok(!glob('.mid.qcow2.compact-*'), 'no temporary file is left');

# refusals
qimg('create', '-q', '-f', 'qcow2', 'snap.qcow2', '1M');
qimg('snapshot', '-c', 's1', 'snap.qcow2');
eval { PVE::Storage::Qcow2Chain::compact('snap.qcow2', 'x.qcow2') };
like("$@", qr/^'snap.qcow2' has internal snapshots, which a compacted copy would not keep\n\z/, 'internal snapshots: refused');
eval { PVE::Storage::Qcow2Chain::compact('plain.qcow2', 'base.qcow2') };
like("$@", qr/^'base.qcow2' already exists\n\z/, 'an existing output file is never replaced');

# onto block devices holding old data: an LV of the measured size
SKIP: {
    skip loop_usable(), 1 if loop_usable();
    for my $l (@layers) {
        my ($name, $opts, @cmds) = @$l;
        build($name, $opts, @cmds);
        my $need = PVE::Storage::Qcow2Chain::measure("$name.qcow2", layer => 1, output_format => 'qcow2',
            map({ split /=/ } grep { /cluster_size|extended_l2|compat/ } split /,/, $opts));
        my $bytes = (int(($need->{required} + $MiB - 1) / $MiB)) * $MiB;
        fill_file("$name.dev", $bytes, 0xa5);
        my $dev = loop_attach("$dir/$name.dev");
        unlink "$name-d.qcow2";
        symlink($dev, "$name-d.qcow2") or die;
        PVE::Storage::Qcow2Chain::compact("$name.qcow2", "$name-d.qcow2");
        is(view("$name-d.qcow2"), view("$name.qcow2"), "$name onto a device of the measured size: reads as the layer");
        my ($rc, $o, $e) = qimg_ok('check', '-f', 'qcow2', "$name-d.qcow2");
        is($rc, 0, "$name onto a device: checks clean") or diag("$o$e");
        # and from the device to a file again (a layer on a device is compacted too)
        unlink "$name-dd.qcow2";
        PVE::Storage::Qcow2Chain::compact("$name-d.qcow2", "$name-dd.qcow2");
        is(view("$name-dd.qcow2"), view("$name.qcow2"), "$name from a device: reads as the layer");
        loop_detach($dev);
    }
    eval { PVE::Storage::Qcow2Chain::compact("plain.qcow2", '/dev/null') };
    like("$@", qr/./, 'a character device is not an output');
}

# the command line
my ($rc, $o, $e) = our_cli('compact', 'plain.qcow2', 'cli.qcow2');
is($rc, 0, 'qcow2-chain compact FILE OUTPUT') or diag($e);
is(view('cli.qcow2'), view('plain.qcow2'), 'the CLI copy reads as the layer');

done_testing();
