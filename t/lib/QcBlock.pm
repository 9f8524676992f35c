package QcBlock;

# Loop devices for the block device tests: each over a scratch file (or a
# slice of one, as device-mapper maps a linear LV), detached again at the
# end of the test file, also when it dies or is interrupted.

use strict;
use warnings;

use Exporter 'import';
use QcTest qw(run_cmd);

our @EXPORT = qw(loop_usable loop_attach loop_detach fill_file);

my %attached; # device => 1

# Why loop devices cannot be used here, or undef when they can.
sub loop_usable {
    return 'needs root' if $> != 0;
    my ($rc) = run_cmd('losetup', '--version');
    return 'needs losetup (util-linux)' if $rc != 0;
    return undef;
}

# Attach $file (from byte $o{offset}, $o{size} bytes long); returns /dev/loopN.
sub loop_attach {
    my ($file, %o) = @_;
    my @slice;
    push @slice, '--offset', $o{offset} if $o{offset};
    push @slice, '--sizelimit', $o{size} if $o{size};
    my ($rc, $out, $err);
    for my $try (1 .. 20) { # another test attaching at the same time may take the free device first
        ($rc, $out, $err) = run_cmd('losetup', '-f', '--show', @slice, $file);
        last if $rc == 0;
        select(undef, undef, undef, 0.1);
    }
    die "losetup $file failed: $err" if $rc != 0;
    chomp $out;
    $attached{$out} = 1;
    return $out;
}

sub loop_detach {
    my ($dev) = @_;
    return if !delete $attached{$dev};
    for my $try (1 .. 50) { # a device still being closed by udev is busy for a moment
        my ($rc) = run_cmd('losetup', '-d', $dev);
        return if $rc == 0;
        select(undef, undef, undef, 0.1);
    }
    warn "could not detach $dev\n";
    return;
}

# A file of $size bytes filled with byte $byte: old data, as a reused LV holds.
sub fill_file {
    my ($file, $size, $byte) = @_;
    open(my $fh, '>:raw', $file) or die "$file: $!";
    my $chunk = chr($byte) x (1 << 20);
    for (my $left = $size; $left > 0; $left -= length $chunk) {
        print $fh ($left < length $chunk ? substr($chunk, 0, $left) : $chunk) or die "$file: $!";
    }
    close $fh or die "$file: $!";
    return;
}

$SIG{$_} = sub { exit 130 } for qw(INT TERM HUP);

END {
    my $rc = $?;
    loop_detach($_) for keys %attached;
    $? = $rc;
}

1;
