package PVE::Storage::Qcow2Chain::Error;

use strict;
use warnings;

use overload
    '""' => sub { $_[0]->{message} . "\n" },
    'bool' => sub { 1 },
    fallback => 1;

our $VERSION = '0.1.0';

sub new {
    my ($class, $code, $errno, $file, $op, $message) = @_;
    $message =~ s/[\r\n]+/ /g;
    return bless {
        code => $code,
        errno => $errno,
        file => $file,
        op => $op,
        message => $message,
    }, $class;
}

sub code { return $_[0]->{code} }
sub errno { return $_[0]->{errno} }
sub file { return $_[0]->{file} }
sub op { return $_[0]->{op} }
sub message { return $_[0]->{message} }

1;

__END__

=head1 NAME

PVE::Storage::Qcow2Chain::Error - exceptions raised by PVE::Storage::Qcow2Chain

=head1 SYNOPSIS

    eval { PVE::Storage::Qcow2Chain::info($file) };
    if (my $err = $@) {
        die "inspecting disk failed: $err" if !ref $err;
        warn "code=" . $err->code . " file=" . $err->file . "\n";
        die "inspecting disk failed: $err";
    }

=head1 DESCRIPTION

Every failure of the C core is raised as an object of this class. It
stringifies as one line ending in a newline, so C<die "...: $@"> reads well
in Proxmox task logs, and carries the details as accessors.

=head1 METHODS

=over

=item new($code, $errno, $file, $op, $message)

Build an error (used by the XS glue).

=item code

Short error class: C<io>, C<invalid>, C<format>, C<unsupported>, C<nomem>,
C<loop>, C<notfound>, C<locked>, C<policy>, C<nospc>, C<exists>, C<busy>,
C<cancelled>.

=item errno

The saved system errno, or 0.

=item file

The file the error is about (may be empty).

=item op

The operation that failed (C<open>, C<read>, C<write>, C<lock>, ...).

=item message

The one-line message, without the trailing newline.

=back

=cut
