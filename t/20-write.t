# The write engine against QEMU: images we create look like qemu-img's;
# seeded random workloads applied to our image and, through qemu-io, to a
# twin read identically (qemu-img compare) and leave our image clean
# (qemu-img check); QEMU can write our images and we can write QEMU's.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

my $dir = scratch();
chdir $dir or die;
my $MiB = 1 << 20;

# Random operations inside [0, $size), biased towards cluster and L2 edges.
sub workload {
    my ($seed, $n, $size, $cs, $l2cover) = @_;
    srand($seed);
    my @ops;
    my @edges = ($cs, $l2cover < $size ? $l2cover : ());
    for (1 .. $n) {
        my $kind = rand() < 0.6 ? 'write' : rand() < 0.6 ? 'zero' : 'discard';
        my $len = int(rand() < 0.5 ? rand(3 * $cs) + 1 : rand(64 * 1024) + 1);
        $len = $cs * (1 + int(rand(3))) if rand() < 0.2;
        my $off;
        if (rand() < 0.4) {
            my $e = $edges[int(rand(@edges))];
            $off = $e * (1 + int(rand(int($size / $e) - 1 || 1))) - int(rand($len));
        } else {
            $off = int(rand($size));
        }
        $off = 0 if $off < 0;
        $off = int($off / $cs) * $cs if rand() < 0.3;
        $len = $size - $off if $off + $len > $size;
        next if $len <= 0;
        push @ops, [$kind, $off, $len, 1 + int(rand(255)), rand() < 0.5 ? 1 : 0];
    }
    return @ops;
}

sub apply_ours {
    my ($file, @ops) = @_;
    my $img = PVE::Storage::Qcow2Chain::Image->open($file, rw => 1);
    for my $op (@ops) {
        my ($k, $off, $len, $pat, $unmap) = @$op;
        if ($k eq 'write') { $img->write($off, chr($pat) x $len) }
        elsif ($k eq 'zero') { $img->write_zeroes($off, $len, $unmap) }
        else { $img->discard($off, $len) }
    }
    $img->close;
}

sub apply_qemu {
    my ($file, @ops) = @_;
    my @c;
    for my $op (@ops) {
        my ($k, $off, $len, $pat, $unmap) = @$op;
        push @c, $k eq 'write' ? sprintf('write -q -P 0x%02x %d %d', $pat, $off, $len)
            : $k eq 'zero' ? sprintf('write -q -z%s %d %d', $unmap ? ' -u' : '', $off, $len)
            : sprintf('discard -q %d %d', $off, $len);
    }
    while (my @batch = splice(@c, 0, 200)) { qio($file, @batch) }
}

sub compare_ok {
    my ($a, $b, $what) = @_;
    my ($rc, $out, $err) = qimg_ok('compare', '-f', 'qcow2', '-F', 'qcow2', $a, $b);
    is($rc, 0, "$what: qemu-img compare says identical") or diag("$out$err");
}

sub check_ok {
    my ($f, $what) = @_;
    my ($rc, $out, $err) = qimg_ok('check', $f);
    is($rc, 0, "$what: qemu-img check is clean") or diag("$out$err");
}

