# qcow2 on block devices (loop devices over scratch files that hold old
# data, as a reused LV does): what qemu-img writes on a device we read,
# map and check as qemu-img does; what we write there (create, guest
# writes, discard, commit, rebase) qemu-img reads and checks clean. The
# size comes from the device, allocation never goes past it (a one-line
# refusal naming the device and the bytes missing, before anything is
# written), freed clusters are discarded (BLKDISCARD), nothing is
# truncated, and a new image is written header last.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::MD5;
use POSIX qw(EIO);
use QcBlock;
use QcHooks qw(with_fault);
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

if (my $why = loop_usable()) {
    plan skip_all => $why;
}

my $dir = scratch();
chdir $dir or die;
my $MiB = 1 << 20;

# A device of $mib MiB holding old data (byte 0xa5), and a name for it here.
my %backing_file;
sub device {
    my ($name, $mib) = @_;
    fill_file("$name.dev", $mib * $MiB, 0xa5);
    my $dev = loop_attach("$dir/$name.dev");
    unlink $name;
    symlink($dev, $name) or die "symlink $name: $!";
    $backing_file{$name} = "$name.dev";
    return $name;
}

# Guest views are compared by digest (QcTest::view_md5: not read into
# memory; remembered only for chains of plain files, not of devices).
sub raw_md5 { open(my $fh, '<:raw', $_[0]) or die "$_[0]: $!"; return Digest::MD5->new->addfile($fh)->hexdigest }

sub check_clean {
    my ($f, $name) = @_;
    my ($rc, $o, $e) = qimg_ok('check', '-f', 'qcow2', $f);
    is($rc, 0, "$name: qemu-img check is clean") or diag("$o$e");
}

# ---- what qemu-img writes on a device, we read -------------------------
{
    my $d = device('q', 64);
    qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=64k', $d, '48M');
    qio($d, 'write -q -P 0x11 0 3M', 'write -q -z 5M 1M', 'write -q -P 0x22 7M 70k', 'discard -q 1M 128k');
    my $theirs = qimg_json('info', '--output=json', '-f', 'qcow2', $d);
    my $ours = PVE::Storage::Qcow2Chain::info($d);
    is(json_canon($ours), json_canon($theirs), 'info of an image on a device equals qemu-img info');
    is(json_canon(PVE::Storage::Qcow2Chain::map_image($d)), json_canon(qimg_json('map', '--output=json', '-f', 'qcow2', $d)),
        'map of an image on a device equals qemu-img map');
    my $c = PVE::Storage::Qcow2Chain::check($d);
    my $qc = qimg_json('check', '--output=json', '-f', 'qcow2', $d);
    is_deeply([@$c{qw(image-end-offset allocated-clusters total-clusters)}],
        [@$qc{qw(image-end-offset allocated-clusters total-clusters)}], 'check of an image on a device counts as qemu-img check');
    is($c->{status}, 'clean', 'and finds it clean');
    is(PVE::Storage::Qcow2Chain::read_image($d, 7 * $MiB, 70 * 1024), "\x22" x (70 * 1024), 'guest reads on a device');
    PVE::Storage::Qcow2Chain::convert_raw($d, 'q.raw');
    is(raw_md5('q.raw'), view_md5($d), 'the raw export of an image on a device equals qemu-img convert');
}

