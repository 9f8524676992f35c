package PVE::Storage::Qcow2Chain::LVMStore;

# The layer store of a qcow2 volume on a (shared, thick) LVM volume group:
# where its layers live and what they are called. The one place that knows
# the names (Proxmox's: the volume LV vm-<vmid>-disk-N.qcow2, snapshot S in
# the LV snap_vm-<vmid>-disk-N_S.qcow2, our temporaries qc_vm-..._WHAT.qcow2
# that Proxmox never lists or activates), and the layer operations the
# volume operations are built on: list, create of a capacity, rename,
# remove (saferemove as Proxmox does it), resize, activate, in-use,
# the cluster-wide lock, the journal (a tag of the volume group, which
# every node sees) and a layer's date (a tag). lvcreate, lvrename and
# activation are Proxmox's own (PVE::Storage::LVMPlugin).

use strict;
use warnings;

use MIME::Base64 qw(decode_base64 encode_base64);
use JSON::PP;
use PVE::Storage::LVMPlugin;
use PVE::Tools qw(run_command trim);

my @REPORT = ('--noheadings', '--units', 'b', '--nosuffix', '--unbuffered');

sub new {
    my ($class, $plugin, $scfg, $storeid, $volname, %o) = @_;
    my (undef, $name, $vmid) = $plugin->parse_volname($volname);
    (my $short = $name) =~ s/\.qcow2$//;
    return bless {
        plugin => $plugin, scfg => $scfg, storeid => $storeid, vg => $scfg->{vgname},
        volname => $name, short => $short, vmid => $vmid, locked => $o{locked} ? 1 : 0,
        no_copy => ($o{locked} || $o{no_copy}) ? 1 : 0,
    }, $class;
}

# ---- names ----------------------------------------------------------------

# The LV of snapshot $snap ('current' or undef: the volume itself).
sub layer_name {
    my ($self, $snap) = @_;
    return $self->{volname} if !defined($snap) || $snap eq 'current';
    return "snap_$self->{short}_$snap.qcow2";
}

# 'current', the snapshot name of a snapshot LV of this volume, or undef.
sub snap_of {
    my ($self, $lv) = @_;
    return 'current' if $lv eq $self->{volname};
    return $1 if $lv =~ m/^snap_\Q$self->{short}\E_(.+)\.qcow2$/;
    return undef;
}

# Temporary LVs of an operation (new overlay, replaced layer, compacted copy).
sub temp_name {
    my ($self, $what) = @_;
    return "qc_$self->{short}_$what.qcow2";
}

sub is_temp { return $_[1] =~ m/^qc_\Q$_[0]{short}\E_[a-z]+\.qcow2$/ }

# Where replace puts an LV still open: qc_..._old, qc_..._olda, ...
sub is_old { return $_[1] =~ m/^qc_\Q$_[0]{short}\E_old[a-z]?\.qcow2$/ }

sub path {
    my ($self, $lv) = @_;
    return "/dev/$self->{vg}/$lv";
}

# The LV a backing name stands for: an LV name (ours, Proxmox's), or its
# device path (QEMU's block-commit writes the base's file name until
# qemu-server's rename makes it relative again); undef for anything else.
sub backing_lv {
    my ($self, $name) = @_;
    return undef if !defined $name;
    $name =~ s{^/dev/\Q$self->{vg}\E/(?=[^/]+$)}{};
    return $name !~ m{/} ? $name : undef;
}

# ---- layers ---------------------------------------------------------------