# Creating: the same fields as qemu-img create with the same options.
my @create = (
    [], ['compat=0.10'], ['cluster_size=512'], ['cluster_size=2M'], ['extended_l2=on'],
    ['extended_l2=on,cluster_size=128k'], ['refcount_bits=1'], ['refcount_bits=64'],
    ['lazy_refcounts=on'], ['compression_type=zstd'], ['preallocation=metadata'],
    ['preallocation=metadata,extended_l2=on,cluster_size=128k'],
);
qimg('create', '-q', '-f', 'qcow2', 'cbase.qcow2', '64M');
for my $i (0 .. $#create) {
    my $o = $create[$i][0] // '';
    my %spec = map { split /=/ } split /,/, $o;
    for my $backing (0, 1) {
        next if $backing && $o =~ /preallocation/ && $o !~ /extended_l2/;
        next if $backing && $o =~ /compat=0.10/;
        my @b = $backing ? ('-b', 'cbase.qcow2', '-F', 'qcow2') : ();
        qimg('create', '-q', '-f', 'qcow2', ($o ? ('-o', $o) : ()), @b, "theirs-$i-$backing.qcow2", ($backing ? () : ('100M')));
        PVE::Storage::Qcow2Chain::create("ours-$i-$backing.qcow2", %spec,
            ($backing ? (backing_file => 'cbase.qcow2', backing_fmt => 'qcow2') : (size => '100M')));
        my $t = qimg_json('info', '--output=json', "theirs-$i-$backing.qcow2");
        my $u = qimg_json('info', '--output=json', "ours-$i-$backing.qcow2");
        delete $_->{filename}, delete $_->{'actual-size'} for $t, $u;
        is_deeply($u, $t, "create -o '$o'" . ($backing ? ' with backing' : '') . ": qemu-img info equal");
        check_ok("ours-$i-$backing.qcow2", "create -o '$o'");
        if ($o !~ /preallocation/) {
            ok(same_file("ours-$i-$backing.qcow2", "theirs-$i-$backing.qcow2"), "create -o '$o': byte-identical to qemu-img's");
        }
    }
}
{
    eval { PVE::Storage::Qcow2Chain::create('ours-0-0.qcow2', size => '1M') };
    like("$@", qr/already exists/, 'create never replaces an existing file');
    eval { PVE::Storage::Qcow2Chain::create('nofmt.qcow2', backing_file => 'cbase.qcow2') };
    like("$@", qr/without backing format/, 'create needs the backing format');
    ok(!-e 'nofmt.qcow2', '.. and leaves nothing behind');
    my @left = glob('.*.tmp-*');
    is(scalar(@left), 0, 'no temporary files left');
}

# Random workloads: [name, create options, size, with backing chain]
my @configs = (
    ['v3-64k', '', 64 * $MiB, 0],
    ['v3-64k-backing', '', 64 * $MiB, 1],
    ['v2-64k', 'compat=0.10', 64 * $MiB, 0],
    ['v2-64k-backing', 'compat=0.10', 64 * $MiB, 1],
    ['c512', 'cluster_size=512', 8 * $MiB, 1],
    ['c1k-v2', 'compat=0.10,cluster_size=1k', 8 * $MiB, 0],
    ['c4k', 'cluster_size=4k', 16 * $MiB, 1],
    ['c16k-xl2', 'cluster_size=16k,extended_l2=on', 16 * $MiB, 1],
    ['c128k-xl2', 'cluster_size=128k,extended_l2=on', 64 * $MiB, 1],
    ['c2m', 'cluster_size=2M', 64 * $MiB, 1],
    ['c2m-xl2', 'cluster_size=2M,extended_l2=on', 64 * $MiB, 0],
    ['c2k', 'cluster_size=2k', 8 * $MiB, 1],
    ['c8k-v2', 'compat=0.10,cluster_size=8k', 16 * $MiB, 1],
    ['c32k-xl2', 'cluster_size=32k,extended_l2=on', 16 * $MiB, 1],
    ['c256k', 'cluster_size=256k', 32 * $MiB, 1],
    ['c512k-xl2', 'cluster_size=512k,extended_l2=on', 32 * $MiB, 1],
    ['c1m', 'cluster_size=1M', 64 * $MiB, 0],
    ['rc1', 'refcount_bits=1,cluster_size=4k', 16 * $MiB, 0],
    ['rc2', 'refcount_bits=2,cluster_size=4k', 16 * $MiB, 1],
    ['rc4', 'refcount_bits=4', 64 * $MiB, 0],
    ['rc8', 'refcount_bits=8,cluster_size=1k', 8 * $MiB, 1],
    ['rc32', 'refcount_bits=32', 64 * $MiB, 1],
    ['rc64', 'refcount_bits=64,cluster_size=512', 8 * $MiB, 0],
    ['l2-cross-64k', '', 1200 * $MiB, 1],
    ['zstd', 'compression_type=zstd', 64 * $MiB, 1],
);

