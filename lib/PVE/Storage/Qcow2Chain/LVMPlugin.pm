package PVE::Storage::Qcow2Chain::LVMPlugin;

# Proxmox's LVM storage (shared thick LVM on a SAN) with
# 'snapshot-as-volume-chain', done natively: snapshots of qcow2 volumes as
# a chain of LVs with Proxmox's names, tags and activation, but rollback to
# any snapshot, deletes anywhere in the tree moving the smaller layer,
# snapshot LVs shrunk to what they hold (not the whole disk), and a journal
# every node sees, so that a crash at any step is completed or undone by
# the next operation. LVM metadata steps run under the cluster-wide
# storage lock, data copies outside it. Layer names and LV operations are
# in PVE::Storage::Qcow2Chain::LVMStore; the qcow2 work in the core.

use strict;
use warnings;

use PVE::Storage::LVMPlugin;
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;
use PVE::Storage::Qcow2Chain::LVMStore;

use base qw(PVE::Storage::LVMPlugin);

# Set while Proxmox's code holds the storage lock and calls activate_volume
# (rename_volume): its recovery must not take the lock again.
our $UNDER_LOCK = 0;

our $VERSION = '0.1.0';

my $CHAIN = 'snapshot-as-volume-chain';
my $OVERLAY = { cluster_size => 128 * 1024, extended_l2 => 1 }; # Proxmox's overlay options

# ---- registration ------------------------------------------------------

sub api {
    my $have = eval { PVE::Storage::APIVER() } // 15;
    return $have < 15 ? $have : 15;
}

sub type { return 'qcow2lvm' }

sub plugindata { return PVE::Storage::LVMPlugin->plugindata() }

sub properties { return {} } # all of them are the LVM plugin's

sub options { return { %{ PVE::Storage::LVMPlugin->options() } } }

# ---- helpers -----------------------------------------------------------

sub chain_enabled { return $_[0]->{$CHAIN} ? 1 : 0 }

sub is_qcow2 { return $_[0] =~ m/\.qcow2$/ }

# Core errors become the plain one-line strings Proxmox's callers expect.
sub core {
    my ($code) = @_;
    my @r = eval { $code->() };
    if (my $err = $@) {
        die ref($err) ? "$err" : $err;
    }
    return wantarray ? @r : $r[0];
}

sub store {
    my ($class, $scfg, $storeid, $volname, %o) = @_;
    return PVE::Storage::Qcow2Chain::LVMStore->new($class, $scfg, $storeid, $volname, %o);
}

