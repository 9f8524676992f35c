# kill -9 at random points of long commits, rebases and snapshot deletes
# (slowed down by the rate limit), many seeded runs: afterwards the next
# operation recovers, the live disk and every remaining snapshot read
# exactly as before, nothing is corrupt, and the operation can be redone.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX ();
use QcTest;
use Test::More;
use Time::HiRes qw(sleep);
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

my $dir = scratch();
chdir $dir or die;
my $V = 'vm-100-disk-0.qcow2';

# guest views and checks through qemu-img, asked once per content (QcTest::remembered)
sub view { return view_md5($_[0]) }

sub setup {
    unlink glob('*.qcow2'), glob('.*.qcow2.*');
    PVE::Storage::Qcow2Chain::create($V, size => '32M');
    guest_write($V, 0, "\x11" x (12 << 20));
    PVE::Storage::Qcow2Chain::snapshot_create($V, 'a');
    guest_write($V, 4 << 20, "\x22" x (10 << 20));
    PVE::Storage::Qcow2Chain::snapshot_create($V, 'b');
    guest_write($V, 20 << 20, "\x33" x (1 << 20));
}

my @ops = (
    ['delete b (commit)', sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'b', delete_method => 'commit', @_) }, 'b'],
    ['delete b (stream)', sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'b', delete_method => 'stream', @_) }, 'b'],
    ['delete a (stream)', sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'a', delete_method => 'stream', @_) }, 'a'],
    ['rebase onto nothing', sub { PVE::Storage::Qcow2Chain::rebase($V, backing_file => '', @_) }, undef],
    ['commit -b a', sub { PVE::Storage::Qcow2Chain::commit($V, base => "snap-a-$V", @_) }, undef],
);

my ($runs, @problems, $killed) = (0);
for my $op (@ops) {
    my ($name, $run, $gone) = @$op;
    for my $seed (1 .. 5) {
        srand($seed * 7919 + length $name);
        setup();
        my %before = (current => view($V), map { $_ => view("snap-$_-$V") } qw(a b));
        my $pid = fork() // die;
        if (!$pid) {
            eval { $run->(rate_limit => 40 << 20) };
            POSIX::_exit($@ ? 1 : 0);
        }
        sleep(rand(0.35));
        $killed += kill('KILL', $pid);
        waitpid($pid, 0);
        $runs++;
        my $label = "$name, seed $seed";
        eval { PVE::Storage::Qcow2Chain::volume_recover($V) };
        push @problems, "$label: recovery: $@" if $@;
        push @problems, "$label: current changed" if view($V) ne $before{current};
        for my $s (qw(a b)) {
            next if !-e "snap-$s-$V";
            next if defined $gone && $s eq $gone; # being deleted: its content may be merged already
            next if $name =~ /^commit/; # the base and the layers on it change by design
            push @problems, "$label: snapshot $s changed" if view("snap-$s-$V") ne $before{$s};
        }
        for my $f (glob('*.qcow2')) {
            my ($rc, $o) = qimg_check($f);
            push @problems, "$label: $f check $rc" if $rc != 0 && $rc != 3;
        }
        eval { $run->() } if !defined $gone || -e "snap-$gone-$V";
        push @problems, "$label: redo: $@" if $@;
        push @problems, "$label: current changed after redo" if view($V) ne $before{current};
        push @problems, "$label: $gone still there after redo" if defined $gone && -e "snap-$gone-$V";
    }
}
ok($killed >= $runs / 2, "$killed of $runs runs were killed before they finished");
is_deeply(\@problems, [], "$runs runs killed at random points: recovered, nothing lost, nothing corrupt");
done_testing();
