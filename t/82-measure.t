# measure against qemu-img measure: for new images of many sizes and for
# copies of images qemu-img/qemu-io built (data, zeros, discards, extended
# L2 subclusters, compression, metadata preallocation, raw with holes,
# bitmaps, a backing chain, one layer alone), with many option
# combinations, our required, fully-allocated and bitmaps equal qemu-img's.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use QcBlock;
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;

my @optsets = (
    '', 'cluster_size=512', 'cluster_size=4k', 'cluster_size=2M', 'cluster_size=128k,extended_l2=on',
    'cluster_size=16k,extended_l2=on', 'refcount_bits=1', 'refcount_bits=64,cluster_size=1k', 'compat=0.10',
    'preallocation=metadata', 'preallocation=falloc', 'preallocation=full,cluster_size=256k',
    'extended_l2=on,cluster_size=2M,refcount_bits=8', 'backing_file=other.qcow2',
);

# results, or the error message without the program's prefix
sub ours {
    my ($file, $ofmt, $opts, %x) = @_;
    my %o = map { split /=/, $_, 2 } grep { length } split /,/, $opts;
    my $r = eval { PVE::Storage::Qcow2Chain::measure($file, %o, output_format => $ofmt, %x) };
    return $r // { error => "$@" =~ s/^[^:]*: //r =~ s/\n\z//r };
}

