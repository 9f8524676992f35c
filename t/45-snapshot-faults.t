# The crash matrix of snapshot operations: every mutating I/O call of
# create, rollback, rename (current on either side too) and each delete path fails in turn, or is the
# moment of a power cut. The next operation on the volume (here the
# explicit recovery) completes or undoes the interrupted one; then the live
# disk reads as before or after the operation, every other snapshot is
# exact, no image is corrupt, and the operation can be run again.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX qw(EIO ENOSPC);
use QcHooks qw(with_fault);
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;
my $V = 'vm-100-disk-0.qcow2';
my $SIZE = 4 << 20;

sub sf { PVE::Storage::Qcow2Chain::snapshot_file($V, $_[0]) }

# base -> a -> b -> current, and a second branch a -> c; the volume made as
# Proxmox makes it (metadata preallocation: data clusters over holes), once:
# each run starts from a copy with the same holes (copy_sparse). Guest views
# are compared by digest; qemu-img (convert, check) runs once per content
# of a chain (QcTest::remembered), the matrix reaching the same states often.
branched_volume($V, $SIZE, '-o', 'preallocation=metadata');
mkdir 'orig';
copy_sparse($_, "orig/$_") for glob('*.qcow2');
my %content = (current => view_md5($V), map { $_ => view_md5(sf($_)) } qw(a b c));
for my $f (glob('*.qcow2')) {
    my ($rc, $o, $e) = qimg_check($f);
    is($rc, 0, "$f checks clean before") or diag("$o$e");
}
sub restore {
    unlink glob('*.qcow2'), glob('.*.qcow2.*');
    copy_sparse($_, s{^orig/}{}r) for glob('orig/*.qcow2');
}

my @ops = (
    ['create', sub { PVE::Storage::Qcow2Chain::snapshot_create($V, 'new', @_) }, { new => 'current' }],
    ['rollback to a', sub { PVE::Storage::Qcow2Chain::snapshot_rollback($V, 'a', @_) }, { current => 'a' }],
    ['delete leaf c', sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'c', @_) }, { c => undef }],
    ['delete b by commit', sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'b', delete_method => 'commit', @_) }, { b => undef }],
    ['delete b by stream', sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'b', delete_method => 'stream', @_) }, { b => undef }],
    ['delete a (two children)', sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'a', @_) }, { a => undef }],
    ['rename b', sub { PVE::Storage::Qcow2Chain::snapshot_rename($V, 'b', 'bee', @_) }, { b => undef, bee => 'b' }],
    # "current" in a rename: the live disk becomes a snapshot, or a snapshot (its only parent) the live disk
    ['rename current to new', sub { PVE::Storage::Qcow2Chain::snapshot_rename($V, 'current', 'new', @_) }, { new => 'current' }],
    ['rename b to current', sub { PVE::Storage::Qcow2Chain::snapshot_rename($V, 'b', 'current', running => 1, @_) },
        { current => 'b', b => undef }],
);

for my $op (@ops) {
    my ($name, $run, $change) = @$op;
    # expected content after the operation, per snapshot name (current included)
    my %after = %content;
    for my $k (keys %$change) {
        if (defined $change->{$k}) { $after{$k} = $content{ $change->{$k} } } else { delete $after{$k} }
    }
    restore();
    my %stats = %{ with_fault(['none'], $run) };
    my $n = $stats{count};
    my @points = $n <= 40 ? (1 .. $n) : (1 .. 10, map({ 10 + int($_ * ($n - 20) / 20) } 1 .. 19), $n - 9 .. $n);
    my (%fails, $runs);
    for my $mode (['error', EIO], ['crash', EIO, 0], ['crash', EIO, 5]) {
        for my $k (@points) {
            restore();
            eval { with_fault([$mode->[0], $k, $mode->[1], $mode->[2] // 0], $run) };
            $runs++;
            my $label = "$mode->[0] at $k" . (defined $mode->[2] ? " seed $mode->[2]" : '');
            eval { PVE::Storage::Qcow2Chain::volume_recover($V) };
            push @{ $fails{$label} }, "recovery: $@" if $@;
            ok(!-e ".$V.journal", "$name, $label: no journal left after recovery") or next;
            # every name is in its state before or after, and never anything else
            my $list = PVE::Storage::Qcow2Chain::snapshot_list($V);
            my %now = map { $_->{name} => 1 } grep { $_->{kind} eq 'snapshot' } @{ $list->{nodes} };
            for my $s ('current', sort keys %now) {
                my $f = $s eq 'current' ? $V : sf($s);
                my $v = view_md5($f);
                my $ok = (exists $content{$s} && $v eq $content{$s}) || (exists $after{$s} && $v eq $after{$s});
                push @{ $fails{$label} }, "$s reads neither as before nor as after" if !$ok;
                my ($rc, $o, $e) = qimg_check($f);
                push @{ $fails{$label} }, "$s: check $rc $o$e" if $rc != 0 && $rc != 3;
            }
            for my $s (keys %content) {
                next if $s eq 'current' || $now{$s} || !exists $after{$s};
                push @{ $fails{$label} }, "snapshot $s lost";
            }
            push @{ $fails{$label} }, 'stray files' if grep { $_->{kind} eq 'stray' } @{ $list->{nodes} };
            # running the operation again reaches the state after it
            my $done = 1;
            for my $k2 (keys %$change) {
                my $exists = $k2 eq 'current' || $now{$k2};
                $done = 0 if defined($change->{$k2}) ? !$exists || view_md5($k2 eq 'current' ? $V : sf($k2)) ne $after{$k2} : $exists;
            }
            if (!$done) {
                eval { $run->() };
                push @{ $fails{$label} }, "redo failed: $@" if $@;
            }
            for my $s (keys %after) {
                my $f = $s eq 'current' ? $V : sf($s);
                push @{ $fails{$label} }, "after redo: $s wrong" if !-e $f || view_md5($f) ne $after{$s};
            }
        }
    }
    diag(explain(\%fails)) if %fails;
    is_deeply(\%fails, {}, "$name: $n I/O calls, $runs failures and power cuts: recovered, nothing lost, nothing corrupt");
}

done_testing();
