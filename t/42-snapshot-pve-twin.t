# Linear snapshot sequences give the same guest views as Proxmox's own
# qemu-img procedure applied to a twin volume: snapshot = rename + qemu-img
# create; rollback (newest) = new overlay; delete oldest = qemu-img commit
# of the child + rename over it; delete another = qemu-img rebase of the
# child onto the parent + unlink.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;
mkdir 'ours';
mkdir 'pve';
my $F = 'vm-100-disk-0.qcow2';
my @overlay = ('-o', 'cluster_size=128k,extended_l2=on,preallocation=metadata');

# Proxmox's way, with qemu-img, in pve/.
my %pve = (
    snapshot => sub {
        my ($s) = @_;
        rename("pve/$F", "pve/snap-$s-$F") or die;
        qimg('create', '-q', '-f', 'qcow2', @overlay, '-b', "snap-$s-$F", '-F', 'qcow2', "pve/$F");
    },
    rollback => sub {
        my ($s) = @_;
        unlink "pve/$F";
        qimg('create', '-q', '-f', 'qcow2', @overlay, '-b', "snap-$s-$F", '-F', 'qcow2', "pve/$F");
    },
    delete => sub {
        my ($s, $child, $parent) = @_;
        my $c = $child eq 'current' ? "pve/$F" : "pve/snap-$child-$F";
        if (!defined $parent) {
            qimg('commit', '-q', $c);
            rename("pve/snap-$s-$F", $c) or die;
        } else {
            qimg('rebase', '-q', '-b', "snap-$parent-$F", '-F', 'qcow2', '-f', 'qcow2', $c);
            unlink "pve/snap-$s-$F";
        }
    },
);

my @chain;   # snapshot names, oldest first
sub step {
    my ($what, @args) = @_;
    if ($what eq 'write') {
        qio("$_/$F", $args[0]) for 'ours', 'pve';
    } elsif ($what eq 'snapshot') {
        PVE::Storage::Qcow2Chain::snapshot_create("ours/$F", $args[0]);
        $pve{snapshot}->($args[0]);
        push @chain, $args[0];
    } elsif ($what eq 'rollback') {
        PVE::Storage::Qcow2Chain::snapshot_rollback("ours/$F", $args[0]);
        $pve{rollback}->($args[0]);
    } elsif ($what eq 'delete') {
        my ($i) = grep { $chain[$_] eq $args[0] } 0 .. $#chain;
        my $child = $i == $#chain ? 'current' : $chain[$i + 1];
        my $parent = $i ? $chain[$i - 1] : undef;
        PVE::Storage::Qcow2Chain::snapshot_delete("ours/$F", $args[0]);
        $pve{delete}->($args[0], $child, $parent);
        splice(@chain, $i, 1);
    }
    my @bad;
    for my $f ($F, map { "snap-$_-$F" } @chain) {
        my ($rc, $o, $e) = qimg_ok('compare', "ours/$f", "pve/$f");
        push @bad, "$f differs: $o$e" if $rc != 0;
        ($rc, $o, $e) = qimg_ok('check', "ours/$f");
        push @bad, "$f check $rc" if $rc != 0;
    }
    is_deeply(\@bad, [], "$what @args: same guest views as Proxmox's procedure");
}

for my $d ('ours', 'pve') {
    qimg('create', '-q', '-f', 'qcow2', "$d/$F", '32M');
}
step('write', 'write -q -P 0x11 0 8M');
step('snapshot', 'first');
step('write', 'write -q -P 0x22 4M 1M');
step('write', 'write -q -z 6M 100k');
step('snapshot', 'second');
step('write', 'write -q -P 0x33 5M 3k');
step('snapshot', 'third');
step('write', 'write -q -P 0x44 0 64k');
step('rollback', 'third');
step('write', 'write -q -P 0x55 20M 1M');
step('delete', 'second');
step('snapshot', 'fourth');
step('write', 'write -q -P 0x66 7M 2M');
step('delete', 'first');
step('delete', 'fourth');
step('write', 'write -q -P 0x77 30M 1M');
step('delete', 'third');

done_testing();
