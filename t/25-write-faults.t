# Crash safety of the write engine, through the I/O seam: every mutating
# call (pwrite, fsync, ftruncate, rename, ...) of a write sequence is made
# to fail in turn, or to be the moment of a power cut that drops writes no
# fsync made durable. Afterwards qemu-img check finds no corruption, every
# written piece reads as its old or its new content, and redoing the
# sequence works. (qemu-img runs once per distinct content of the image:
# QcTest::remembered.)
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::MD5 qw(md5_hex);
use File::Copy qw(copy);
use POSIX qw(EIO ENOSPC);
use QcHooks qw(with_fault image_fault_stats);
use QcTest;
use constant MiB => 1 << 20;
use Test::More;
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

my $dir = scratch();
chdir $dir or die;

sub export_raw {
    my ($f) = @_;
    qimg('convert', '-O', 'raw', $f, "$f.raw");
    return slurp("$f.raw");
}

# Run the ops on $f; returns the error of the first failing op (or undef).
sub run_ops {
    my ($f, $ops, $fault) = @_;
    my ($err, $img);
    my $open = sub { $img = PVE::Storage::Qcow2Chain::Image->open($f, rw => 1) };
    eval { $fault ? with_fault($fault, $open) : $open->() };
    return ("$@", 0) if !$img;
    for my $op (@$ops) {
        my ($k, $off, $len, $pat) = @$op;
        eval {
            if ($k eq 'write') { $img->write($off, chr($pat) x $len) }
            elsif ($k eq 'zero') { $img->write_zeroes($off, $len, 1) }
            else { $img->discard($off, $len) }
        };
        $err //= $@ if $@;
    }
    eval { $img->flush };
    $err //= $@ if $@;
    my ($count) = image_fault_stats($img);
    eval { $img->close };
    return ($err, $count // 0);
}

sub expected {
    my ($old, $ops) = @_;
    my $new = $old;
    for my $op (@$ops) {
        my ($k, $off, $len, $pat) = @$op;
        substr($new, $off, $len) = $k eq 'write' ? chr($pat) x $len : "\0" x $len;
    }
    return $new;
}

# Every cluster-sized piece of every op's range reads old or new; the rest is untouched.
sub old_or_new {
    my ($got, $old, $new, $ops, $cs) = @_;
    my @bad;
    my %covered;
    for my $op (@$ops) {
        my ($k, $off, $len) = @$op;
        for (my $p = $off; $p < $off + $len;) {
            my $e = (int($p / $cs) + 1) * $cs;
            $e = $off + $len if $e > $off + $len;
            my $g = substr($got, $p, $e - $p);
            push @bad, "$k at $p" if $g ne substr($old, $p, $e - $p) && $g ne substr($new, $p, $e - $p);
            $covered{int($p / $cs)} = 1;
            $p = $e;
        }
    }
    for (my $c = 0; $c * $cs < length($old); $c++) {
        next if $covered{$c};
        push @bad, "untouched cluster $c changed" if substr($got, $c * $cs, $cs) ne substr($old, $c * $cs, $cs);
    }
    return @bad;
}

my @scenarios = (
    # name, setup (makes "img.qcow2"), cluster size, ops
    ['overlay 64k over a backing', sub {
        qimg('create', '-q', '-f', 'qcow2', 'base.qcow2', '8M');
        qio('base.qcow2', 'write -q -P 0x11 0 8M');
        PVE::Storage::Qcow2Chain::create('img.qcow2', backing_file => 'base.qcow2', backing_fmt => 'qcow2');
        qio('img.qcow2', 'write -q -P 0x22 1M 64k');
    }, 65536, [['write', 1000, 5000, 0x41], ['write', 1 * MiB + 100, 70000, 0x42], ['zero', 3 * MiB, 200000, 0],
               ['write', 5 * MiB - 10, 20, 0x43], ['discard', 6 * MiB, 128 * 1024, 0]]],
    ['512-byte clusters, 64-bit refcounts (new refcount blocks, table growth)', sub {
        PVE::Storage::Qcow2Chain::create('img.qcow2', size => '4M', cluster_size => 512, refcount_bits => 64);
        qio('img.qcow2', 'write -q -P 0x21 0 1M');
    }, 512, [['write', 1 * MiB, 1 * MiB, 0x51], ['write', 100, 3000, 0x52], ['zero', 2 * MiB + 7, 10000, 0],
             ['write', 3 * MiB, 600000, 0x53]]],
    ['extended L2, 128k, over a backing (Proxmox snapshot overlay)', sub {
        qimg('create', '-q', '-f', 'qcow2', 'base.qcow2', '8M');
        qio('base.qcow2', 'write -q -P 0x11 0 8M');
        PVE::Storage::Qcow2Chain::create('img.qcow2', backing_file => 'base.qcow2', backing_fmt => 'qcow2',
            cluster_size => '128k', extended_l2 => 1, preallocation => 'metadata');
    }, 4096, [['write', 1000, 5000, 0x61], ['write', 300000, 2048, 0x62], ['zero', 2 * MiB, 300000, 0],
              ['write', 4 * MiB + 77, 9000, 0x63]]],
    ['internal snapshot (shared clusters copied, old ones freed)', sub {
        qimg('create', '-q', '-f', 'qcow2', 'img.qcow2', '4M');
        qio('img.qcow2', 'write -q -P 0x71 0 4M');
        qimg('snapshot', '-c', 'keep', 'img.qcow2');
    }, 65536, [['write', 500, 1000, 0x72], ['write', 1 * MiB, 200000, 0x73], ['discard', 2 * MiB, 1 * MiB, 0],
               ['zero', 3 * MiB + 5, 100, 0]]],
);


for my $s (@scenarios) {
    my ($name, $setup, $cs, $ops) = @$s;
    unlink glob('*.qcow2*');
    $setup->();
    copy($_, "$_.orig") or die for glob('*.qcow2');
    my $old = export_raw('img.qcow2');
    my $new = expected($old, $ops);
    my $new_md5 = md5_hex($new);
    my $restore = sub { copy($_, s/\.orig$//r) or die for glob("*.qcow2.orig") };

    my ($err, $n) = run_ops('img.qcow2', $ops, ['none']);
    is($err, undef, "$name: runs without faults");
    is(export_raw('img.qcow2'), $new, "$name: content as expected");
    ok($n > 3, "$name: $n mutating I/O calls");
    $restore->();
    ($err) = run_ops('img.qcow2', $ops, ['short']);
    is($err, undef, "$name: short writes everywhere are completed");
    is(export_raw('img.qcow2'), $new, "$name: .. and give the same content");
    my ($src) = qimg_check('img.qcow2');
    is($src, 0, "$name: .. and a clean image");

    my @points = $n <= 40 ? (1 .. $n) : (1 .. 10, map({ 10 + int($_ * ($n - 20) / 20) } 1 .. 19), $n - 9 .. $n);
    my (%fails, $runs);
    for my $mode (['error', EIO], ['error', ENOSPC], ['crash', 0, 0], ['crash', 0, 7]) {
        for my $k (@points) {
            $restore->();
            my @f = ($mode->[0], $k, $mode->[1] || EIO, $mode->[2] // 0);
            my ($e) = run_ops('img.qcow2', $ops, \@f);
            $runs++;
            my $label = "$f[0]" . ($f[0] eq 'error' ? "($f[2])" : "(seed $f[3])") . " at call $k";
            my ($rc, $o, $ce) = qimg_check('img.qcow2');
            if ($rc != 0 && $rc != 3) { push @{ $fails{$label} }, "qemu-img check: $o$ce"; next }
            my @bad = remembered('img.qcow2', "old or new: $name", sub { old_or_new(export_raw('img.qcow2'), $old, $new, $ops, $cs) });
            push @{ $fails{$label} }, @bad if @bad;
            # the next attempt recovers
            ($e) = run_ops('img.qcow2', $ops);
            push @{ $fails{$label} }, "redo failed: $e" if $e;
            push @{ $fails{$label} }, 'redo gives wrong content' if view_md5('img.qcow2') ne $new_md5;
            ($rc, $o) = qimg_check('img.qcow2');
            push @{ $fails{$label} }, "after redo: check $rc" if $rc != 0 && $rc != 3;
        }
    }
    diag(explain(\%fails)) if %fails;
    is_deeply(\%fails, {}, "$name: $runs injected faults and crashes: no corruption, old-or-new data, redo works");
}

done_testing();
