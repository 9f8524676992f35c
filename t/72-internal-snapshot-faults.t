# The crash matrix of internal snapshot operations: every mutating I/O
# call of create, apply and delete fails in turn (EIO, ENOSPC), or is the
# moment of a power cut that undoes what no fsync made durable (all of it,
# or a random part). Afterwards qemu-img check finds the image clean (no
# corruption, not even a leak: each operation appears in one header
# write), the snapshot table and every snapshot and the live disk read
# entirely as before or entirely as after, and the operation can be redone.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha1_hex);
use File::Copy qw(copy);
use POSIX qw(EIO);
use QcHooks qw(with_fault);
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;
my $F = 'img.qcow2';

# Guest views are compared by digest, qemu-img (convert, check) run once
# per content of the image (QcTest::view_md5, qimg_check): the matrix
# reaches the same states again and again.
sub view { view_md5($F, @_) }

# Names and views of everything in the image.
sub state_of {
    my @names = map { $_->{name} } @{ PVE::Storage::Qcow2Chain::internal_snapshot_list($F) };
    return { list => "@names", current => view(), map { ($_ => view($_)) } @names };
}

# 4k clusters: many refcount blocks and L2 tables change; compressed and zero clusters too
sub setup {
    unlink $F;
    qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', $F, '2M');
    qio($F, 'write -q -P 0x11 0 1M', 'write -q -c -P 0x12 1M 64k', 'write -q -z 1536k 64k');
    qimg('snapshot', '-c', 'a', $F);
    qio($F, 'write -q -P 0x21 512k 256k', 'write -q -P 0x22 1792k 8k');
    PVE::Storage::Qcow2Chain::internal_snapshot_create($F, 'b');
    qio($F, 'write -q -P 0x31 896k 128k');
    copy($F, 'orig.qcow2') or die;
}

my @ops = (
    ['create', sub { PVE::Storage::Qcow2Chain::internal_snapshot_create($F, 'new', @_) }],
    ['apply a', sub { PVE::Storage::Qcow2Chain::internal_snapshot_apply($F, 'a', @_) }],
    ['delete b (live clusters become unshared)', sub { PVE::Storage::Qcow2Chain::internal_snapshot_delete($F, 'b', @_) }],
    ['delete a (the oldest)', sub { PVE::Storage::Qcow2Chain::internal_snapshot_delete($F, 'a', @_) }],
);

setup();
my $before = state_of();
for my $op (@ops) {
    my ($name, $run) = @$op;
    copy('orig.qcow2', $F) or die;
    my %stats = %{ with_fault(['none'], $run) };
    my $n = $stats{count};
    my $after = state_of();
    # the first and last calls, and an even spread between (every call for short operations)
    my @points = $n <= 24 ? (1 .. $n) : (1 .. 6, map({ 6 + int($_ * ($n - 12) / 12) } 1 .. 11), $n - 5 .. $n);
    my (%fails, $runs);
    for my $mode (['error', EIO], ['crash', EIO, 0], ['crash', EIO, 3]) {
        for my $k (@points) {
            copy('orig.qcow2', $F) or die;
            eval { with_fault([$mode->[0], $k, $mode->[1], $mode->[2] // 0], $run) };
            $runs++;
            my $label = "$mode->[0]" . ($mode->[0] eq 'error' ? "($mode->[1])" : "(seed $mode->[2])") . " at call $k";
            my ($rc, $o, $e) = qimg_check($F);
            if ($rc != 0) { push @{ $fails{$label} }, "qemu-img check $rc: $o$e"; next }
            my $now = state_of();
            my $which = json_canon($now) eq json_canon($before) ? 'before' : json_canon($now) eq json_canon($after) ? 'after' : undef;
            push @{ $fails{$label} }, 'the image is neither as before nor as after' if !$which;
            if (($which // '') ne 'after') {
                eval { $run->() };
                push @{ $fails{$label} }, "redo failed: $@" if $@;
            }
            push @{ $fails{$label} }, 'redo gives another result' if json_canon(state_of()) ne json_canon($after);
        }
    }
    diag(explain(\%fails)) if %fails;
    is_deeply(\%fails, {}, "$name: $n mutating I/O calls, $runs failures and power cuts: clean, before or after, redo works");
    note("$name: $n calls");
}

done_testing();
