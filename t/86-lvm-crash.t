# Crash safety of the LVM plugin's snapshot operations: each operation is
# stopped before each of its lvm2 metadata changes in turn (every later
# command fails too, as after a crash of the node), then the next
# operation on the volume recovers from the journal in the volume group.
# A VM start in between (activation) must work. Afterwards the volume is
# exactly as before the operation or exactly as after it (every layer
# reading as it did, the same snapshots), every image checks clean (leaks
# allowed), and no temporary LV or journal is left. Data copies between two metadata steps are the core's, whose
# crash safety t/35 and t/81 prove.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use QcLVM;
use QcTest;
use Test::More;

if (my $why = lvm_usable()) {
    plan skip_all => $why;
}

my $dir = scratch();
chdir $dir or die;
my $MiB = 1 << 20;
my ($P, $scfg) = lvm_storage(dir => $dir, pvs => 9, pv_size => 24 * $MiB, extent => '1m');
my ($vg, $sid) = ($scfg->{vgname}, 'san');
sub locked { my ($code) = @_; return $P->cluster_lock_storage($sid, 1, undef, $code) }
sub dev { "/dev/$vg/$_[0]" }

# crash before the n-th metadata change: it and everything after it fail
my ($crash_at, $changes, $crashed) = (0, 0, 0);
push @PVE::Tools::BEFORE_RUN_COMMAND, sub {
    my ($cmd) = @_;
    die "simulated crash\n" if $crashed;
    my ($prog, @a) = ref($cmd) ? @$cmd : ($cmd);
    $prog =~ s{.*/}{};
    return if $prog =~ /^(lvs|vgs|pvs)$/ || ($prog eq 'lvchange' && grep { $_ eq '--refresh' } @a);
    $changes++;
    if ($crash_at && $changes == $crash_at) {
        $crashed = 1;
        die "simulated crash\n";
    }
};