# ---- what we create on a device, qemu-img reads ------------------------
{
    my $d = device('c', 40);
    my $t = device('ct', 40);
    for my $opts ('', 'cluster_size=4k', 'cluster_size=2M', 'compat=0.10', 'refcount_bits=1',
        'extended_l2=on,cluster_size=128k', 'preallocation=metadata', 'preallocation=metadata,cluster_size=512k',
        'extended_l2=on,cluster_size=128k,preallocation=metadata') {
        my %o = map { split /=/ } split /,/, $opts;
        PVE::Storage::Qcow2Chain::create($d, size => '32M', %o);
        qimg('create', '-q', '-f', 'qcow2', ($opts ? ('-o', $opts) : ()), 'file.qcow2', '32M');
        qimg('create', '-q', '-f', 'qcow2', ($opts ? ('-o', $opts) : ()), $t, '32M');
        my $label = "create -o '$opts' on a device";
        check_clean($d, $label);
        is(json_canon(qimg_json('map', '--output=json', '-f', 'qcow2', $d)),
            json_canon(qimg_json('map', '--output=json', '-f', 'qcow2', $t)),
            "$label: maps as qemu-img's own create on a device");
        is(view_md5($d), view_md5($t), "$label: reads as qemu-img's own create on a device");
        if ($opts !~ /preallocation/) {
            my $n = -s 'file.qcow2';
            is(QcTest::peek($d, 0, $n), slurp('file.qcow2'), "$label: byte for byte qemu-img's layout");
        }
        unlink 'file.qcow2';
    }

    # too small: refused before a byte is written
    my $before = QcTest::peek($d, 0, 65536);
    eval { PVE::Storage::Qcow2Chain::create($d, size => '1G', preallocation => 'metadata') };
    like("$@", qr/^'c': the device is too small for this image: \d+ more bytes needed \(its capacity is 41943040 bytes\)\n\z/,
        'create on a device too small for the image: one line naming the device and the bytes missing');
    is(QcTest::peek($d, 0, 65536), $before, 'and the device is untouched');

    # a backed overlay on a device, backing name relative to its directory
    PVE::Storage::Qcow2Chain::create($t, size => '32M');
    guest_write($t, 0, "\x33" x (2 * $MiB));
    PVE::Storage::Qcow2Chain::create($d, backing_file => 'ct', backing_fmt => 'qcow2', cluster_size => '128k',
        extended_l2 => 1, preallocation => 'metadata');
    check_clean($d, 'overlay created on a device');
    is(view_md5($d), view_md5($t), 'the overlay on a device reads its backing device');
}