# { lv => { size, tags => [..] } } of this volume's LVs (layers and
# temporaries), as of the last change this store made. The same report
# gives the group's extent size and tags (vg_info), one lvm2 command.
sub list {
    my ($self) = @_;
    return $self->{lvs} if $self->{lvs};
    my (%lv, $vg);
    $self->{del} = {};
    run_command(['/sbin/lvs', @REPORT, '--separator', '|', '-o', 'lv_name,lv_size,lv_tags,vg_extent_size,vg_tags', $self->{vg}],
        outfunc => sub {
            my ($name, $size, $tags, $extent, $vgtags) = split /\|/, trim($_[0]);
            return if !defined $extent;
            $vg //= { extent => int($extent), tags => [grep { length } split /,/, $vgtags // ''] };
            $self->{del}{$name} = 1 if $name =~ m/^del-/; # names saferemove must not take
            return if !defined($self->snap_of($name)) && !$self->is_temp($name);
            $lv{$name} = { size => int($size), tags => [grep { length } split /,/, $tags // ''] };
        },
        errfunc => sub { });
    $self->{vginfo} //= $vg if $vg;
    return $self->{lvs} = \%lv;
}

# Forget what was read (LVs, the group's tags): the next look reads it anew.
sub changed {
    my ($self) = @_;
    delete @$self{qw(lvs vginfo)};
    return;
}

# Run an lvm2 change; $update then edits the cached listing as the change
# left the group (no new report), which is dropped instead if it failed.
sub change {
    my ($self, $run, $update) = @_;
    eval { $run->() };
    if (my $err = $@) {
        $self->changed;
        die $err;
    }
    $update->($self->{lvs}) if $self->{lvs};
    return;
}

sub exists_lv {
    my ($self, $lv) = @_;
    return exists $self->list->{$lv};
}

# The group's extent size and tags (the journal), read once per store
# (with the listing when the group has LVs).
sub vg_info {
    my ($self) = @_;
    $self->list if !$self->{vginfo};
    return $self->{vginfo} //= do {
        my ($e, $tags);
        run_command(['/sbin/vgs', @REPORT, '--separator', '|', '-o', 'vg_extent_size,vg_tags', $self->{vg}],
            outfunc => sub { ($e, $tags) = split /\|/, trim($_[0]) }, errfunc => sub { });
        die "no such volume group '$self->{vg}'\n" if !defined $e;
        { extent => int($e), tags => [grep { length } split /,/, $tags // ''] };
    };
}

sub extent { return $_[0]->vg_info->{extent} }

sub round_extent {
    my ($self, $bytes) = @_;
    my $e = $self->extent;
    return int(($bytes + $e - 1) / $e) * $e;
}

# A new LV of at least $bytes, tagged as Proxmox tags a volume chain's LVs
# (and with the date $sec, when given).
sub create {
    my ($self, $lv, $bytes, $sec) = @_;
    PVE::Storage::LVMPlugin::lvcreate($self->{vg}, $lv, int(($bytes + 1023) / 1024),
        ["pve-vm-$self->{vmid}", "\@pve-$self->{volname}", defined($sec) ? "qc-date-$sec" : ()]);
    $self->changed;
    return;
}

sub rename {
    my ($self, $from, $to) = @_;
    $self->change(sub { PVE::Storage::LVMPlugin::lvrename($self->{scfg}, $from, $to) },
        sub { $_[0]{$to} = delete $_[0]{$from} if $_[0]{$from} });
    return;
}

# Remove an LV. With saferemove, as Proxmox: renamed to del-<lv> now, and the
# returned worker zeroes it and removes it (under the lock) later. The same
# name can be removed again before that worker is done (a volume replaced
# twice): then del-2-<lv>, del-3-<lv>, ...
#
# An LV gone already (a recovery beside a running operation finished it
# first) counts as removed.
sub remove {
    my ($self, $lv) = @_;
    my $vg = $self->{vg};
    my $gone = sub { # the change failed: fine if $lv is gone
        my ($err) = @_;
        die $err if $self->exists_lv($lv);
        return undef;
    };
    if (!$self->{scfg}{saferemove}) {
        eval {
            $self->change(sub { run_command(['/sbin/lvremove', '-f', "$vg/$lv"], errmsg => "lvremove '$vg/$lv' error") },
                sub { delete $_[0]{$lv} });
        };
        return $@ ? $gone->($@) : undef;
    }
    $self->list;
    my $del = "del-$lv";
    for (my $i = 2; $self->{del}{$del}; $i++) { $del = "del-$i-$lv" }
    eval {
        $self->change(sub { run_command(['/sbin/lvrename', $vg, $lv, $del], errmsg => "lvrename '$vg/$lv' error") },
            sub { delete $_[0]{$lv} });
    };
    return $gone->($@) if $@;
    $self->{del}{$del} = 1;
    my $self_copy = { %$self, locked => 0 };
    return sub {
        my $path = "/dev/$vg/$del";
        run_command(['/sbin/lvchange', '-aly', $path], errmsg => "can't activate LV '$path' to zero-out its data");
        run_command(['/sbin/lvchange', '--refresh', $path], errmsg => "can't refresh LV '$path' to zero-out its data");
        my $step = ($self->{scfg}{'saferemove-stepsize'} // 32) << 20;
        eval { run_command(['blkdiscard', $path, '--zeroout', '--step', $step]) };
        warn $@ if $@;
        bless($self_copy, ref $self)->lock(sub {
            run_command(['/sbin/lvremove', '-f', "$vg/$del"], errmsg => "lvremove '$vg/$del' error");
        });
    };
}

# The complete LV $new takes $lv's place: $lv goes first, then the rename
# (two lvm2 steps; a rename out of the way costs Proxmox's lvrename, a
# listing and a rename). In between only the caller's journal knows that
# $new is $lv now. An $lv open on this node is refused, unless
# $o{allow_open} (QEMU switched to $new already but did not let go of
# $lv): then it is renamed out of the way, removed once closed
# (remove_old). Returns the saferemove workers.
sub replace {
    my ($self, $lv, $new, %o) = @_;
    my @w;
    if ($self->exists_lv($lv) && $self->in_use($lv)) {
        die "volume '$self->{volname}': '$lv' is in use; stop the VM first\n" if !$o{allow_open};
        my ($old) = grep { !$self->exists_lv($_) } map { $self->temp_name("old$_") } ('', 'a' .. 'z');
        die "volume '$self->{volname}': '$lv' is in use, and so are the 27 LVs it replaced before; stop the VM first\n" if !$old;
        $self->rename($lv, $old);
    } elsif ($self->exists_lv($lv)) {
        push @w, $self->remove($lv);
    }
    $self->rename($new, $lv);
    return (@w, $self->remove_old);
}

# Remove what replace renamed out of the way, unless still open.
sub remove_old {
    my ($self) = @_;
    return map { $self->remove($_) } grep { $self->is_old($_) && !$self->in_use($_) } sort keys %{ $self->list };
}

# Grow (lvextend) or shrink (lvreduce) an LV to $bytes, rounded up to extents.
sub resize {
    my ($self, $lv, $bytes) = @_;
    my $have = $self->list->{$lv}{size} // die "LV '$lv' does not exist\n";
    my $want = $self->round_extent($bytes);
    return if $want == $have;
    my @cmd = $want > $have ? ('/sbin/lvextend') : ('/sbin/lvreduce', '-f');
    $self->change(sub { run_command([@cmd, '-L', "${want}b", $self->path($lv)], errmsg => "error resizing volume '" . $self->path($lv) . "'") },
        sub { $_[0]{$lv}{size} = $want });
    return;
}

sub activate {
    my ($self, $lv) = @_;
    my $path = $self->path($lv);
    run_command(['/sbin/lvchange', '-aey', $path], errmsg => "can't activate LV '$path'");
    run_command(['/sbin/lvchange', '--refresh', $path], errmsg => "can't refresh LV '$path'");
    return;
}

# Does a process of this node have the layer's device open (a running VM:
# Proxmox's QEMU takes no image locks)?
sub in_use {
    my ($self, $lv) = @_;
    my @st = stat($self->path($lv)) or return 0;
    my $rdev = $st[6];
    opendir(my $proc, '/proc') or return 0;
    for my $pid (grep { /^\d+$/ } readdir $proc) {
        opendir(my $fds, "/proc/$pid/fd") or next;
        for my $fd (grep { /^\d+$/ } readdir $fds) {
            my @f = stat("/proc/$pid/fd/$fd") or next;
            return 1 if -b _ && $f[6] == $rdev;
        }
    }
    return 0;
}

# ---- lock, journal, dates -------------------------------------------------

# Run $code under the storage's cluster-wide lock (unless the caller holds it).
sub lock {
    my ($self, $code) = @_;
    return $code->() if $self->{locked};
    my $p = $self->{plugin};
    # (no re-reading here: Proxmox's VM lock keeps other operations off this volume)
    return $p->cluster_lock_storage($self->{storeid}, $self->{scfg}{shared}, undef, sub {
        local $self->{locked} = 1;
        $code->();
    });
}

sub journal_prefix { return "qcj:$_[0]{volname}:" }

sub journal_tags {
    my ($self) = @_;
    my $p = $self->journal_prefix;
    return grep { index($_, $p) == 0 } @{ $self->vg_info->{tags} };
}

# The record of an interrupted operation on this volume, or undef.
sub journal_read {
    my ($self) = @_;
    my $p = $self->journal_prefix;
    my ($tag) = $self->journal_tags;
    return undef if !defined $tag;
    my $j = eval { decode_json(decode_base64(substr($tag, length $p))) };
    die "unreadable journal of an interrupted operation on '$self->{volname}' (volume group tag '$tag'); "
        . "inspect and remove it by hand\n" if ref($j) ne 'HASH';
    return $j;
}

sub journal_write {
    my ($self, $j) = @_;
    die "journal written outside the storage lock\n" if !$self->{locked};
    my @old = $self->journal_tags;
    my $tag = $self->journal_prefix . encode_base64(JSON::PP->new->canonical->encode($j), '');
    run_command(['/sbin/vgchange', '--addtag', $tag, (map { ('--deltag', $_) } @old), $self->{vg}],
        errmsg => "can't record the operation on '$self->{volname}'", outfunc => sub { });
    my %gone = map { $_ => 1 } @old;
    $self->vg_info->{tags} = [(grep { !$gone{$_} } @{ $self->vg_info->{tags} }), $tag];
    return;
}

sub journal_clear {
    my ($self) = @_;
    my @old = $self->journal_tags;
    return if !@old;
    run_command(['/sbin/vgchange', (map { ('--deltag', $_) } @old), $self->{vg}],
        errmsg => "can't clear the journal of '$self->{volname}'", outfunc => sub { });
    my %gone = map { $_ => 1 } @old;
    $self->vg_info->{tags} = [grep { !$gone{$_} } @{ $self->vg_info->{tags} }];
    return;
}

# When a snapshot was taken (seconds), from its LV's tag; undef if not
# recorded, and for the volume itself (which keeps the tag of the snapshot
# LV it was renamed from until it is a snapshot again: set_date replaces it).
sub date {
    my ($self, $lv) = @_;
    return undef if $lv eq $self->{volname};
    my ($t) = map { /^qc-date-(\d+)$/ ? $1 : () } @{ ($self->list->{$lv} // {})->{tags} // [] };
    return $t;
}

sub set_date {
    my ($self, $lv, $sec) = @_;
    return if $lv eq $self->{volname};
    my @old = grep { /^qc-date-/ } @{ ($self->list->{$lv} // {})->{tags} // [] };
    return if defined($sec) && "@old" eq "qc-date-$sec";
    my @add = defined($sec) ? ('--addtag', "qc-date-$sec") : ();
    return if !@add && !@old;
    my %gone = map { $_ => 1 } @old;
    $self->change(sub {
        run_command(['/sbin/lvchange', @add, (map { ('--deltag', $_) } @old), "$self->{vg}/$lv"], outfunc => sub { },
            errmsg => "can't tag '$lv'");
    }, sub { $_[0]{$lv}{tags} = [(grep { !$gone{$_} } @{ $_[0]{$lv}{tags} }), defined($sec) ? "qc-date-$sec" : ()] if $_[0]{$lv} });
    return;
}

1;

__END__

=head1 NAME

PVE::Storage::Qcow2Chain::LVMStore - the layers of a qcow2 volume on an LVM volume group

=head1 DESCRIPTION

Used by L<PVE::Storage::Qcow2Chain::LVMPlugin>: the naming of a volume's
logical volumes (Proxmox's), and the layer operations its volume
operations are built on, each running Proxmox's lvm2 commands.

=head1 METHODS

=over

=item new($plugin_class, $scfg, $storeid, $volname, locked => 1)

C<locked>: the caller already holds the storage lock. C<no_copy>: the
caller copies no layer data (set with C<locked>: a locked section stays
short; and at a VM's start).

=item layer_name($snap), snap_of($lv), temp_name($what), is_temp($lv), is_old($lv), path($lv), backing_lv($name)

Names: C<layer_name('current')> is the volume's LV, C<layer_name(S)>
C<snap_E<lt>volumeE<gt>_S.qcow2>; C<snap_of> parses them back.

=item list, changed, change($run, $update), exists_lv($lv), vg_info, extent, round_extent($bytes)

This volume's LVs C<{ lv =E<gt> { size, tags } }> (cached: C<changed>
drops the cache, the group's tags with it, C<change> runs an lvm2 change
and edits the cache as it left the group); the group's extent size and
tags.

=item create($lv, $bytes, $date), rename($from, $to), remove($lv), replace($lv, $new, allow_open => 1), remove_old, resize($lv, $bytes), activate($lv)

LV operations (C<remove> returns the saferemove worker, if any; C<replace> and C<remove_old> the list of them).

=item in_use($lv)

Whether a process on this node has the LV's device open.

=item lock($code), journal_prefix, journal_tags, journal_read, journal_write($record), journal_clear, date($lv), set_date($lv, $sec)

The storage lock, the volume's journal (a volume group tag), snapshot dates (LV tags).

=back

=cut