# snapshot name => guest view, for every layer of the volume, and
# "NAME date" => its date tag; and the volume's snapshot info
my $op_start; # when the build of the scenario ended
sub state_of {
    my ($vol, $activate) = @_;
    my %v;
    PVE::Storage::LVMPlugin::activate_volume($P, $sid, $scfg, $vol) if $activate; # (recovery activates)
    my $info = $P->volume_snapshot_info($scfg, $sid, $vol);
    my %tags = map { (split /\|/, s/^\s+//r)[0, 1] } split /\n/, lvm_run('lvs', '--noheadings', '--separator', '|', '-o', 'lv_name,lv_tags', $vg);
    for my $s (keys %$info) {
        # a date the operation gave (any run of it): 'new'
        $v{"$s date"} = join(',', map { /^qc-date-(\d+)$/ ? ($1 >= $op_start ? 'new' : $1) : () } split /,/, $tags{ $info->{$s}{volname} } // '')
            if $s ne 'current';
        unlink 'v.raw';
        qimg('convert', '-f', 'qcow2', '-O', 'raw', dev($info->{$s}{volname}), 'v.raw');
        $v{$s} = slurp('v.raw');
    }
    return (\%v, $info);
}

# temporary LVs and the journal tag, from one report
sub leftovers {
    my @bad;
    for (split /\n/, lvm_run('lvs', '--noheadings', '--separator', '|', '-o', 'lv_name,vg_tags', $vg)) {
        my ($lv, $tags) = split /\|/, s/^\s+//r;
        push @bad, $lv if $lv =~ /^(qc_|del-)/;
        push @bad, 'journal tag' if ($tags // '') =~ /qcj:/ && !grep { $_ eq 'journal tag' } @bad;
    }
    return @bad;
}

sub scenario {
    my ($name, $build, $op) = @_;
    my $vol = $build->();
    sleep 1;
    $op_start = time;
    lvm_save($name);
    my ($before) = state_of($vol, 1);
    ($crash_at, $changes) = (0, 0);
    $op->($vol);
    my $n = $changes;
    my ($after) = state_of($vol, 1);
    ok($n >= 2, "$name: $n metadata changes");
    my %fail;
    for my $k (1 .. $n) {
        lvm_restore($name);
        ($crash_at, $changes, $crashed) = ($k, 0, 0);
        eval { $op->($vol) };
        my $err = $@;
        ($crash_at, $crashed) = (0, 0);
        my @f;
        push @f, "did not stop: $err" if $err !~ /simulated crash/;
        # the node restarts (nothing active) and the VM starts (qemu-server
        # activates, then builds the chain): whatever was interrupted, that works
        eval {
            PVE::Storage::LVMPlugin::deactivate_volume($P, $sid, $scfg, $vol);
            $P->activate_volume($sid, $scfg, $vol);
            die "no volume LV\n" if !-e dev($vol);
            $P->volume_snapshot_info($scfg, $sid, $vol);
        };
        push @f, "VM start failed: $@" if $@;
        eval { $P->with_volume($scfg, $sid, $vol, sub { }) };
        push @f, "recovery failed: $@" if $@;
        my ($now, $info) = eval { state_of($vol) };
        push @f, "unreadable: $@" if $@;
        ($now, $info) = ($now // {}, $info // {});
        my $canon = sub { join ',', map { "$_=" . length($_[0]{$_}) . ':' . unpack('%32C*', $_[0]{$_}) } sort keys %{ $_[0] } };
        push @f, 'neither as before nor as after: ' . $canon->($now)
            if $canon->($now) ne $canon->($before) && $canon->($now) ne $canon->($after);
        for my $s (sort keys %$info) {
            my ($rc, $o) = qimg_ok('check', '-f', 'qcow2', dev($info->{$s}{volname}));
            push @f, "$s: check $rc: $o" if $rc != 0 && $rc != 3;
        }
        my @left = leftovers();
        push @f, "left over: @left" if @left;
        $fail{"crash before change $k"} = \@f if @f;
    }
    is_deeply(\%fail, {}, "$name: a crash before any of its $n metadata changes is recovered") or diag(explain(\%fail));
    lvm_restore($name);
    locked(sub { my $w = $P->free_image($sid, $scfg, $vol, 0, 'qcow2'); $w->() if $w });
}

my $n = 100;
sub volume {
    my (@steps) = @_;
    my $vol = locked(sub { $P->alloc_image($sid, $scfg, $n++, 'qcow2', undef, 8 * 1024) });
    for my $s (@steps) {
        if (ref $s) { qio(dev($vol), @$s) } else { $P->volume_snapshot($scfg, $sid, $vol, $s) }
    }
    return $vol;
}

# a snapshot whose layer is then compacted: the snapshot's steps, then the compaction's
scenario('snapshot of a layer with holes (compacted)',
    sub { volume(['write -q -P 0x20 7M 64k'], 's0', ['write -q -P 0x21 0 6M', 'discard -q 0 5M']) },
    sub { $P->volume_snapshot($scfg, $sid, $_[0], 's1') });
scenario('rollback to the oldest snapshot',
    sub { volume(['write -q -P 0x31 0 2M'], 's1', ['write -q -P 0x32 1M 2M'], 's2', ['write -q -P 0x33 0 1M']) },
    sub { $P->volume_snapshot_rollback($scfg, $sid, $_[0], 's1') });
scenario('delete by commit (the child is smaller)',
    sub { volume(['write -q -P 0x41 0 4M'], 's1', ['write -q -P 0x42 1M 512k'], 's2', ['write -q -P 0x43 2M 64k']) },
    sub { $P->volume_snapshot_delete($scfg, $sid, $_[0], 's1') });
scenario('delete by stream (the snapshot is smaller)',
    sub { volume(['write -q -P 0x51 0 1M'], 's1', ['write -q -P 0x52 2M 512k'], 's2', ['write -q -P 0x53 0 5M']) },
    sub { $P->volume_snapshot_delete($scfg, $sid, $_[0], 's2') });
scenario('rename with a child',
    sub { volume(['write -q -P 0x61 0 1M'], 's1', ['write -q -P 0x62 0 512k'], 's2') },
    sub { my ($vol) = @_; locked(sub { $P->rename_snapshot($scfg, $sid, $vol, 's1', 'r1') }) });
# a running VM's delete of its first snapshot: QEMU committed the volume
# into it (room from activation), qemu-server renames it to 'current'
scenario('rename a snapshot to current (QEMU committed the volume into it)',
    sub {
        my $vol = volume(['write -q -P 0x71 0 1M'], 's1', ['write -q -P 0x72 512k 1M']);
        $P->activate_volume($sid, $scfg, $vol);
        qimg('commit', '-q', '-d', dev($vol));
        return $vol;
    },
    sub { my ($vol) = @_; locked(sub { $P->rename_snapshot($scfg, $sid, $vol, 's1', 'current') }) });

# an interrupted delete is not finished while a process (a VM) has a layer
# it writes open: the data stays as it was, and it finishes once closed
{
    my $vol = volume(['write -q -P 0x81 0 4M'], 's1', ['write -q -P 0x82 1M 64k']);
    my ($before) = state_of($vol, 1);
    ($crash_at, $changes, $crashed) = (4, 0, 0); # after activation, journal and lvextend: the commit is done
    eval { $P->volume_snapshot_delete($scfg, $sid, $vol, 's1') };
    like($@, qr/simulated crash/, 'a delete by commit stopped before it replaces the volume');
    ($crash_at, $crashed) = (0, 0);
    open(my $held, '<', dev($vol)) or die "$vol: $!";
    eval { $P->with_volume($scfg, $sid, $vol, sub { }) };
    like($@, qr/^volume '\Q$vol\E': '\Q$vol\E' is in use; the interrupted delete of snapshot 's1' finishes with the VM stopped/,
        'its recovery is refused while the volume is open');
    close $held;
    $P->with_volume($scfg, $sid, $vol, sub { });
    my ($now) = state_of($vol);
    is_deeply([sort keys %$now], ['current'], 'closed, the next operation finishes the delete');
    is($now->{current}, $before->{current}, 'and the volume reads as before');
    is_deeply([leftovers()], [], 'no temporary LV or journal is left');
}

# a delete by commit stopped between the volume's removal and the rename
# that replaces it: qemu-server's next call under the storage lock (a
# rename) completes it, no data left to copy
{
    my $vol = volume(['write -q -P 0x91 0 2M'], 's0', ['write -q -P 0x92 0 4M'], 's1', ['write -q -P 0x93 1M 64k']);
    my ($before) = state_of($vol, 1);
    ($crash_at, $changes, $crashed) = (5, 0, 0); # activation, journal, lvextend, the volume's removal: then the rename
    eval { $P->volume_snapshot_delete($scfg, $sid, $vol, 's1') };
    ($crash_at, $crashed) = (0, 0);
    ok(!lvm_lvs()->{$vol}, 'a delete by commit stopped with the volume removed and not yet replaced');
    locked(sub { $P->rename_snapshot($scfg, $sid, $vol, 's0', 'r0') });
    my ($now) = state_of($vol);
    is_deeply([sort grep { !/ date$/ } keys %$now], ['current', 'r0'], 'a locked rename completes the delete, then renames');
    is($now->{current}, $before->{current}, 'the volume reads as before');
    is($now->{r0}, $before->{s0}, 'and the renamed snapshot as s0 did');
    is_deeply([leftovers()], [], 'no temporary LV or journal is left');
}

# Proxmox's rename_volume (a disk reassigned to another VM) activates the
# volume while it holds the storage lock: a recovery there does not take
# the lock again (which would wait for itself and fail)
{
    my $vol = volume(['write -q -P 0xa1 0 1M']);
    ($crash_at, $changes, $crashed) = (3, 0, 0); # activation, journal: then the new overlay's lvcreate
    eval { $P->volume_snapshot($scfg, $sid, $vol, 's1') };
    like($@, qr/simulated crash/, 'a snapshot stopped after its journal was written');
    ($crash_at, $crashed) = (0, 0);
    is_deeply([leftovers()], ['journal tag'], 'its journal is left');
    my $volid = eval { locked(sub { $P->rename_volume($scfg, $sid, $vol, 200) }) };
    is($volid, "$sid:vm-200-disk-0.qcow2", 'a locked rename_volume recovers and renames') or diag($@);
    is_deeply([leftovers()], [], 'no temporary LV or journal is left');
    locked(sub { my $w = $P->free_image($sid, $scfg, 'vm-200-disk-0.qcow2', 0, 'qcow2'); $w->() if $w });
}

# qm showcmd activates a VM's volumes without holding the VM's lock: an
# activation while an offline snapshot compacts the old layer (a copy
# outside the storage lock, its journal written) must not finish that
# operation as an interrupted one (it would remove the copy, and the
# compaction's replace then the snapshot)
{
    my $vol = volume(['write -q -P 0xb1 7M 64k'], 's0', ['write -q -P 0xb2 0 6M', 'discard -q 0 5M']);
    my ($before) = state_of($vol, 1);
    my $compact = \&PVE::Storage::Qcow2Chain::compact;
    my $activated = 'not called';
    {
        no warnings 'redefine';
        local *PVE::Storage::Qcow2Chain::compact = sub {
            $activated = eval { $P->activate_volume($sid, $scfg, $vol); 1 } ? 'ok' : $@;
            return $compact->(@_);
        };
        eval { $P->volume_snapshot($scfg, $sid, $vol, 's1') };
        is($@, '', 'a snapshot whose compaction ran beside an activation');
    }
    is($activated, 'ok', 'the activation during the compaction worked');
    my ($now) = eval { state_of($vol) };
    is_deeply([sort grep { !/ date$/ } keys %{ $now // {} }], ['current', 's0', 's1'], 'every layer is there');
    is($now->{s1}, $before->{current}, 'the compacted snapshot reads as the volume did');
    is($now->{s0}, $before->{s0}, 'the older one as before');
    is_deeply([leftovers()], [], 'no temporary LV or journal is left');
}

# the same after a delete by stream copied the snapshot's data into its
# child, before the delete's last locked step: the activation finishes the
# delete, and the delete then ends without an error
{
    my $vol = volume(['write -q -P 0xc1 0 1M'], 's1', ['write -q -P 0xc2 2M 512k'], 's2', ['write -q -P 0xc3 0 5M']);
    my ($before) = state_of($vol, 1);
    my $rebase = \&PVE::Storage::Qcow2Chain::rebase;
    my $activated = 'not called';
    {
        no warnings 'redefine';
        local *PVE::Storage::Qcow2Chain::rebase = sub {
            my @r = $rebase->(@_);
            $activated = eval { $P->activate_volume($sid, $scfg, $vol); 1 } ? 'ok' : $@ if $activated eq 'not called';
            return @r;
        };
        eval { $P->volume_snapshot_delete($scfg, $sid, $vol, 's2') };
        is($@, '', 'a delete by stream finished by an activation beside it ends without an error');
    }
    is($activated, 'ok', 'the activation after the copy worked');
    my ($now) = eval { state_of($vol) };
    is_deeply([sort grep { !/ date$/ } keys %{ $now // {} }], ['current', 's1'], 'the snapshot is gone');
    is($now->{current}, $before->{current}, 'the volume reads as before');
    is($now->{s1}, $before->{s1}, 'the older snapshot as before');
    is_deeply([leftovers()], [], 'no temporary LV or journal is left');
}

done_testing();
