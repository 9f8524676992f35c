# Inspection against the oracle: for every image of a corpus built with the
# real qemu-img/qemu-io, our info, map and raw export equal qemu-img's.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;

my @images;
my $MiB = 1024 * 1024;

# A mixed workload inside an 8 MiB disk: unaligned data, zeros, discards,
# writes across cluster and L2 boundaries.
my @work = (
    'write -P 0x11 0 3k', 'write -P 0x22 70k 200k', 'write -z 1M 128k',
    'write -P 0x33 3M 17', 'write -P 0x44 4095k 2k', 'write -P 0x55 6M 1M',
    'discard 6400k 64k', 'write -z 6600k 3k',
);

sub mk {
    my ($name, $opts, $size, @cmds) = @_;
    qimg('create', '-q', '-f', 'qcow2', ($opts ? ('-o', $opts) : ()), $name, $size // '8M');
    qio($name, @cmds) if @cmds;
    push @images, $name;
    return $name;
}

# Every cluster size, version 3 and version 2.
for my $bits (9 .. 21) {
    my $cs = 1 << $bits;
    mk("v3-c$cs.qcow2", "cluster_size=$cs", undef, @work);
}
for my $cs (512, 4096, 65536, 2 * $MiB) {
    mk("v2-c$cs.qcow2", "compat=0.10,cluster_size=$cs", undef, @work);
}

# Extended L2 with partially allocated subclusters, alone and over a backing.
for my $cs (16384, 65536, 131072, 2 * $MiB) {
    mk("xl2-c$cs.qcow2", "extended_l2=on,cluster_size=$cs", undef,
        @work, 'write -P 0x66 7M 1000', 'write -z 7300k 5k');
}
mk('xl2-base.qcow2', '', undef, 'write -P 0x77 0 8M');
mk('xl2-top.qcow2', 'extended_l2=on,cluster_size=128k,backing_file=xl2-base.qcow2,backing_fmt=qcow2',
    undef, 'write -P 0x88 1k 3k', 'write -z 200k 10k', 'write -P 0x99 5M 4k', 'discard 6M 16k');

# Refcount widths, with internal snapshots where the width allows sharing.
for my $rb (1, 2, 4, 8, 16, 32, 64) {
    my $f = mk("rc$rb.qcow2", "refcount_bits=$rb", undef, @work);
    if ($rb > 1) {
        qimg('snapshot', '-c', 'first', $f);
        qio($f, 'write -P 0xaa 0 64k', 'write -P 0xbb 5M 100k');
    }
}

# Lazy refcounts, and an image left dirty (as after a crash of QEMU).
mk('lazy.qcow2', 'lazy_refcounts=on', undef, @work);
mk('dirty.qcow2', 'lazy_refcounts=on', undef, @work);
{
    open(my $fh, '+<:raw', 'dirty.qcow2') or die;
    seek($fh, 72, 0);
    read($fh, my $b, 8);
    seek($fh, 72, 0);
    print $fh pack('Q>', unpack('Q>', $b) | 1);
    close $fh;
}

# Compressed clusters: zlib and zstd, standard and extended L2.
{
    open(my $fh, '>:raw', 'pattern.raw') or die;
    for my $i (0 .. 127) {
        my $blk = ($i % 3 == 0) ? ("\0" x 65536) : (pack('N', $i) x 16384);
        print $fh $blk;
    }
    close $fh;
    for my $ct ('zlib', 'zstd') {
        for my $x ('', ',extended_l2=on') {
            my $f = "comp-$ct" . ($x ? '-xl2' : '') . '.qcow2';
            qimg('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', "compression_type=$ct$x", 'pattern.raw', $f);
            qio($f, 'write -P 0xcc 1M 5k');
            push @images, $f;
        }
    }
    my $f = 'comp-4k.qcow2';
    qimg('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4096', 'pattern.raw', $f);
    push @images, $f;
}

# Internal snapshots.
{
    my $f = mk('snaps.qcow2', '', undef, 'write -P 1 0 1M');
    qimg('snapshot', '-c', 'one', $f);
    qio($f, 'write -P 2 512k 1M');
    qimg('snapshot', '-c', 'two', $f);
    qio($f, 'write -z 0 256k');
}

# Preallocation.
mk('prealloc-meta.qcow2', 'preallocation=metadata', undef, 'write -P 5 64k 4k', 'write -P 6 3M 70k');
mk('prealloc-full.qcow2', 'preallocation=full', '2M', 'write -P 5 64k 4k');

# A chain of four with zeros in the middle layers.
{
    mk('ch0.qcow2', '', undef, 'write -P 0x10 0 8M');
    mk('ch1.qcow2', 'backing_file=ch0.qcow2,backing_fmt=qcow2', undef, 'write -z 1M 2M', 'write -P 0x21 5M 64k');
    mk('ch2.qcow2', 'backing_file=ch1.qcow2,backing_fmt=qcow2,cluster_size=4096', undef,
        'write -z 6M 512k', 'write -P 0x32 1536k 4k');
    mk('ch3.qcow2', 'backing_file=ch2.qcow2,backing_fmt=qcow2,extended_l2=on,cluster_size=128k', undef,
        'write -P 0x43 2k 2k', 'write -z 6100k 8k');
}

# Raw base, with a hole and an odd size.
{
    open(my $fh, '>:raw', 'base.raw') or die;
    truncate($fh, 3 * $MiB + 1000);
    seek($fh, $MiB, 0);
    print $fh "R" x 70000;
    close $fh;
    push @images, 'base.raw';
    mk('over-raw.qcow2', 'backing_file=base.raw,backing_fmt=raw', '4M', 'write -P 0x51 1M 4k');
}

# Backing names: relative from a sub-directory, absolute, into a sub-directory.
{
    mkdir 'sub';
    mkdir 'sub2';
    qimg('create', '-q', '-f', 'qcow2', 'sub2/b.qcow2', '8M');
    qio('sub2/b.qcow2', 'write -P 0x61 0 1M');
    mk('sub/rel-up.qcow2', 'backing_file=../ch0.qcow2,backing_fmt=qcow2', undef, 'write -P 0x62 64k 64k');
    mk('abs.qcow2', "backing_file=$dir/ch0.qcow2,backing_fmt=qcow2", undef, 'write -P 0x63 0 4k');
    mk('into-sub.qcow2', 'backing_file=sub2/b.qcow2,backing_fmt=qcow2', undef, 'write -P 0x64 2M 4k');
}

# An overlay larger than its backing.
mk('small.qcow2', '', '3M', 'write -P 0x71 0 3M');
mk('large.qcow2', 'backing_file=small.qcow2,backing_fmt=qcow2', '12M', 'write -P 0x72 2M 2M', 'write -P 0x73 10M 4k');

# Persistent dirty bitmaps.
{
    my $f = mk('bitmaps.qcow2', '', undef, 'write -P 1 0 64k');
    qimg('bitmap', '--add', $f, 'b0');
    qimg('bitmap', '--add', '-g', '128k', '--disable', $f, 'b1');
    qimg('bitmap', '--add', $f, 'b2');
}

# Map compares the tools' reading of the files' holes (SEEK_DATA/SEEK_HOLE),
# each at its own moment: the corpus goes to disk first, so no writeback
# runs in between (under heavy load the map of the 2 MiB extended-L2 image
# differed twice; the cause was not pinned down).
system('sync') == 0 or die "sync failed\n";

plan tests => 6 * @images;

my $json = JSON::PP->new->canonical;
for my $img (@images) {
    my $fmt = $img =~ /\.raw$/ ? 'raw' : 'qcow2';
    my @f = ('-f', $fmt);

    my $ours = PVE::Storage::Qcow2Chain::info($img, format => $fmt);
    is_deeply($ours, qimg_json('info', @f, '--output=json', $img), "$img: info equals qemu-img's");

    my ($rc, $out, $err) = our_cli('info', @f, '--backing-chain', '--output=json', $img);
    is_deeply($rc == 0 ? decode_json($out) : $err, qimg_json('info', @f, '--backing-chain', '--output=json', $img),
        "$img: CLI info --backing-chain equals qemu-img's");

    ($rc, $out, $err) = our_cli('info', @f, '--backing-chain', $img);
    is($rc == 0 ? $out : $err, qimg('info', @f, '--backing-chain', $img), "$img: human info equals qemu-img's");

    my $map = qimg_json('map', @f, '--output=json', $img);
    ($rc, $out, $err) = our_cli('map', @f, '--output=json', $img);
    is_deeply($rc == 0 ? decode_json($out) : $err, $map, "$img: CLI map equals qemu-img's");

    is_deeply(PVE::Storage::Qcow2Chain::map_image($img, format => $fmt), $map, "$img: map (Perl) equals qemu-img's");

    qimg('convert', @f, '-O', 'raw', $img, 'theirs.raw');
    ($rc, $out, $err) = our_cli('convert', @f, '-O', 'raw', $img, 'ours.raw');
    ok($rc == 0 && same_file('ours.raw', 'theirs.raw'), "$img: raw export equals qemu-img convert") or diag($err);
}