sub theirs {
    my ($src, $ofmt, $opts) = @_;
    my ($rc, $o, $e) = run_cmd('qemu-img', 'measure', '--output=json', '-O', $ofmt, ($opts ? ('-o', $opts) : ()), @$src);
    return $rc == 0 ? decode_json($o) : { error => $e =~ s/^qemu-img: //r =~ s/\n\z//r };
}

my (%bad, $n);
sub compare {
    my ($label, $got, $want) = @_;
    $n++;
    $bad{$label} = { ours => $got, qemu => $want } if json_canon($got) ne json_canon($want);
}

# ---- new images: sizes by options ----
for my $size (1, 1000, 65536, 1_000_000, 1 << 30, 100 << 30, 3 << 40) {
    for my $opts (@optsets) {
        compare("--size $size -o '$opts'", ours(undef, 'qcow2', $opts, size => $size),
            theirs(['--size', $size], 'qcow2', $opts));
    }
    compare("--size $size -O raw", ours(undef, 'raw', '', size => $size), theirs(['--size', $size], 'raw', ''));
}

# ---- copies of images ----
my @work = ('write -P 0x11 0 3k', 'write -P 0x22 70k 200k', 'write -z 1M 128k', 'write -P 0x33 3M 17',
    'write -P 0x44 4095k 2k', 'write -P 0x55 6M 1M', 'discard 6400k 64k', 'write -z 6600k 3k');
my @images;
sub mk {
    my ($name, $opts, @cmds) = @_;
    qimg('create', '-q', '-f', 'qcow2', ($opts ? ('-o', $opts) : ()), $name, '8M');
    qio($name, @cmds) if @cmds;
    push @images, $name;
}
mk('empty.qcow2', '');
mk('work.qcow2', '', @work);
mk('work-c4k.qcow2', 'cluster_size=4k', @work);
mk('work-v2.qcow2', 'compat=0.10', @work);
mk('xl2.qcow2', 'extended_l2=on,cluster_size=128k', @work, 'write -P 0x66 7M 1000');
mk('prealloc.qcow2', 'preallocation=metadata', 'write -P 0x77 2M 100k');
mk('bitmap.qcow2', '', @work);
qimg('bitmap', '--add', '-g', '64k', 'bitmap.qcow2', 'b1');
qimg('bitmap', '--add', '-g', '4k', 'bitmap.qcow2', 'a-longer-bitmap-name');
{
    qimg('create', '-q', '-f', 'raw', 'src.raw', '8M');
    qio(['src.raw', 'raw'], 'write -P 0x12 0 1M', 'write -P 0x13 5M 64k');
    qimg('convert', '-q', '-c', '-O', 'qcow2', 'src.raw', 'compressed.qcow2');
    push @images, 'compressed.qcow2';
}
# a chain: the copy is of the whole guest view
qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', '-b', 'work.qcow2', '-F', 'qcow2', 'top.qcow2');
qio('top.qcow2', 'write -P 0x88 7M 300k', 'write -z 0 64k', 'write -P 0x99 2M 5k');
push @images, 'top.qcow2';

for my $img (@images) {
    for my $opts (@optsets) {
        compare("$img -o '$opts'", ours($img, 'qcow2', $opts), theirs([$img], 'qcow2', $opts));
    }
    compare("$img -O raw", ours($img, 'raw', ''), theirs([$img], 'raw', ''));
}
# raw input with holes
for my $opts ('', 'cluster_size=4k', 'cluster_size=2M') {
    compare("src.raw -f raw -o '$opts'", ours('src.raw', 'qcow2', $opts, format => 'raw'),
        theirs(['-f', 'raw', 'src.raw'], 'qcow2', $opts));
}
# one layer alone: qemu-img measures it with its backing cut off
for my $img ('top.qcow2', 'work.qcow2', 'xl2.qcow2') {
    my $alone = 'json:' . encode_json({ driver => 'qcow2', backing => undef, file => { driver => 'file', filename => $img } });
    for my $opts ('', 'cluster_size=128k,extended_l2=on', 'cluster_size=4k', 'compat=0.10', 'preallocation=metadata') {
        compare("$img alone -o '$opts'", ours($img, 'qcow2', $opts, layer => 1), theirs([$alone], 'qcow2', $opts));
    }
}

# on a block device: metadata preallocation there holds data (no holes to tell)
SKIP: {
    skip loop_usable(), 1 if loop_usable();
    fill_file('dev.img', 16 << 20, 0);
    my $dev = loop_attach("$dir/dev.img");
    qimg('create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', $dev, '8M');
    qio($dev, 'write -P 0x21 1M 1M');
    for my $opts ('', 'cluster_size=4k', 'extended_l2=on,cluster_size=128k') {
        compare("device -o '$opts'", ours($dev, 'qcow2', $opts), theirs(['-f', 'qcow2', $dev], 'qcow2', $opts));
    }
    loop_detach($dev);
    pass('measured an image on a block device');
}

is_deeply(\%bad, {}, "$n measurements equal qemu-img measure's") or diag(explain(\%bad));

# errors: one line, as qemu-img's
eval { PVE::Storage::Qcow2Chain::measure(undef, size => 1 << 60, cluster_size => 512) };
like("$@", qr/^measure: The image size is too large \(try using a larger cluster size\)\n\z/, 'too large for the cluster size');
eval { PVE::Storage::Qcow2Chain::measure(undef, size => '1G', output_format => 'vmdk') };
like("$@", qr/does not support size measurement\n\z/, 'an output format we cannot measure');
eval { PVE::Storage::Qcow2Chain::measure('missing.qcow2') };
like("$@", qr/^Could not open 'missing.qcow2': No such file or directory\n\z/, 'a missing file');

# the command line prints what qemu-img prints
for my $args (['--size', '1G'], ['-O', 'qcow2', '--size', '5G', '-o', 'cluster_size=128k,extended_l2=on'],
    ['-O', 'qcow2', 'bitmap.qcow2'], ['-O', 'qcow2', '--output=json', 'top.qcow2']) {
    my ($rc, $o, $e) = our_cli('measure', @$args);
    my $want = qimg('measure', @$args);
    if (grep { $_ eq '--output=json' } @$args) {
        is_deeply(decode_json($o), decode_json($want), "qcow2-chain measure @$args: qemu-img's JSON");
    } else {
        is($o, $want, "qcow2-chain measure @$args: qemu-img's output");
    }
}
my ($rc, $o, $e) = our_cli('measure', '-O', 'qcow2');
is($e, "qcow2-chain: measure: Either --size N or one filename must be specified.\n", 'neither a size nor a file');

done_testing();
