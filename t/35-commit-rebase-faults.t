# Crash safety of commit and safe rebase: each mutating I/O call of the
# operation fails in turn, or is the moment of a power cut that drops what
# no fsync made durable. Afterwards FILE reads exactly as before, no image
# is corrupt (leaks allowed), and running the operation again completes it.
# qemu-img runs once per distinct content of a chain (QcTest::remembered).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Copy qw(copy);
use POSIX qw(EIO ENOSPC);
use QcHooks qw(with_fault);
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;


sub setup {
    unlink glob('*.qcow2*');
    qimg('create', '-q', '-f', 'qcow2', 'base.qcow2', '8M');
    qio('base.qcow2', 'write -q -P 0x11 0 6M', 'write -q -z 6M 1M');
    qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2');
    qio('mid.qcow2', 'write -q -P 0x22 1M 1M', 'write -q -P 0x23 3000k 5k', 'write -q -z 4M 300k');
    qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2');
    qio('top.qcow2', 'write -q -P 0x33 1500k 10k', 'write -q -P 0x34 5M 256k');
}

# A 7 MiB layer copied in steps of $STEP (its 32 MiB default lowered) with
# a writeback hint after each, so faults and power cuts land between
# hinted steps too.
my $STEP = 2 << 20;
sub setup_big {
    unlink glob('*.qcow2*');
    qimg('create', '-q', '-f', 'qcow2', 'base.qcow2', '12M');
    qio('base.qcow2', 'write -q -P 0x11 0 2M');
    qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2');
    qio('mid.qcow2', 'write -q -P 0x22 1M 7M');
    qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2');
    qio('top.qcow2', 'write -q -P 0x33 3M 1M');
}

my @ops = (
    ['commit top into mid', 'top.qcow2', sub { PVE::Storage::Qcow2Chain::commit('top.qcow2', @_) }],
    ['commit -b base (two layers)', 'top.qcow2',
        sub { PVE::Storage::Qcow2Chain::commit('top.qcow2', base => 'base.qcow2', @_) }],
    ['safe rebase over the middle layer', 'top.qcow2',
        sub { PVE::Storage::Qcow2Chain::rebase('top.qcow2', backing_file => 'base.qcow2', backing_fmt => 'qcow2', @_) }],
    ['rebase -b "" (flatten)', 'top.qcow2',
        sub { PVE::Storage::Qcow2Chain::rebase('top.qcow2', backing_file => '', @_) }],
    ['commit of a 7 MiB layer', 'mid.qcow2', sub { PVE::Storage::Qcow2Chain::commit('mid.qcow2', @_) }, \&setup_big],
    ['safe rebase over a 7 MiB layer', 'top.qcow2',
        sub { PVE::Storage::Qcow2Chain::rebase('top.qcow2', backing_file => 'base.qcow2', backing_fmt => 'qcow2', @_) },
        \&setup_big],
);

for my $op (@ops) {
    my ($name, $file, $run, $setup) = @$op;
    ($setup // \&setup)->();
    copy($_, "$_.orig") or die for glob('*.qcow2');
    my $restore = sub { copy($_, s/\.orig$//r) or die for glob('*.qcow2.orig') };
    my $view = view_md5($file);
    my $step = $setup ? $STEP : 0;
    my %stats = %{ with_fault(['none', 0, 0, 0, $step], $run) };
    my $n = $stats{count};
    ok($n > 5, "$name: $n mutating I/O calls");
    is(view_md5($file), $view, "$name: guest view kept without faults");
    cmp_ok($stats{writebacks}, '>=', 1, "$name: writeback started during the copy") if $setup;
    my @points = $n <= 40 ? (1 .. $n) : (1 .. 10, map({ 10 + int($_ * ($n - 20) / 20) } 1 .. 19), $n - 9 .. $n);
    my @modes = (['error', EIO], ['error', ENOSPC], ['crash', EIO, 0], ['crash', EIO, 11]);
    my (%fails, $runs);
    for my $mode (@modes) {
        for my $k (@points) {
            $restore->();
            eval { with_fault([$mode->[0], $k, $mode->[1], $mode->[2] // 0, $step], $run) };
            $runs++;
            my $label = "$mode->[0] at call $k" . (defined $mode->[2] ? " seed $mode->[2]" : " errno $mode->[1]");
            for my $f (glob('*.qcow2')) {
                my ($rc, $o, $e) = qimg_check($f);
                push @{ $fails{$label} }, "$f: check $rc: $o$e" if $rc != 0 && $rc != 3;
            }
            push @{ $fails{$label} }, "$file: guest view changed" if view_md5($file) ne $view;
            eval { $run->() };
            push @{ $fails{$label} }, "redo failed: $@" if $@;
            push @{ $fails{$label} }, "$file: guest view changed after redo" if view_md5($file) ne $view;
        }
    }
    diag(explain(\%fails)) if %fails;
    is_deeply(\%fails, {}, "$name: $runs injected faults and crashes leave the view of $file intact and no image corrupt");
}

done_testing();
