package PVE::Storage::Qcow2Chain::Image;

use strict;
use warnings;

use PVE::Storage::Qcow2Chain; # loads the XS part of this class

our $VERSION = '0.1.0';

sub open {
    my ($class, $file, %opt) = @_;
    my $rw = delete $opt{rw};
    my $fmt = delete $opt{format};
    my $o = PVE::Storage::Qcow2Chain::_opts('Image->open', {}, %opt);
    die "Image->open: no file given\n" if !defined($file) || $file eq '';
    return $class->_open($file, $fmt, $rw ? 1 : 0, $o);
}

1;

__END__

=head1 NAME

PVE::Storage::Qcow2Chain::Image - an open qcow2 (or raw) image and its backing chain

=head1 SYNOPSIS

    use PVE::Storage::Qcow2Chain::Image;

    my $img = PVE::Storage::Qcow2Chain::Image->open($path, rw => 1);
    $img->write(0, "hello");
    $img->write_zeroes(1 << 20, 65536);
    $img->discard(2 << 20, 1 << 20);
    $img->flush;
    my $data = $img->read(0, 5);
    $img->close;

=head1 DESCRIPTION

Guest I/O on the top image of a chain. Writes copy on write from the
backing chain (partial clusters are filled from the layers below; with
extended L2 entries only the touched subclusters are allocated) and from
internal snapshots (shared clusters are copied before writing).

Metadata is cached and reaches the disk in a crash-safe order on C<flush>
(and C<close>): refcounts first, then L2 tables, then L1; clusters are
freed only after nothing on disk points at them. A crash before C<flush>
loses the unflushed writes, never the image.

Opening read-write takes QEMU's write lock, so it fails while a VM (or
qemu-img) uses the image; read-only opens take the shared lock.

=head1 METHODS

=over

=item open($class, $file, rw => 1, format => 'qcow2', %opt)

Opens the image and its backing chain; C<%opt> are the options of
L<PVE::Storage::Qcow2Chain>.

=item size, filename

Virtual size and file name.

=item read($offset, $length)

Guest data through the chain.

=item write($offset, $data)

=item write_zeroes($offset, $length, $unmap)

Makes the range read as zeros; whole clusters become zero clusters
(released when C<$unmap> is true), partial ones get zero data.

=item discard($offset, $length)

As QEMU's discard: whole clusters only; afterwards they read as zeros on
version 3 images. Version 2 images with a backing file ignore discards.

=item grow($size)

Grows the virtual size to C<$size> bytes (never shrinks); the new area
reads as zeros.

=item flush

Makes every write so far durable.

=item close

Flushes and closes; raises the flush error if any. Dropping the object
closes too (errors are then lost).

=back

=cut
