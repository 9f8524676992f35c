package PVE::Storage::Qcow2Chain::Demo;

# The main job of the README's first command: a scratch directory laid
# out like a Proxmox directory storage; a disk is allocated, written,
# snapshotted, rolled back to an older snapshot, branched, and snapshots
# are deleted on both branches. Every step is timed; at the end every
# file is checked and every snapshot's content verified.

use strict;
use warnings;

use File::Path qw(make_path);
use File::Temp qw(tempdir);
use Time::HiRes qw(time);
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

our $VERSION = '0.1.0';

my $MiB = 1 << 20;

sub step {
    my ($what, $code) = @_;
    my $t0 = time;
    my @r = $code->();
    printf("  %-60s %9.2f ms\n", $what, (time - $t0) * 1000);
    return wantarray ? @r : $r[0];
}

# What each region of the disk should hold, per snapshot: [offset, length, byte].
sub write_region {
    my ($vol, $model, $off, $len, $byte) = @_;
    my $img = PVE::Storage::Qcow2Chain::Image->open($vol, rw => 1);
    my $buf = chr($byte) x $MiB;
    for (my $o = 0; $o < $len; $o += $MiB) { $img->write($off + $o, $buf) }
    $img->close;
    push @$model, [$off, $len, $byte];
    return;
}

sub verify_view {
    my ($file, $model) = @_;
    my $img = PVE::Storage::Qcow2Chain::Image->open($file);
    # the newest write to each region wins
    my %expect;
    for my $w (@$model) {
        for (my $o = $w->[0]; $o < $w->[0] + $w->[1]; $o += $MiB) { $expect{$o} = $w->[2] }
    }
    for my $o (sort { $a <=> $b } keys %expect) {
        my $got = $img->read($o, $MiB);
        die "verify: $file at $o does not hold what was written\n" if $got ne chr($expect{$o}) x $MiB;
    }
    die "verify: $file should read zeros at the end\n" if $img->read($img->size - 4096, 4096) ne "\0" x 4096;
    $img->close;
    return scalar(keys %expect);
}

sub tree {
    my ($vol) = @_;
    my $list = PVE::Storage::Qcow2Chain::snapshot_list($vol);
    my %by = map { ($_->{name} // $_->{file}) => $_ } @{ $list->{nodes} };
    my $show;
    $show = sub {
        my ($n, $ind) = @_;
        printf("    %s`-> %-12s %s\n", $ind, $n->{name}, $n->{kind} eq 'current' ? '(you are here)' : '');
        $show->($by{$_}, "$ind  ") for sort @{ $n->{children} };
    };
    $show->($_, '') for grep { !defined $_->{parent} && $_->{kind} ne 'external' } @{ $list->{nodes} };
    return;
}

sub run {
    my ($dir) = @_;
    $dir //= tempdir('qcow2-chain-demo-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $images = "$dir/images/100";
    make_path($images);
    my $vol = "$images/vm-100-disk-0.qcow2";
    print "qcow2-chain demo: directory storage in $dir (qcow2-chain " . PVE::Storage::Qcow2Chain::core_version() . ")\n";

    my (@now, %snap);
    step('alloc vm-100-disk-0.qcow2 (4 GiB, 64k clusters)', sub { PVE::Storage::Qcow2Chain::create($vol, size => '4G') });
    step('write 64 MiB (the installed system)', sub { write_region($vol, \@now, 0, 64 * $MiB, 0x11) });
    step('snapshot "install"', sub { PVE::Storage::Qcow2Chain::snapshot_create($vol, 'install') });
    $snap{install} = [@now];
    step('write 32 MiB', sub { write_region($vol, \@now, 100 * $MiB, 32 * $MiB, 0x22) });
    step('snapshot "configured"', sub { PVE::Storage::Qcow2Chain::snapshot_create($vol, 'configured') });
    $snap{configured} = [@now];
    step('write 16 MiB', sub { write_region($vol, \@now, 8 * $MiB, 16 * $MiB, 0x33) });
    step('snapshot "upgrade"', sub { PVE::Storage::Qcow2Chain::snapshot_create($vol, 'upgrade') });
    $snap{upgrade} = [@now];
    step('roll back to the older "install" (not the newest)', sub { PVE::Storage::Qcow2Chain::snapshot_rollback($vol, 'install') });
    @now = @{ $snap{install} };
    step('write 8 MiB on the new branch', sub { write_region($vol, \@now, 200 * $MiB, 8 * $MiB, 0x44) });
    step('snapshot "experiment" (a branch)', sub { PVE::Storage::Qcow2Chain::snapshot_create($vol, 'experiment') });
    $snap{experiment} = [@now];
    step('write 4 MiB', sub { write_region($vol, \@now, 300 * $MiB, 4 * $MiB, 0x55) });
    print "  the snapshot tree:\n";
    tree($vol);
    step('delete "configured" (middle of the other branch)', sub { PVE::Storage::Qcow2Chain::snapshot_delete($vol, 'configured') });
    delete $snap{configured};
    step('delete "install" (the branch point, two children)', sub { PVE::Storage::Qcow2Chain::snapshot_delete($vol, 'install') });
    delete $snap{install};
    step('delete "experiment" (on the live branch)', sub { PVE::Storage::Qcow2Chain::snapshot_delete($vol, 'experiment') });
    delete $snap{experiment};
    print "  the snapshot tree now:\n";
    tree($vol);

    print "verifying:\n";
    my $files = 0;
    step('check every file (refcounts, tables)', sub {
        for my $f ($vol, map { PVE::Storage::Qcow2Chain::snapshot_file($vol, $_) } keys %snap) {
            my $r = PVE::Storage::Qcow2Chain::check($f);
            die "verify: $f is not clean\n" if $r->{corruptions} || $r->{leaks} || $r->{'check-errors'};
            $files++;
        }
    });
    my $regions = 0;
    step('read back the live disk and every snapshot', sub {
        $regions += verify_view($vol, \@now);
        $regions += verify_view(PVE::Storage::Qcow2Chain::snapshot_file($vol, $_), $snap{$_}) for keys %snap;
    });
    print "verified: $files files clean, $regions MiB read back as written\n";
    return 0;
}

1;

__END__

=head1 NAME

PVE::Storage::Qcow2Chain::Demo - the demonstration run by C<qcow2-chain demo>

=head1 SYNOPSIS

    qcow2-chain demo [DIR]

=head1 DESCRIPTION

On a scratch directory laid out like a Proxmox directory storage (or DIR):
allocates a disk, writes data, takes snapshots, rolls back to an older
snapshot, branches, deletes snapshots on both branches, prints the tree
and the time of each step, then checks every file and verifies every
snapshot's content. Uses only this distribution (no qemu-img).

=head1 FUNCTIONS

=over

=item run($dir)

Runs the demo in C<$dir> (a new temporary directory when undefined).
Returns 0 on success, dies with a one-line message otherwise.

=item step($label, $code), write_region, verify_view, tree

Helpers of the demo: timing, writing and verifying regions, drawing the tree.

=back

=cut