# ---- crash safety of create on a device --------------------------------
{
    my $d = device('cc', 16);
    PVE::Storage::Qcow2Chain::create($d, size => '8M');
    guest_write($d, 0, "\x44" x (4 * $MiB)); # an older image the new one replaces
    my $old = slurp($backing_file{cc});
    my $old_view = view_md5($d);
    my $mk = sub { PVE::Storage::Qcow2Chain::create($d, size => '12M', cluster_size => '4k', @_) };
    my $n = with_fault(['none'], $mk)->{count};
    ok($n >= 4, "create on a device: $n mutating calls");
    my %bad;
    for my $mode (['crash', 0], ['crash', 7]) {
        for my $k (1 .. $n) {
            open(my $fh, '+<:raw', $d) or die;
            print $fh $old;
            close $fh;
            eval { with_fault([$mode->[0], $k, EIO, $mode->[1]], $mk) };
            my $info = eval { qimg_json('info', '--output=json', $d) } // {};
            my $label = "$mode->[0] $mode->[1] at $k";
            next if ($info->{format} // '') ne 'qcow2';
            # only the finished header makes the new image; before the old header is wiped, the old one stays
            my ($rc, $o) = qimg_ok('check', '-f', 'qcow2', $d);
            $bad{$label} = "check $rc: $o" if $rc != 0;
            if ($info->{'virtual-size'} == 8 * $MiB) {
                $bad{$label} = 'the old image changed' if view_md5($d) ne $old_view;
            } elsif ($info->{'virtual-size'} != 12 * $MiB) {
                $bad{$label} = 'a qcow2 header that is neither the old image nor the new one';
            }
        }
    }
    is_deeply(\%bad, {}, 'create on a device interrupted at any call: the old image intact, no image, or the whole new one')
        or diag(explain(\%bad));
}

# ---- guest writes, discard, and the capacity of the device -------------
{
    my $d = device('w', 8);
    PVE::Storage::Qcow2Chain::create($d, size => '64M');
    my $img = PVE::Storage::Qcow2Chain::Image->open($d, rw => 1);
    $img->write(0, "\x55" x (3 * $MiB));
    $img->write(10 * $MiB + 123, "\x66" x 5000);
    $img->write_zeroes($MiB, 65536);
    $img->close;
    check_clean($d, 'guest writes on a device');
    qio($d, 'read -q -P 0x55 0 1M', 'read -q -P 0 1M 64k', 'read -q -P 0x55 1088k 1984k', 'read -q -P 0x66 10485883 5000');
    pass('qemu-io reads our guest writes on a device');
    qio($d, 'write -q -P 0x77 4M 1M');
    is(PVE::Storage::Qcow2Chain::read_image($d, 4 * $MiB, $MiB), "\x77" x $MiB, 'we read qemu-io writes on a device');

    # discard gives the clusters back with BLKDISCARD: the loop device punches the file
    my $blocks = (stat $backing_file{w})[12];
    $img = PVE::Storage::Qcow2Chain::Image->open($d, rw => 1);
    $img->discard(0, 3 * $MiB);
    $img->close;
    cmp_ok((stat $backing_file{w})[12] * 512, '<=', $blocks * 512 - 2 * $MiB, 'discarded clusters are discarded on the device');
    is(-s "w.dev", 8 * $MiB, 'and the device is as large as before (no truncation)');
    check_clean($d, 'after discard on a device');
    is(PVE::Storage::Qcow2Chain::read_image($d, 0, 65536), "\0" x 65536, 'discarded range reads as zeros');

    # filling it: the write that does not fit is refused before it is written
    $img = PVE::Storage::Qcow2Chain::Image->open($d, rw => 1);
    my ($ok, $at) = (1, 16 * $MiB);
    while ($ok) {
        $ok = eval { $img->write($at, "\x88" x $MiB); 1 };
        $at += $MiB if $ok;
    }
    my $err = "$@";
    like($err, qr/^'w': no space left on the device: \d+ more bytes needed \(its capacity is 8388608 bytes\)\n\z/,
        'a write past the capacity of the device: one line naming the device and the bytes missing');
    like(ref($@) && $@->code, qr/^nospc$/, 'with the code nospc');
    $img->close;
    check_clean($d, 'a device filled up');
    is(PVE::Storage::Qcow2Chain::read_image($d, $at - $MiB, $MiB), "\x88" x $MiB, 'the last write that fitted is there');
    is(PVE::Storage::Qcow2Chain::read_image($d, 4 * $MiB, $MiB), "\x77" x $MiB, 'and older data too');
}

# ---- commit and rebase with every layer on a device --------------------
sub build_chain {
    # on devices b, m, t and, for qemu-img, on files B, M, T
    for my $set (['b', 'm', 't'], ['B', 'M', 'T']) {
        my ($b, $m, $t) = @$set;
        qimg('create', '-q', '-f', 'qcow2', $b, '24M');
        qio($b, 'write -q -P 0x11 0 12M', 'write -q -z 12M 2M');
        qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', '-b', $b, '-F', 'qcow2', $m);
        qio($m, 'write -q -P 0x22 1M 3M', 'write -q -P 0x23 9000k 5k', 'write -q -z 5M 300k', 'discard -q 8M 1M');
        qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', '-b', $m, '-F', 'qcow2', $t);
        qio($t, 'write -q -P 0x33 1500k 10k', 'write -q -P 0x34 20M 256k');
    }
}
{
    device($_, 28) for qw(b m t);
    my @cases = (
        ['commit top into mid', sub { PVE::Storage::Qcow2Chain::commit('t') }, sub { qimg('commit', '-q', 'T') }],
        ['commit -b base', sub { PVE::Storage::Qcow2Chain::commit('t', base => 'b') }, sub { qimg('commit', '-q', '-b', 'B', 'T') }],
        ['safe rebase over the middle layer', sub { PVE::Storage::Qcow2Chain::rebase('t', backing_file => 'b', backing_fmt => 'qcow2') },
            sub { qimg('rebase', '-q', '-b', 'B', '-F', 'qcow2', 'T') }],
        ['rebase -b "" (flatten)', sub { PVE::Storage::Qcow2Chain::rebase('t', backing_file => '') },
            sub { qimg('rebase', '-q', '-b', '', 'T') }],
    );
    for my $c (@cases) {
        my ($name, $ours, $theirs) = @$c;
        unlink qw(B M T);
        build_chain();
        my $before = view_md5('t');
        $ours->();
        $theirs->();
        is(view_md5('t'), $before, "$name on devices: the top's guest view is unchanged");
        for my $pair (['b', 'B'], ['m', 'M'], ['t', 'T']) {
            is(view_md5($pair->[0]), view_md5($pair->[1]), "$name on devices: $pair->[0] reads as qemu-img's result");
            check_clean($pair->[0], "$name on devices: $pair->[0]");
        }
        is(-s $backing_file{$_}, 28 * $MiB, "$name: device $_ keeps its size") for qw(b m t);
    }

    # commit into a base whose device is too small: refused, nothing lost
    my $s = device('s', 8);
    qimg('create', '-q', '-f', 'qcow2', $s, '24M');
    qio($s, 'write -q -P 0x11 0 6M');
    qimg('create', '-q', '-f', 'qcow2', '-b', $s, '-F', 'qcow2', 'big.qcow2');
    qio('big.qcow2', 'write -q -P 0x99 4M 12M');
    my $view = view_md5('big.qcow2');
    eval { PVE::Storage::Qcow2Chain::commit('big.qcow2') };
    like("$@", qr/^'[^']*s': no space left on the device: \d+ more bytes needed/,
        'commit into a full device: refused with the bytes missing');
    is(view_md5('big.qcow2'), $view, 'and the top still reads as before');
    check_clean($s, 'the base of a refused commit');
}

