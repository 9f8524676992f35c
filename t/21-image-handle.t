# The image handle's context after open: options that only make sense for
# one call (a progress callback) do not stay behind on it, so an operation
# that reports progress on a handle cannot reach a callback that is gone.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX ();
use QcTest;
use QcHooks qw(image_metered);
use Test::More;
use PVE::Storage::Qcow2Chain::Image;

my $dir = scratch();
chdir $dir or die;

qimg('create', '-q', '-f', 'qcow2', 'img.qcow2', '4M');
qio('img.qcow2', 'write -q -P 0x5a 1M 64k', 'write -q -P 0x33 3M 4k');
qimg('convert', '-O', 'raw', 'img.qcow2', 'want.raw');

# In a child, so a crash is a failed test rather than the end of the file.
sub in_child {
    my ($code) = @_;
    my $pid = fork() // die "fork: $!";
    if (!$pid) {
        my $rc = eval { $code->() } // 100;
        print STDERR $@ if $@;
        POSIX::_exit($rc);
    }
    waitpid($pid, 0);
    return $?;
}

# (read-only: the operation opens the image again, which a write lock would refuse)
my $status = in_child(sub {
    my $calls = 0;
    my $img = PVE::Storage::Qcow2Chain::Image->open('img.qcow2', progress => sub { $calls++; return });
    image_metered($img, 'got.raw');
    $img->close;
    return $calls ? 1 : 0;
});
is($status & 127, 0, 'handle opened with progress: a metered operation on it does not crash');
is($status >> 8, 0, '.. completes (today: cancelled by the callback left behind) and calls no callback');
ok(-e 'got.raw' && same_file('got.raw', 'want.raw'), ".. and its result reads as qemu-img's");

done_testing();
