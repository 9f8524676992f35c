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

use File::Copy qw(copy);
use POSIX qw(EIO ENOSPC);
use QcHooks qw(with_fault);
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;
my $V = 'vm-100-disk-0.qcow2';
my $SIZE = 4 << 20;

sub view { qimg('convert', '-O', 'raw', $_[0], 'view.raw'); return slurp('view.raw') }
sub sf { PVE::Storage::Qcow2Chain::snapshot_file($V, $_[0]) }

# base -> a -> b -> current, and a second branch a -> c; the volume made as
# Proxmox makes it (metadata preallocation: data clusters over holes)
sub setup {
    unlink glob('*.qcow2'), glob('.*.qcow2.*');
    branched_volume($V, $SIZE, '-o', 'preallocation=metadata');
}

setup();
my %content = (current => view($V), map { $_ => view(sf($_)) } qw(a b c));

# A file byte-identical to its copy made before the operation, whose
# backing files are too, reads and checks as it did then: no qemu-img run
# is needed to know it (the copies were checked once, below).
my (%orig_bytes, %orig_view);
sub backing_name {
    my ($f) = @_;
    open(my $fh, '<:raw', $f) or return undef;
    read($fh, my $h, 20) == 20 or return undef;
    my ($off, $len) = unpack('x8 Q> N', $h);
    return undef if !$off || !$len;
    seek($fh, $off, 0) or return undef;
    read($fh, my $n, $len) == $len or return undef;
    return $n;
}
sub untouched {
    my ($f) = @_;
    my %seen;
    for (my $x = $f; defined $x; $x = backing_name($x)) {
        return 0 if $seen{$x}++ || !exists $orig_bytes{$x} || !-f $x || slurp($x) ne $orig_bytes{$x};
    }
    return exists $orig_view{$f};
}
sub view_of { my ($f) = @_; return untouched($f) ? $orig_view{$f} : view($f) }

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
    setup();
    mkdir 'orig';
    unlink glob('orig/*');
    copy($_, "orig/$_") or die for glob('*.qcow2');
    %orig_bytes = map { $_ => slurp($_) } glob('*.qcow2');
    %orig_view = (($V => $content{current}), map { (sf($_) => $content{$_}) } qw(a b c));
    is(view($_), $orig_view{$_}, "$name: $_ reads as expected before") for sort keys %orig_view;
    for my $f (sort keys %orig_bytes) {
        my ($rc, $o, $e) = qimg_ok('check', $f);
        is($rc, 0, "$name: $f checks clean before") or diag("$o$e");
    }
    my $restore = sub {
        unlink glob('*.qcow2'), glob('.*.qcow2.*');
        copy($_, s{^orig/}{}r) or die for glob('orig/*.qcow2');
    };
    my %stats = %{ with_fault(['none'], $run) };
    my $n = $stats{count};
    my @points = $n <= 40 ? (1 .. $n) : (1 .. 10, map({ 10 + int($_ * ($n - 20) / 20) } 1 .. 19), $n - 9 .. $n);
    my (%fails, $runs);
    for my $mode (['error', EIO], ['crash', EIO, 0], ['crash', EIO, 5]) {
        for my $k (@points) {
            $restore->();
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
                my $same = untouched($f);
                my $v = $same ? $orig_view{$f} : view($f);
                my $ok = (exists $content{$s} && $v eq $content{$s}) || (exists $after{$s} && $v eq $after{$s});
                push @{ $fails{$label} }, "$s reads neither as before nor as after" if !$ok;
                next if $same;
                my ($rc, $o, $e) = qimg_ok('check', $f);
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
                $done = 0 if defined($change->{$k2}) ? !$exists || view_of($k2 eq 'current' ? $V : sf($k2)) ne $after{$k2} : $exists;
            }
            if (!$done) {
                eval { $run->() };
                push @{ $fails{$label} }, "redo failed: $@" if $@;
            }
            for my $s (keys %after) {
                my $f = $s eq 'current' ? $V : sf($s);
                push @{ $fails{$label} }, "after redo: $s wrong" if !-e $f || view_of($f) ne $after{$s};
            }
        }
    }
    diag(explain(\%fails)) if %fails;
    is_deeply(\%fails, {}, "$name: $n I/O calls, $runs failures and power cuts: recovered, nothing lost, nothing corrupt");
}

done_testing();