# ---- crash safety of commit into a device ------------------------------
{
    device($_, 6) for qw(cb cm ct2);
    qimg('create', '-q', '-f', 'qcow2', 'cb', '4M');
    qio('cb', 'write -q -P 0x11 0 3M');
    qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', '-b', 'cb', '-F', 'qcow2', 'cm');
    qio('cm', 'write -q -P 0x22 512k 1M', 'write -q -P 0x23 2500k 5k', 'write -q -z 3M 300k');
    qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', '-b', 'cm', '-F', 'qcow2', 'ct2');
    qio('ct2', 'write -q -P 0x33 700k 10k');
    my %orig = map { ($_ => slurp($backing_file{$_})) } qw(cb cm ct2);
    my $restore = sub {
        for my $n (qw(cb cm ct2)) {
            open(my $fh, '+<:raw', $n) or die;
            print $fh $orig{$n};
            close $fh;
        }
    };
    my $view = view_md5('ct2');
    my $run = sub { PVE::Storage::Qcow2Chain::commit('cm', @_) };
    my $n = with_fault(['none'], $run)->{count};
    my @points = $n <= 24 ? (1 .. $n) : (1 .. 8, map({ 8 + int($_ * ($n - 16) / 9) } 1 .. 8), $n - 7 .. $n);
    my (%fails, $runs);
    for my $mode (['crash', 0], ['crash', 5]) {
        for my $k (@points) {
            $restore->();
            eval { with_fault([$mode->[0], $k, EIO, $mode->[1]], $run) };
            $runs++;
            my $label = "$mode->[0] $mode->[1] at call $k";
            for my $f (qw(cb cm ct2)) {
                my ($rc, $o) = qimg_ok('check', '-f', 'qcow2', $f);
                push @{ $fails{$label} }, "$f: check $rc: $o" if $rc != 0 && $rc != 3;
            }
            push @{ $fails{$label} }, 'guest view changed' if view_md5('ct2') ne $view;
            eval { $run->() };
            push @{ $fails{$label} }, "redo failed: $@" if $@;
            push @{ $fails{$label} }, 'guest view changed after redo' if view_md5('ct2') ne $view;
        }
    }
    is_deeply(\%fails, {}, "commit into a device: $runs faults and power cuts over $n calls keep the view and every image sound")
        or diag(explain(\%fails));
}

