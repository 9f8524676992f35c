package PVE::Storage::Qcow2Chain::Demo;

# The main job of the README's first command: build a small backing chain
# in a scratch directory, inspect it natively, and verify what we read.

use strict;
use warnings;

use File::Temp qw(tempdir);
use Time::HiRes qw(time);
use PVE::Storage::Qcow2Chain;

our $VERSION = '0.1.0';

sub step {
    my ($what, $code) = @_;
    my $t0 = time;
    my @r = $code->();
    printf("  %-58s %8.2f ms\n", $what, (time - $t0) * 1000);
    return wantarray ? @r : $r[0];
}

sub sh {
    my (@cmd) = @_;
    system(@cmd) == 0 or die "command failed: @cmd\n";
}

sub run {
    my ($dir) = @_;
    $dir //= tempdir('qcow2-chain-demo-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    print "qcow2-chain demo in $dir\n";
    my $base = "$dir/vm-100-disk-0.qcow2";
    my $mid = "$dir/snap-one.qcow2";
    my $top = "$dir/snap-two.qcow2";

    print "building a 3-layer chain with qemu-img (the writer lands in the next issue):\n";
    step('create base (1 GiB)', sub { sh('qemu-img', 'create', '-q', '-f', 'qcow2', $base, '1G') });
    step('write 4 MiB of 0x11 at 0', sub { sh('qemu-io', '-c', 'write -q -P 0x11 0 4M', $base) });
    step('create overlay one', sub { sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'vm-100-disk-0.qcow2', '-F', 'qcow2', $mid) });
    step('write zeros over 1 MiB in the middle', sub { sh('qemu-io', '-c', 'write -q -z 1M 1M', $mid) });
    step('create overlay two (128k clusters, extended L2)', sub {
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', '-b', 'snap-one.qcow2', '-F', 'qcow2', $top) });
    step('write 4 KiB of 0x22 at 3 MiB', sub { sh('qemu-io', '-c', 'write -q -P 0x22 3M 4k', $top) });

    print "inspecting natively:\n";
    my $chain = step('info --backing-chain (in-process)', sub { PVE::Storage::Qcow2Chain::info($top, backing_chain => 1) });
    for my $l (@$chain) {
        printf("    %-24s %-6s %10d bytes, backing %s\n", $l->{filename} =~ s{.*/}{}r, $l->{format},
            $l->{'virtual-size'}, $l->{'backing-filename'} // '-');
    }
    my $map = step('map', sub { PVE::Storage::Qcow2Chain::map($top) });
    for my $e (@$map) {
        next if !$e->{present};
        printf("    %10d +%-10d depth %d %s\n", $e->{start}, $e->{length}, $e->{depth}, $e->{data} ? 'data' : 'zero');
    }
    my ($a, $b, $c) = step('read guest data at 0, 1 MiB and 3 MiB', sub {
        map { PVE::Storage::Qcow2Chain::read($top, $_, 4096) } (0, 1 << 20, 3 << 20);
    });
    die "verify: wrong data at 0\n" if $a ne "\x11" x 4096;
    die "verify: wrong data at 1 MiB\n" if $b ne "\0" x 4096;
    die "verify: wrong data at 3 MiB\n" if $c ne "\x22" x 4096;
    die "verify: chain length\n" if @$chain != 3;
    print "verified: chain of 3, guest data as written\n";
    return 0;
}

1;

__END__

=head1 NAME

PVE::Storage::Qcow2Chain::Demo - the demonstration run by C<qcow2-chain demo>

=head1 SYNOPSIS

    qcow2-chain demo [DIR]

=head1 DESCRIPTION

Builds a small chain in a scratch directory (or DIR), inspects it with the
native reader, prints the time of each step and verifies the results.

=head1 FUNCTIONS

=over

=item run($dir)

Run the demo in C<$dir> (a new temporary directory when undefined).
Returns 0 on success and dies with a one-line message otherwise.

=item step($label, $code)

Run C<$code>, print C<$label> with the time it took, return its result.

=item sh(@cmd)

Run a command, die if it fails.

=back

=cut