# A backing chain with data everywhere, so copy-on-write shows.
qimg('create', '-q', '-f', 'qcow2', 'b0.qcow2', '1200M');
qio('b0.qcow2', 'write -q -P 0x31 0 70M', 'write -q -P 0x32 500M 30M', 'write -q -P 0x33 1100M 10M');
qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'b0.qcow2', '-F', 'qcow2', 'b1.qcow2');
qio('b1.qcow2', 'write -q -P 0x34 1M 3M', 'write -q -z 10M 5M', 'write -q -P 0x35 511M 2M');

my $seed = 1000;
for my $c (@configs) {
    my ($name, $o, $size, $backing) = @$c;
    my %spec = map { split /=/ } split /,/, $o;
    my @b = $backing ? (backing_file => 'b1.qcow2', backing_fmt => 'qcow2') : ();
    PVE::Storage::Qcow2Chain::create("$name.qcow2", %spec, size => $size, @b);
    qimg('create', '-q', '-f', 'qcow2', ($o ? ('-o', $o) : ()), ($backing ? ('-b', 'b1.qcow2', '-F', 'qcow2') : ()),
        "$name-twin.qcow2", $size);
    my $cs = PVE::Storage::Qcow2Chain::parse_size($spec{cluster_size} // '64k');
    my $cover = $cs * $cs / ($spec{extended_l2} ? 16 : 8);
    for my $round (1 .. 3) {
        my @ops = workload($seed++, 40, $size, $cs, $cover);
        apply_ours("$name.qcow2", @ops);
        apply_qemu("$name-twin.qcow2", @ops);
        compare_ok("$name.qcow2", "$name-twin.qcow2", "$name round $round (ours vs qemu-io)");
        check_ok("$name.qcow2", "$name round $round");
    }
    # QEMU writes our image, we write QEMU's.
    my @ops = workload($seed++, 30, $size, $cs, $cover);
    apply_qemu("$name.qcow2", @ops);
    apply_ours("$name-twin.qcow2", @ops);
    compare_ok("$name.qcow2", "$name-twin.qcow2", "$name: qemu-io on ours, ours on qemu's");
    check_ok("$name.qcow2", "$name after qemu-io wrote it");
    check_ok("$name-twin.qcow2", "$name: qemu's image after we wrote it");
}

# Internal snapshots: clusters shared with a snapshot are copied, never overwritten.
{
    my $f = 'snap.qcow2';
    PVE::Storage::Qcow2Chain::create($f, size => '32M', refcount_bits => 16);
    apply_ours($f, workload(77, 40, 32 * $MiB, 65536, 1 << 29));
    qimg('convert', '-O', 'raw', $f, 'before.raw');
    qimg('snapshot', '-c', 's1', $f);
    qimg('create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', "$dir/before.raw", 'snap-twin.qcow2');
    my @ops = workload(78, 60, 32 * $MiB, 65536, 1 << 29);
    apply_ours($f, @ops);
    apply_qemu('snap-twin.qcow2', @ops);
    compare_ok($f, 'snap-twin.qcow2', 'writes over an internal snapshot');
    check_ok($f, 'writes over an internal snapshot');
    qimg('convert', '-l', 'snapshot.name=s1', '-O', 'raw', $f, 's1.raw');
    ok(same_file('s1.raw', 'before.raw'), 'the internal snapshot still reads as when it was taken');
}

# Growth: a second refcount block and a larger refcount table.
{
    my $f = 'grow.qcow2';
    PVE::Storage::Qcow2Chain::create($f, size => '16M', cluster_size => 512, refcount_bits => 64);
    my $rt0 = unpack('N', substr(slurp($f), 56, 4));
    my $img = PVE::Storage::Qcow2Chain::Image->open($f, rw => 1);
    $img->write($_ * 65536, chr(1 + $_ % 250) x 65536) for 0 .. 127;
    $img->close;
    my $hdr = slurp($f);
    my $rt1 = unpack('N', substr($hdr, 56, 4));
    ok($rt1 > $rt0, "refcount table grew ($rt0 -> $rt1 clusters)");
    check_ok($f, 'after refcount table growth');
    qimg('create', '-q', '-f', 'qcow2', 'grow-twin.qcow2', '16M');
    qio('grow-twin.qcow2', map { sprintf('write -q -P 0x%02x %d 65536', 1 + $_ % 250, $_ * 65536) } 0 .. 127);
    compare_ok($f, 'grow-twin.qcow2', 'after refcount table growth');
}

# Dirty images (lazy refcounts, QEMU stopped hard) are repaired before writing.
{
    my $f = 'dirty.qcow2';
    qimg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', $f, '16M');
    qio($f, 'write -q -P 7 0 1M');
    # set the dirty bit and zero the refcounts of the data (as lazy refcounts leave them)
    open(my $fh, '+<:raw', $f) or die;
    seek($fh, 72, 0); print $fh pack('Q>', 1);
    close $fh;
    my $img = PVE::Storage::Qcow2Chain::Image->open($f, rw => 1);
    $img->write(2 * $MiB, 'x' x 4096);
    $img->close;
    check_ok($f, 'dirty image repaired and written');
    is(PVE::Storage::Qcow2Chain::info($f)->{'dirty-flag'} ? 1 : 0, 0, 'dirty flag cleared');
}

# Bitmaps are dropped cleanly before the first write.
{
    my $f = 'bm.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $f, '16M');
    qimg('bitmap', '--add', $f, 'b0');
    qio($f, 'write -q -P 1 0 1M');
    apply_ours($f, ['write', 4096, 100, 9, 0]);
    check_ok($f, 'image had bitmaps, written by us');
    ok(!exists PVE::Storage::Qcow2Chain::info($f)->{'format-specific'}{data}{bitmaps}, 'stale bitmaps removed');
}

# check: counts and exit codes as qemu-img's, and repair.
{
    my $f = 'leaky.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $f, '16M');
    qio($f, 'write -q -P 1 0 1M');
    # leak two clusters: grow the file by two clusters and count them as used
    my $d = slurp($f);
    my $rb = unpack('Q>', substr($d, unpack('Q>', substr($d, 48, 8)), 8));
    my $end = (int((length($d) + 65535) / 65536));
    truncate($f, ($end + 2) * 65536) or die;
    open(my $fh, '+<:raw', $f) or die;
    seek($fh, $rb + 2 * $end, 0); print $fh pack('n', 1) x 2;
    close $fh;
    my ($rc, $out, $err) = our_cli('check', '--output=json', $f);
    my ($qrc, $qout, $qerr) = qimg_ok('check', '--output=json', $f);
    is($rc, 3, 'check exit code 3 for leaks');
    is($rc, $qrc, '.. as qemu-img');
    is($err, $qerr, '.. the findings on stderr, as qemu-img words them');
    is_deeply(JSON::PP::decode_json($out), JSON::PP::decode_json($qout), 'check JSON equals qemu-img check');
    my ($rrc, $rout) = our_cli('check', '--output=json', '--report', $f);
    my $rep = JSON::PP::decode_json($rout);
    is($rep->{status}, 'leaks', 'check --report: status for monitoring');
    like($rep->{repair}, qr/check -r leaks/, 'check --report: says how to repair');
    ok(@{ $rep->{messages} } == 2, 'check --report: the findings');
    ($rc, $out) = our_cli('check', '-r', 'leaks', $f);
    is($rc, 0, 'check -r leaks repairs') or diag($out);
    like($out, qr/2 leaked clusters/, '.. and says what it repaired');
    check_ok($f, 'after check -r leaks');

    # a refcount too low is a corruption (exit 2); -r all rebuilds
    $f = 'corrupt.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $f, '16M');
    qio($f, 'write -q -P 1 0 1M');
    $d = slurp($f);
    $rb = unpack('Q>', substr($d, unpack('Q>', substr($d, 48, 8)), 8));
    open($fh, '+<:raw', $f) or die;
    seek($fh, $rb + 2 * 6, 0); print $fh pack('n', 0);
    close $fh;
    ($rc, $out) = our_cli('check', '--output=json', $f);
    ($qrc, $qout) = qimg_ok('check', '--output=json', $f);
    is($rc, 2, 'check exit code 2 for a corruption');
    is_deeply(JSON::PP::decode_json($out), JSON::PP::decode_json($qout), 'check JSON equals qemu-img check (corrupt)');
    ($rc, $out) = our_cli('check', '-r', 'all', $f);
    is($rc, 0, 'check -r all repairs') or diag($out);
    check_ok($f, 'after check -r all');
}

done_testing();