# Preallocation of new images: off unless the storage says metadata. On a
# device, clusters are then allocated in order, so a snapshot's LV shrinks
# to what it holds by lvreduce alone, and no L2 entry points at old data.
sub prealloc {
    my ($scfg) = @_;
    return ($scfg->{preallocation} // 'off') eq 'off' ? 'off' : 'metadata';
}

# Header facts of a layer (no backing opened, shared with a running VM).
sub layer_info {
    my ($path) = @_;
    my $i = core(sub { PVE::Storage::Qcow2Chain::info($path, format => 'qcow2', force_share => 1) });
    my $d = $i->{'format-specific'}{data} // {};
    return {
        size => $i->{'virtual-size'}, backing => $i->{'backing-filename'}, cluster_size => $i->{'cluster-size'},
        extended_l2 => $d->{'extended-l2'} ? 1 : 0, compat => $d->{compat},
    };
}

# Bytes an LV holding a layer of this format needs to take any write (Proxmox sizes LVs so).
sub full_size {
    my ($fmt, $size) = @_;
    return core(sub {
        PVE::Storage::Qcow2Chain::measure(undef, size => $size, output_format => 'qcow2',
            cluster_size => $fmt->{cluster_size}, extended_l2 => $fmt->{extended_l2}, compat => $fmt->{compat} // '1.1');
    })->{'fully-allocated'};
}

# Bytes the layer at $path needs as a copy in format $fmt (its own clusters only).
sub layer_need {
    my ($path, $fmt) = @_;
    return core(sub {
        PVE::Storage::Qcow2Chain::measure($path, layer => 1, output_format => 'qcow2',
            cluster_size => $fmt->{cluster_size}, extended_l2 => $fmt->{extended_l2}, compat => $fmt->{compat} // '1.1');
    })->{required};
}

# Data bytes of a layer: what moving it costs.
sub layer_data {
    my ($path, $fmt, $size) = @_;
    my $empty = core(sub {
        PVE::Storage::Qcow2Chain::measure(undef, size => $size, output_format => 'qcow2',
            cluster_size => $fmt->{cluster_size}, extended_l2 => $fmt->{extended_l2}, compat => $fmt->{compat} // '1.1');
    })->{required};
    return layer_need($path, $fmt) - $empty;
}

sub image_end {
    my ($path) = @_;
    return core(sub { PVE::Storage::Qcow2Chain::check($path, format => 'qcow2') })->{'image-end-offset'};
}

sub run_cleanup {
    my (@workers) = grep { $_ } @_;
    return if !@workers;
    my $all = sub { $_->() for @workers };
    my $rpcenv = eval { require PVE::RPCEnvironment; PVE::RPCEnvironment::get() };
    if ($rpcenv) {
        $rpcenv->fork_worker('imgdel', undef, $rpcenv->get_user(), $all);
    } else {
        $all->();
    }
    return;
}

# ---- the tree ------------------------------------------------------------

# The volume's layers (current and snapshots) and how they stack:
# { snap => { lv, path, parent, children => [], size, fmt, date } }. Every
# backing name must be another layer of this volume: no layer leads the
# engine to anything else on the host.
sub tree {
    my ($class, $st) = @_;
    my $lvs = $st->list;
    my %t;
    for my $lv (keys %$lvs) {
        my $snap = $st->snap_of($lv) // next;
        my $path = $st->path($lv);
        die "volume '$st->{volname}': layer '$lv' is not active\n" if !-e $path;
        my $i = layer_info($path);
        $t{$snap} = { lv => $lv, path => $path, size => $i->{size}, backing => $i->{backing}, fmt => $i,
            children => [], date => $st->date($lv) };
    }
    for my $snap (keys %t) {
        my $b = $t{$snap}{backing} // next;
        my $blv = $st->backing_lv($b);
        my $p = defined $blv ? $st->snap_of($blv) : undef;
        die "volume '$st->{volname}': backing file '$b' of '$t{$snap}{lv}' is not a layer of this volume\n"
            if !defined($p) || !$t{$p};
        $t{$snap}{parent} = $p;
        push @{ $t{$p}{children} }, $snap;
    }
    return \%t;
}

# Activate the chain (Proxmox's way), finish an interrupted operation, run $code.
sub with_volume {
    my ($class, $scfg, $storeid, $volname, $code, %o) = @_;
    my $st = $class->store($scfg, $storeid, $volname, %o);
    PVE::Storage::LVMPlugin::activate_volume($class, $storeid, $scfg, $volname) if !$o{no_activate};
    $class->recover($st);
    return $code->($st);
}

# ---- recovery ------------------------------------------------------------

# Complete or undo what the journal says was interrupted. Every step below
# looks at what exists, so running it again after another crash is fine.
# With metadata_only, an interrupted data copy is left for later.
sub recover {
    my ($class, $st, %o) = @_;
    my $j = $st->journal_read;
    if ($j && !$st->{locked}) {
        # as the group is under the lock: an operation still running (not every
        # caller holds the VM's lock: qm showcmd activates) may have ended it
        $j = $st->lock(sub { $st->changed; $st->journal_read });
    }
    if (!$j) { # an LV replace left open goes once it is closed
        run_cleanup(@{ $st->lock(sub { [$st->remove_old] }) }) if grep { $st->is_old($_) } keys %{ $st->list };
        return;
    }
    return if $o{metadata_only} && copy_left($st, $j);
    my $op = $j->{op} // '';
    my @cleanup;
    if ($op eq 'snapshot' || $op eq 'rollback' || $op eq 'compact' || $op eq 'rename-current') {
        # $new was to take $target's place ($target renamed to a snapshot or
        # out of the way, or removed; then $new renamed to $target)
        my ($target, $new) = @$j{qw(target new)};
        $st->lock(sub {
            my $lvs = $st->list;
            if (!$lvs->{$target} && $lvs->{$new}) {
                $st->rename($new, $target); # $target gone: $new was complete, roll forward
            } elsif ($lvs->{$new} && $op ne 'rename-current') {
                push @cleanup, $st->remove($new); # before: the new LV may be incomplete
            }
            my $snap_lv = $op eq 'snapshot' ? $st->layer_name($j->{snap}) : undef;
            $st->set_date($snap_lv, $j->{date}) if $snap_lv && $st->exists_lv($snap_lv); # taken: its date
            push @cleanup, $st->remove_old;
            $st->journal_clear;
        });
    } elsif ($op eq 'rename') {
        $st->lock(sub {
            my $lvs = $st->list;
            $st->rename($j->{from}, $j->{to}) if $lvs->{ $j->{from} } && !$lvs->{ $j->{to} };
            $class->repoint($st, $j->{from}, $j->{to});
            $st->journal_clear;
        });
    } elsif ($op eq 'delete') {
        # a copy left writes layers a VM may use, and takes long; the final
        # renames and removal touch no layer in use (and may run under the
        # caller's lock)
        if (copy_left($st, $j)) {
            die "an interrupted delete of snapshot '$j->{snap}' on '$st->{volname}' needs its data copied; "
                . "run the snapshot deletion again outside this locked call\n" if $st->{locked};
            refuse_in_use($st, "the interrupted delete of snapshot '$j->{snap}' finishes with the VM stopped",
                map { $st->layer_name($_) } $j->{snap}, @{ $j->{children} // [] });
        }
        $class->delete_steps($st, $j);
    } else {
        die "unknown interrupted operation '$op' on '$st->{volname}'\n";
    }
    run_cleanup(@cleanup);
    return;
}

# Point every layer whose backing name is $from at $to (a header write).
# A layer a running VM holds keeps its name: QEMU changes it itself.
sub repoint {
    my ($class, $st, $from, $to) = @_;
    for my $lv (keys %{ $st->list }) {
        next if !defined($st->snap_of($lv)) || !-e $st->path($lv);
        my $b = backing_of($st, $lv);
        next if !defined($b) || $b ne $from || $st->in_use($lv);
        core(sub { PVE::Storage::Qcow2Chain::rebase($st->path($lv), backing_file => $to, backing_fmt => 'qcow2', unsafe => 1) });
    }
    return;
}

# The LV layer $lv is backed by (undef: none, or not one of the group's).
sub backing_of {
    my ($st, $lv) = @_;
    return $st->backing_lv(layer_info($st->path($lv))->{backing});
}

# Refuse to change layers a process of this node has open (a running VM).
sub refuse_in_use {
    my ($st, $what, @lvs) = @_;
    for my $lv (grep { $st->exists_lv($_) } @lvs) {
        die "volume '$st->{volname}': '$lv' is in use; $what\n" if $st->in_use($lv);
    }
    return;
}

# ---- shrinking -----------------------------------------------------------

# A snapshot's LV down to what its layer holds: lvreduce to the image's end
# when the data lies packed (our layers allocate in order), else a
# compacted copy takes its place. Never a layer in use, never the volume,
# not where the caller copies no data (a compaction copies).
sub shrink {
    my ($class, $st, $lv) = @_;
    return if $st->{no_copy} || $lv eq $st->{volname} || $st->in_use($lv);
    my $path = $st->path($lv);
    my $fmt = layer_info($path);
    my $size = $st->list->{$lv}{size} // return;
    my $end = $st->round_extent(image_end($path));
    my $need = $st->round_extent(layer_need($path, $fmt));
    if ($end <= $need + ($need >> 2)) {
        $st->lock(sub { $st->resize($lv, $end) }) if $end < $size;
        return;
    }
    return if $need >= $size - $st->extent; # a copy would save nothing
    my $cpt = $st->temp_name('cpt');
    $st->lock(sub {
        $st->journal_write({ op => 'compact', target => $lv, new => $cpt });
        $st->create($cpt, $need, $st->date($lv)); # the copy carries the snapshot's date
    });
    core(sub { PVE::Storage::Qcow2Chain::compact($path, $st->path($cpt)) });
    my $workers = $st->lock(sub {
        my @w = $st->replace($lv, $cpt);
        $st->journal_clear;
        \@w;
    });
    run_cleanup(@$workers);
    return;
}

# ---- names and paths -------------------------------------------------------

sub parse_volname {
    my ($class, $volname) = @_;
    die "'$volname' is a snapshot volume, not a volume!\n" if $volname =~ m/^(snap|qc)_vm-\d+-/;
    return $class->SUPER::parse_volname($volname);
}

sub filesystem_path {
    my ($class, $scfg, $volname, $snapname) = @_;
    my (undef, $name, $vmid, undef, undef, undef, $format) = $class->parse_volname($volname);
    die "snapshot is working with qcow2 format only" if defined($snapname) && $format ne 'qcow2';
    my $st = $class->store($scfg, undef, $volname);
    my $path = $st->path($snapname ? $st->layer_name($snapname) : $name);
    return wantarray ? ($path, $vmid, 'images') : $path;
}

# ---- volumes ---------------------------------------------------------------

# Called with the storage lock held (vdisk_alloc). An LV of qemu-img
# measure's fully-allocated size, the qcow2 written on it by the core.
sub alloc_image {
    my ($class, $storeid, $scfg, $vmid, $fmt, $name, $size) = @_;
    return $class->SUPER::alloc_image($storeid, $scfg, $vmid, $fmt, $name, $size)
        if $fmt ne 'qcow2' || !chain_enabled($scfg);
    $name = $class->find_free_diskname($storeid, $scfg, $vmid, $fmt) if !$name;
    die "volume name '$name' does not match requested format 'qcow2'\n" if !is_qcow2($name);
    my $st = $class->store($scfg, $storeid, $name, locked => 1);
    die "volume '$name' already exists\n" if $st->exists_lv($name);
    my $bytes = full_size({ cluster_size => 65536 }, $size * 1024);
    my $vg = $scfg->{vgname};
    my $vgs = PVE::Storage::LVMPlugin::lvm_vgs();
    die "no such volume group '$vg'\n" if !defined($vgs->{$vg});
    die "not enough free space ($vgs->{$vg}{free} < $bytes)\n" if $vgs->{$vg}{free} < $bytes;
    $st->create($name, $bytes);
    eval {
        core(sub { PVE::Storage::Qcow2Chain::create($st->path($name), size => $size * 1024, preallocation => prealloc($scfg)) });
    };
    if (my $err = $@) {
        eval { $st->remove($name) };
        die $err;
    }
    return $name;
}

# Called with the storage lock held (vdisk_free): every LV of the volume
# (the tree, branches included, and temporaries), and its journal.
sub free_image {
    my ($class, $storeid, $scfg, $volname, $isBase, $format) = @_;
    return $class->SUPER::free_image($storeid, $scfg, $volname, $isBase, $format)
        if ($format // '') ne 'qcow2' || !chain_enabled($scfg);
    my $st = $class->store($scfg, $storeid, $volname, locked => 1);
    my @workers = grep { $_ } map { $st->remove($_) } sort keys %{ $st->list };
    $st->journal_clear;
    return if !@workers;
    return sub { $_->() for @workers };
}

# Called with the storage lock held (PVE::Storage::rename_volume); Proxmox's
# activates the volume (ours may recover, and must not lock again).
sub rename_volume {
    my ($class, @args) = @_;
    local $UNDER_LOCK = 1;
    return $class->SUPER::rename_volume(@args);
}

sub volume_size_info {
    my ($class, $scfg, $storeid, $volname, $timeout) = @_;
    my $format = ($class->parse_volname($volname))[6];
    return $class->SUPER::volume_size_info($scfg, $storeid, $volname, $timeout) if $format ne 'qcow2';
    my $path = $class->filesystem_path($scfg, $volname);
    my $i = eval { core(sub { PVE::Storage::Qcow2Chain::info($path, format => 'qcow2', force_share => 1) }) };
    if (!$i) {
        warn $@;
        return undef;
    }
    return wantarray ? ($i->{'virtual-size'}, 'qcow2', $i->{'actual-size'}, $i->{'backing-filename'}) : $i->{'virtual-size'};
}

# The LV grows to the measured size (under the lock), then the image (not
# while QEMU has it: it grows the image itself). With $snapname a snapshot's
# LV, before QEMU commits a larger child into it.
sub volume_resize {
    my ($class, $scfg, $storeid, $volname, $size, $running, $snapname) = @_;
    my $format = ($class->parse_volname($volname))[6];
    return $class->SUPER::volume_resize($scfg, $storeid, $volname, $size, $running, $snapname)
        if $format ne 'qcow2' || !chain_enabled($scfg);
    my $st = $class->store($scfg, $storeid, $volname);
    my $lv = $st->layer_name($snapname);
    my $path = $st->path($lv);
    my $fmt = layer_info($path);
    die "shrinking '$volname' is not supported\n" if $size < $fmt->{size};
    my $bytes = full_size($fmt, $size);
    $st->lock(sub { $st->resize($lv, $bytes) if $bytes > $st->list->{$lv}{size} });
    if (!$running) {
        core(sub {
            my $img = PVE::Storage::Qcow2Chain::Image->open($path, rw => 1, format => 'qcow2');
            $img->grow($size);
            $img->close;
        });
    }
    return 1;
}

# A running VM's QEMU merges layers itself (block-commit, block-stream)
# into snapshot LVs: while the chain is active they get room for any
# merge (the measured full size; best effort), and give it back when the
# chain is deactivated (lvreduce to what they hold).
#
# A crash can leave the volume's LV missing (in the instant a layer takes
# its place) or a backing name not yet repointed: what the journal names
# is finished here when it is LVM metadata only, so that the VM starts; an
# interrupted data copy waits for the next snapshot operation.
sub activate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache, $hints) = @_;
    $class->SUPER::activate_volume($storeid, $scfg, $volname, $snapname, $cache, $hints);
    return if !chain_enabled($scfg) || !is_qcow2($volname);
    my $st = $class->store($scfg, $storeid, $volname, locked => $UNDER_LOCK, no_copy => 1);
    if ($st->journal_read) {
        $class->recover($st, metadata_only => 1);
        $class->SUPER::activate_volume($storeid, $scfg, $volname, $snapname, $cache, $hints); # renamed LVs
        $st->changed;
    }
    my $lvs = $st->list;
    my %grow;
    for my $lv (keys %$lvs) {
        my $snap = $st->snap_of($lv);
        next if !defined($snap) || $snap eq 'current' || !-e $st->path($lv);
        my $fmt = eval { layer_info($st->path($lv)) } or next;
        my $bytes = full_size($fmt, $fmt->{size});
        $grow{$lv} = $bytes if $bytes > $lvs->{$lv}{size};
    }
    return if !%grow;
    eval { $st->lock(sub { $st->resize($_, $grow{$_}) for sort keys %grow }) };
    warn "volume '$volname': snapshot LVs not grown for merges while running - $@" if $@;
    return;
}

sub deactivate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache) = @_;
    if (chain_enabled($scfg) && is_qcow2($volname)) {
        my $st = $class->store($scfg, $storeid, $volname);
        for my $lv (sort keys %{ $st->list }) {
            my $snap = $st->snap_of($lv);
            next if !defined($snap) || $snap eq 'current' || !-e $st->path($lv) || $st->in_use($lv);
            my $end = eval { $st->round_extent(image_end($st->path($lv))) } or next;
            eval { $st->lock(sub { $st->resize($lv, $end) if $end < $st->list->{$lv}{size} }) };
            warn $@ if $@;
        }
    }
    return $class->SUPER::deactivate_volume($storeid, $scfg, $volname, $snapname, $cache);
}

# ---- snapshots -------------------------------------------------------------

sub check_snap_name {
    my ($snap) = @_;
    die "invalid snapshot name '$snap'\n"
        if $snap !~ m/^[a-z][a-z0-9_-]*$/i || length($snap) > 40 || lc($snap) eq 'current';
    return;
}

# A new overlay LV $new on layer $backing_lv (size $size), measured as Proxmox does.
sub new_overlay {
    my ($class, $st, $scfg, $new, $backing_lv, $size) = @_;
    $st->create($new, full_size($OVERLAY, $size)); # active once created
    core(sub {
        PVE::Storage::Qcow2Chain::create($st->path($new), size => $size, backing_file => $backing_lv,
            backing_fmt => 'qcow2', backing_unchecked => 1, %$OVERLAY, preallocation => prealloc($scfg));
    });
    return;
}

# The live data becomes snapshot $snap (the volume's LV is renamed), a new
# overlay takes the volume's name: made first under a temporary name, so
# the volume is missing only between two renames in one locked section.
# Offline, the snapshot's LV then shrinks to what it holds.
sub volume_snapshot {
    my ($class, $scfg, $storeid, $volname, $snap) = @_;
    return $class->SUPER::volume_snapshot($scfg, $storeid, $volname, $snap) if !chain_enabled($scfg);
    die "can't snapshot this image format\n" if !is_qcow2($volname);
    check_snap_name($snap);
    $class->with_volume($scfg, $storeid, $volname, sub {
        my ($st) = @_;
        my ($cur, $target, $new) = ($st->layer_name('current'), $st->layer_name($snap), $st->temp_name('new'));
        die "target snapshot '$snap' already exists\n" if $st->exists_lv($target);
        my $size = layer_info($st->path($cur))->{size};
        $st->lock(sub {
            my $date = time();
            $st->journal_write({ op => 'snapshot', snap => $snap, target => $cur, new => $new, date => $date });
            $class->new_overlay($st, $scfg, $new, $target, $size);
            $st->rename($cur, $target);
            $st->rename($new, $cur);
            $st->set_date($target, $date);
            $st->journal_clear;
        });
        $class->shrink($st, $target);
    });
    return undef;
}

sub volume_rollback_is_possible {
    my ($class, $scfg, $storeid, $volname, $snap, $blockers) = @_;
    return $class->SUPER::volume_rollback_is_possible($scfg, $storeid, $volname, $snap, $blockers)
        if !chain_enabled($scfg);
    my $st = $class->store($scfg, $storeid, $volname);
    die "can't rollback, snapshot '$snap' does not exist on '$volname'\n" if !$st->exists_lv($st->layer_name($snap));
    return 1; # any snapshot: nothing blocks
}

# The volume becomes a fresh overlay on snapshot $snap, any snapshot.
sub volume_snapshot_rollback {
    my ($class, $scfg, $storeid, $volname, $snap) = @_;
    return $class->SUPER::volume_snapshot_rollback($scfg, $storeid, $volname, $snap) if !chain_enabled($scfg);
    die "can't rollback snapshot this image format\n" if !is_qcow2($volname);
    my $workers = $class->with_volume($scfg, $storeid, $volname, sub {
        my ($st) = @_;
        my ($cur, $base) = ($st->layer_name('current'), $st->layer_name($snap));
        my $new = $st->temp_name('new');
        die "can't rollback, snapshot '$snap' does not exist on '$volname'\n" if !$st->exists_lv($base);
        die "volume '$volname' is in use; stop the VM before rolling back\n" if $st->in_use($cur);
        my $size = layer_info($st->path($base))->{size};
        return $st->lock(sub {
            $st->journal_write({ op => 'rollback', snap => $snap, target => $cur, new => $new });
            $class->new_overlay($st, $scfg, $new, $base, $size);
            my @w = $st->replace($cur, $new);
            $st->journal_clear;
            \@w;
        });
    });
    run_cleanup(@$workers);
    return undef;
}

# Does an interrupted operation still have data to copy (a compaction
# whose copy may be running, a delete)?
sub copy_left {
    my ($st, $j) = @_;
    my $op = $j->{op} // '';
    return $st->exists_lv($j->{target}) && $st->exists_lv($j->{new}) if $op eq 'compact';
    return 0 if $op ne 'delete';
    my $x = $st->layer_name($j->{snap});
    return 0 if !$st->exists_lv($x);
    return $st->exists_lv($st->layer_name($j->{child})) if $j->{how} eq 'commit';
    return grep { my $c = $st->layer_name($_); $st->exists_lv($c) && (backing_of($st, $c) // '') eq $x } @{ $j->{children} // [] };
}

# One step list for a delete and its recovery: what is done already is skipped.
sub delete_steps {
    my ($class, $st, $j) = @_;
    my $x = $st->layer_name($j->{snap});
    my $parent = defined $j->{parent} ? $st->layer_name($j->{parent}) : '';
    my @cleanup;
    # targets first get room for what moves into them (done already unless recovering)
    my $grow = $j->{grow} // {};
    my $lvs = $st->list;
    my @small = grep { $lvs->{$_} && $grow->{$_} > $lvs->{$_}{size} } sort keys %$grow;
    $st->lock(sub { $st->resize($_, $grow->{$_}) for @small }) if @small;
    if ($j->{how} eq 'commit') {
        # the child's data goes into X (grown first); X then takes the child's name
        my $c = $st->layer_name($j->{child});
        if ($st->exists_lv($x) && $st->exists_lv($c)) {
            core(sub { PVE::Storage::Qcow2Chain::commit($st->path($c), base => $x, keep => 1) });
        }
        push @cleanup, @{ $st->lock(sub {
            my @w = $st->exists_lv($x) ? $st->replace($c, $x) : ();
            $st->set_date($c, $j->{date}) if $st->exists_lv($c); # the child's, kept by the journal
            $st->journal_clear;
            \@w;
        }) };
        $class->shrink($st, $c);
    } else {
        # each child takes what it needs from X (grown first) and skips it
        for my $kid (@{ $j->{children} // [] }) {
            my $c = $st->layer_name($kid);
            next if !$st->exists_lv($c);
            next if (backing_of($st, $c) // '') ne $x;
            core(sub {
                PVE::Storage::Qcow2Chain::rebase($st->path($c), backing_file => $parent, backing_fmt => 'qcow2');
            });
        }
        push @cleanup, $st->lock(sub {
            my $w = $st->exists_lv($x) ? $st->remove($x) : undef;
            $st->journal_clear;
            $w;
        });
        $class->shrink($st, $st->layer_name($_)) for grep { $st->exists_lv($st->layer_name($_)) } @{ $j->{children} // [] };
    }
    run_cleanup(@cleanup);
    return;
}

# Delete snapshot $snap anywhere in the tree. Running: QEMU has merged it,
# only its LV goes ('current' stays until rename_snapshot replaces it).
# Offline: without children its LV goes; with one child the smaller layer
# moves (the child committed into it, or it streamed into the child); with
# several each child is streamed. Targets grow first (lvextend), and
# shrink to what they hold afterwards.
sub volume_snapshot_delete {
    my ($class, $scfg, $storeid, $volname, $snap, $running) = @_;
    return $class->SUPER::volume_snapshot_delete($scfg, $storeid, $volname, $snap, $running) if !chain_enabled($scfg);
    die "can't delete snapshot for this image format\n" if !is_qcow2($volname);
    if ($running) {
        return undef if $snap eq 'current';
        my $st = $class->store($scfg, $storeid, $volname);
        my $lv = $st->layer_name($snap);
        # QEMU merged it into the live chain; a branch off it still needs it
        my ($kid) = grep { $_ ne $lv && -e $st->path($_) && (eval { backing_of($st, $_) } // '') eq $lv } sort keys %{ $st->list };
        die "snapshot '$snap' is still the backing file of '$kid'; not deleted (delete it with the VM stopped)\n" if $kid;
        my $w = $st->lock(sub { $st->exists_lv($lv) ? $st->remove($lv) : undef });
        run_cleanup($w);
        return undef;
    }
    $class->with_volume($scfg, $storeid, $volname, sub {
        my ($st) = @_;
        my $t = $class->tree($st);
        my $x = $t->{$snap};
        die "snapshot '$snap' does not exist on '$volname'\n" if !$x || $snap eq 'current';
        my @kids = sort @{ $x->{children} };
        refuse_in_use($st, 'delete this snapshot with the VM stopped or let QEMU merge it', $x->{lv}, map { $t->{$_}{lv} } @kids);
        my $j = { op => 'delete', snap => $snap, parent => $x->{parent}, children => \@kids, how => 'stream' };
        my %grow; # LV => bytes it must be able to hold
        if (@kids == 1) {
            my $c = $t->{ $kids[0] };
            my $commit = layer_data($c->{path}, $c->{fmt}, $c->{size});
            my $stream = layer_data($x->{path}, $x->{fmt}, $x->{size});
            if ($commit < $stream) {
                @$j{qw(how child date)} = ('commit', $kids[0], $st->date($c->{lv}));
                my $size = $c->{size} > $x->{size} ? $c->{size} : $x->{size};
                my $full = full_size($x->{fmt}, $size);
                my $room = image_end($x->{path}) + layer_need($c->{path}, $x->{fmt});
                # X becomes the child: the volume's LV takes any write
                $grow{ $x->{lv} } = $kids[0] eq 'current' || $room > $full ? $full : $room;
            }
        }
        if ($j->{how} eq 'stream') {
            for my $k (@kids) {
                my $c = $t->{$k};
                my $full = full_size($c->{fmt}, $c->{size});
                my $room = image_end($c->{path}) + layer_need($x->{path}, $c->{fmt});
                $grow{ $c->{lv} } = $room < $full ? $room : $full;
            }
        }
        $j->{grow} = \%grow;
        my $w = $st->lock(sub {
            return $st->remove($x->{lv}) if !@kids; # a leaf: one step, nothing to journal
            $st->journal_write($j);
            my $lvs = $st->list;
            $st->resize($_, $grow{$_}) for grep { $grow{$_} > $lvs->{$_}{size} } sort keys %grow;
            return undef;
        });
        run_cleanup($w);
        $class->delete_steps($st, $j) if @kids;
    });
    return undef;
}

# Called with the storage lock held (PVE::Storage::rename_snapshot).
# 'current' as the source leaves the volume as that snapshot (Proxmox's
# own use); as the target the snapshot replaces the volume (QEMU committed
# the volume into it), never leaving it missing but between the volume's
# removal and the rename (the journal completes it).
sub rename_snapshot {
    my ($class, $scfg, $storeid, $volname, $source_snap, $target_snap) = @_;
    return $class->SUPER::rename_snapshot($scfg, $storeid, $volname, $source_snap, $target_snap) if !chain_enabled($scfg);
    check_snap_name($target_snap) if $target_snap ne 'current';
    my $workers = $class->with_volume($scfg, $storeid, $volname, sub {
        my ($st) = @_;
        my ($from, $to) = ($st->layer_name($source_snap), $st->layer_name($target_snap));
        die "snapshot '$source_snap' does not exist on '$volname'\n" if !$st->exists_lv($from);
        if ($target_snap eq 'current' && $st->exists_lv($to)) {
            $st->journal_write({ op => 'rename-current', target => $to, new => $from });
            my @w = $st->replace($to, $from, allow_open => 1); # QEMU uses $from already
            $st->journal_clear;
            return \@w;
        }
        die "target snapshot '$target_snap' already exists\n" if $st->exists_lv($to);
        $st->journal_write({ op => 'rename', from => $from, to => $to });
        $st->rename($from, $to);
        $class->repoint($st, $from, $to);
        $st->journal_clear;
        return [];
    }, locked => 1, no_activate => 1);
    run_cleanup(@$workers);
    return undef;
}

# snapname => { order, file, volname, volid, virtual-size, parent, child, children }:
# 'current' is order 0, its chain counts up to the oldest snapshot, other
# branches follow (newest first).
sub volume_snapshot_info {
    my ($class, $scfg, $storeid, $volname) = @_;
    return $class->SUPER::volume_snapshot_info($scfg, $storeid, $volname) if !chain_enabled($scfg) || !is_qcow2($volname);
    my $st = $class->store($scfg, $storeid, $volname);
    my $t = $class->tree($st);
    my (@order, %seen);
    for (my $n = 'current'; defined $n && $t->{$n} && !$seen{$n}++; $n = $t->{$n}{parent}) {
        push @order, $n;
    }
    push @order, sort { ($t->{$b}{date} // 0) <=> ($t->{$a}{date} // 0) || $a cmp $b } grep { !$seen{$_} } keys %$t;
    my $info = {};
    for my $i (0 .. $#order) {
        my $n = $t->{ $order[$i] };
        my @kids = sort @{ $n->{children} };
        my ($live) = grep { $seen{$_} } @kids;
        my $e = {
            order => $i, file => $n->{path}, volname => $n->{lv}, volid => "$storeid:$n->{lv}",
            'virtual-size' => $n->{size}, children => \@kids,
        };
        $e->{parent} = $n->{parent} if defined $n->{parent};
        $e->{child} = $live // $kids[0] if @kids;
        $e->{date} = $n->{date} if defined $n->{date};
        $info->{ $order[$i] } = $e;
    }
    return $info;
}

1;

__END__

=head1 NAME

PVE::Storage::Qcow2Chain::LVMPlugin - Proxmox VE shared thick LVM storage with native qcow2 volume chains

=head1 SYNOPSIS

    # /etc/pve/storage.cfg
    qcow2lvm: san
        vgname vg_san
        shared 1
        content images
        snapshot-as-volume-chain 1

=head1 DESCRIPTION

A L<PVE::Storage::LVMPlugin> subclass (storage type C<qcow2lvm>): Proxmox's
LVM storage, whose lvcreate, lvrename and activation it keeps, with
C<snapshot-as-volume-chain> done by L<PVE::Storage::Qcow2Chain>: the LV
names and tags are Proxmox's (C<vm-ID-disk-N.qcow2>,
C<snap_vm-ID-disk-N_SNAP.qcow2>, C<pve-vm-ID>), but any snapshot can be
rolled back to, a snapshot anywhere in the tree can be deleted (the
smaller layer moves), and a snapshot's LV holds what its layer holds
instead of a whole disk. Without the option it is Proxmox's LVM storage.

Every LVM metadata step runs under the storage's cluster-wide lock, data
copies (commit, stream, compaction) outside it. Each operation records
what it does in a tag of the volume group (C<qcj:VOLUME:...>), which every
node of the cluster sees; the next operation on the volume completes or
undoes an interrupted one.

New images and overlays are created with C<preallocation=off> unless the
storage sets C<preallocation metadata>: on a device the clusters are then
allocated in order, so a snapshot's LV shrinks by C<lvreduce> alone, and
no L2 entry points at old data of the device. The volume's own LV is
always sized by C<qemu-img measure>'s fully allocated size, as Proxmox
sizes it. While a chain is active (a running VM), its snapshot LVs are
grown to that size too, so that QEMU's own merges (block-commit,
block-stream) have room; deactivation gives the room back.

=head1 METHODS

The Proxmox storage plugin interface of pve-storage 9.1 for LVM, with
Proxmox's signatures, return shapes and messages; what is not listed is
Proxmox's LVM plugin (C<qemu_blockdev_options> with C<host_device>,
C<volume_qemu_snapshot_method> C<mixed>, C<list_images>, C<status>,
C<rename_volume>, C<volume_has_feature>).

=over

=item api, type, plugindata, properties, options

Registration: type C<qcow2lvm>, the LVM plugin's data and options.

=item parse_volname, filesystem_path

Snapshot LVs and temporaries are never volumes; C<filesystem_path> with a
snapshot name gives its LV.

=item alloc_image, free_image, rename_volume, volume_size_info, volume_resize($scfg, $storeid, $volname, $size, $running, $snapname)

New qcow2 volumes on an LV of the measured size; C<free_image> removes the
whole tree (saferemove as Proxmox); C<rename_volume> is Proxmox's;
C<volume_resize> grows the LV, then the image (not while running), or with
a snapshot name that snapshot's LV.

=item activate_volume, deactivate_volume

Proxmox's chain activation, plus room for QEMU's merges while active. An
interrupted operation whose rest is LVM metadata only (the volume's LV
missing between a removal and a rename, a backing name not yet
repointed) is finished at activation, so that the VM starts.

=item volume_snapshot, volume_rollback_is_possible, volume_snapshot_rollback, volume_snapshot_delete, rename_snapshot, volume_snapshot_info

The snapshot operations (rollback to any snapshot, deletes anywhere,
renames with C<current> on either side).

=item chain_enabled($scfg), is_qcow2($name), core($code), store($scfg, $storeid, $volname, %o), prealloc($scfg), check_snap_name($name)

Helpers: the switch, error conversion, the layer store, preallocation.

=item layer_info($path), full_size($fmt, $size), layer_need($path, $fmt), layer_data($path, $fmt, $size), image_end($path)

What a layer is and holds: header facts, measured sizes, where it ends.

=item tree($store), backing_of($store, $lv), with_volume($scfg, $storeid, $volname, $code, %o), recover($store, metadata_only => 1), repoint($store, $from, $to), refuse_in_use($store, $advice, @lvs)

The volume's tree of layers and the LV a layer is backed by; activation
and recovery before an operation (C<with_volume($scfg, $storeid,
$volname, sub {})> alone recovers); layers open on this node refused.

=item shrink($store, $lv), new_overlay($store, $scfg, $new, $backing, $size), delete_steps($store, $journal), copy_left($store, $journal), run_cleanup(@workers)

Steps of the operations.

=back

=cut