# ---- internal snapshots on a device ------------------------------------
# The snapshot table, L1 copies and copy on write on a device: qemu-img
# lists and reads every snapshot as it was taken, checks clean after each
# step; the device keeps its size; copy on write that does not fit is
# refused before anything is written.
# the raw export of $f (of its snapshot $snap if given): a file name
sub export_raw {
    my ($f, $snap) = @_;
    unlink "$f.view";
    qimg('convert', '-f', 'qcow2', '-O', 'raw', ($snap ? ('-l', "snapshot.name=$snap") : ()), $f, "$f.view");
    return "$f.view";
}
sub snap_view { return raw_md5(export_raw(@_)) }
sub snap_names {
    my ($f) = @_;
    my $i = qimg_json('info', '-f', 'qcow2', '--output=json', $f);
    return join(',', map { $_->{name} } @{ $i->{snapshots} // [] });
}
{
    my $d = device('is', 24);
    qimg('create', '-q', '-f', 'qcow2', $d, '16M');
    qio($d, 'write -q -P 0x11 0 4M', 'write -q -P 0x12 9M 100k');
    my %view = (s1 => view_md5($d));
    PVE::Storage::Qcow2Chain::internal_snapshot_create($d, 's1');
    check_clean($d, 'internal snapshot created on a device');
    PVE::Storage::Qcow2Chain::Image->open($d, rw => 1)->write(2 * $MiB, "\x21" x (3 * $MiB)); # copy on write
    qio($d, 'write -q -P 0x22 12M 1M');
    $view{s2} = view_md5($d);
    PVE::Storage::Qcow2Chain::internal_snapshot_create($d, 's2');
    qio($d, 'write -q -P 0x23 0 1M');
    my $live = view_md5($d);
    is(snap_names($d), 's1,s2', 'qemu-img lists the snapshots we took on a device');
    is(snap_view($d, $_), $view{$_}, "snapshot $_ on a device reads as it was taken") for qw(s1 s2);
    check_clean($d, 'internal snapshots and copy on write on a device');

    PVE::Storage::Qcow2Chain::internal_snapshot_apply($d, 's1');
    is(view_md5($d), $view{s1}, 'applying s1 on a device: the disk reads as s1');
    check_clean($d, 'after applying a snapshot on a device');
    my $blocks = (stat $backing_file{is})[12];
    PVE::Storage::Qcow2Chain::internal_snapshot_delete($d, 's2');
    is(snap_names($d), 's1', 'deleting s2 on a device: qemu-img lists s1 only');
    is(snap_view($d, 's1'), $view{s1}, 'and s1 still reads as it was taken');
    check_clean($d, 'after deleting a snapshot on a device');
    cmp_ok((stat $backing_file{is})[12], '<', $blocks, 'the clusters only s2 held are discarded on the device');
    is(-s "is.dev", 24 * $MiB, 'the device keeps its size');

    # copy on write past the capacity: refused before writing, nothing lost
    my $f = device('isf', 5);
    qimg('create', '-q', '-f', 'qcow2', $f, '16M');
    qio($f, 'write -q -P 0x31 0 4M');
    PVE::Storage::Qcow2Chain::internal_snapshot_create($f, 'full');
    my $before = slurp(export_raw($f));
    my $img = PVE::Storage::Qcow2Chain::Image->open($f, rw => 1);
    my $ok = eval { $img->write(0, "\x32" x (4 * $MiB)); 1 };
    my $err = "$@";
    $img->close;
    ok(!$ok, 'copy on write of a shared 4 MiB on a 5 MiB device fails');
    like($err, qr/^'isf': no space left on the device: \d+ more bytes needed/, '.. naming the device and the bytes missing');
    check_clean($f, 'a device filled by copy on write');
    is(snap_view($f, 'full'), Digest::MD5::md5_hex($before), 'the snapshot reads as taken');
    my $now = slurp(export_raw($f));
    my $bad = grep { my $c = substr($now, $_ * 65536, 65536); $c ne substr($before, $_ * 65536, 65536) && $c ne "\x32" x 65536 } 0 .. 255;
    is($bad, 0, 'every cluster of the live disk reads as before or as written');
}

done_testing();
