package PVE::Storage::Qcow2Chain::Plugin;

# A directory storage whose qcow2 volumes take external snapshots natively:
# Proxmox's "snapshot as volume chain" without qemu-img processes, without a
# moment without the live disk, with rollback to any snapshot (a tree of
# snapshots) and deletes anywhere in it. This module names files and calls
# PVE::Storage::Qcow2Chain; it holds no format logic. With neither
# 'external-snapshots' nor 'snapshot-as-volume-chain' set it behaves as
# the directory plugin it derives from.

use strict;
use warnings;

use Cwd ();
use File::Basename qw(basename dirname);
use File::Path ();
use PVE::Storage::DirPlugin;
use PVE::Tools;
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

use base qw(PVE::Storage::DirPlugin);

our $VERSION = '0.1.0';

# ---- registration ------------------------------------------------------

sub api {
    # the newest storage API we implement, within what the running PVE accepts
    my $have = eval { PVE::Storage::APIVER() } // 15;
    return $have < 15 ? $have : 15;
}

sub type { return 'qcow2chain' }

sub plugindata {
    return {
        content => [
            { images => 1, rootdir => 1, vztmpl => 1, iso => 1, backup => 1, snippets => 1, none => 1, import => 1 },
            { images => 1, rootdir => 1 },
        ],
        format => [{ raw => 1, qcow2 => 1, vmdk => 1, subvol => 1 }, 'qcow2'],
        'sensitive-properties' => {},
    };
}

# PVE 9 defines 'snapshot-as-volume-chain' in the base class; a plugin that
# defines a property again breaks the whole storage layer ("duplicate
# property"), so it is declared here only when the running PVE lacks it.
sub base_has_chain_property {
    my $list = eval { PVE::Storage::Plugin->private()->{propertyList} } // {};
    return exists $list->{'snapshot-as-volume-chain'};
}

# Decided once, when this module is loaded (before PVE merges the plugins'
# properties into the shared list, which would then contain our own).
my $declare_chain = !base_has_chain_property();

sub properties {
    my $props = {
        'external-snapshots' => {
            description => 'Take snapshots of qcow2 volumes as external files (a volume chain),'
                . " natively. Same as 'snapshot-as-volume-chain'.",
            type => 'boolean',
            default => 0,
        },
    };
    $props->{'snapshot-as-volume-chain'} = {
        description => 'Enable support for creating storage-vendor agnostic snapshot through volume backing-chains.',
        type => 'boolean',
        default => 0,
    } if $declare_chain;
    return $props;
}

# qemu-server reads 'snapshot-as-volume-chain' itself (migration's refusal
# of snapshots, discard-no-unref, the TPM guard, cloud-init names): whichever
# name the administrator wrote, the parsed section carries Proxmox's.
# SectionConfig's parse_config (and the storage API) call this per section.
sub check_config {
    my ($class, $section_id, $config, $create, $skip_schema_check) = @_;
    my $opts = $class->SUPER::check_config($section_id, $config, $create, $skip_schema_check);
    $opts->{'snapshot-as-volume-chain'} = 1
        if $opts->{'external-snapshots'} && !defined($opts->{'snapshot-as-volume-chain'});
    return $opts;
}

# The directory storage's options of the running PVE, plus both switches,
# fixed at creation like Proxmox's own.
sub options {
    my ($class) = @_;
    return {
        %{ PVE::Storage::DirPlugin->options() },
        'external-snapshots' => { optional => 1, fixed => 1 },
        'snapshot-as-volume-chain' => { optional => 1, fixed => 1 },
    };
}

# ---- helpers -----------------------------------------------------------

# Snapshots as volume chains: either name of the switch turns them on.
sub chain_enabled {
    my ($scfg) = @_;
    return $scfg->{'external-snapshots'} || $scfg->{'snapshot-as-volume-chain'} ? 1 : 0;
}

# Run a core call; its exception becomes the plain one-line string PVE's
# callers expect (they match on the text).
sub core {
    my ($code) = @_;
    my @r = eval { $code->() };
    if (my $err = $@) {
        die ref($err) ? "$err" : $err;
    }
    return wantarray ? @r : $r[0];
}

sub is_qcow2 { return $_[0] =~ m/\.qcow2$/ }

# Untrusted images: every backing file must resolve (after symlinks) inside
# the storage's image directory, so no volume can make us read a host file;
# and, as Proxmox only ever builds them, a volume depends on its own VM's
# files or on a template's base volume, nothing else of another VM.
sub policy {
    my ($class, $scfg) = @_;
    return (allowed_dirs => [$class->get_subdir($scfg, 'images')], foreign_backing => 'base-');
}

# Is the VM's QEMU running on this node? qemu-server's own test (its pid
# file, checked against /proc); false where qemu-server is not installed.
sub vm_running {
    my ($vmid) = @_;
    return 0 if !defined($vmid) || !eval { require PVE::QemuServer::Helpers; 1 };
    return PVE::QemuServer::Helpers::vm_running_locally($vmid) ? 1 : 0;
}

# Any volume of the storage may be built on a snapshot (a linked clone in
# another VM's directory): removing or renaming one looks at them all.
sub images_opt {
    my ($class, $scfg) = @_;
    return (images_dir => $class->get_subdir($scfg, 'images'));
}

# Options of new snapshot overlays: 128k clusters, extended L2 entries,
# metadata preallocation unless the storage says off.
sub overlay_opts {
    my ($scfg) = @_;
    my $p = $scfg->{preallocation} // 'metadata';
    return (cluster_size => 128 * 1024, extended_l2 => 1, preallocation => $p eq 'off' ? 'off' : 'metadata');
}

sub snap_info_of_volume {
    my ($class, $scfg, $storeid, $volname) = @_;
    my $path = $class->filesystem_path($scfg, $volname);
    return (core(sub { PVE::Storage::Qcow2Chain::snapshot_list($path, $class->policy($scfg)) }), $path);
}

# ---- names and paths ---------------------------------------------------

sub parse_volname {
    my ($class, $volname) = @_;
    # a snapshot file is never a volume of its own (parse_volname has no
    # $scfg: the pattern is ours, and such files exist only where it was on)
    if ($volname =~ m!^(?:\d+/\S+/)?\d+/(snap-[^/\s]+-(?:vm|base|subvol)-\d+-[^/\s]+)$!) {
        die "'$1' is a snapshot filename, not a volume!\n";
    }
    return $class->SUPER::parse_volname($volname);
}

sub filesystem_path {
    my ($class, $scfg, $volname, $snapname) = @_;
    if (!chain_enabled($scfg) || !defined($snapname) || $snapname eq '' || $snapname eq 'current') {
        return $class->SUPER::filesystem_path($scfg, $volname, $snapname);
    }
    my ($path, $vmid, $vtype) = $class->SUPER::filesystem_path($scfg, $volname);
    my (undef, undef, undef, undef, undef, undef, $format) = $class->parse_volname($volname);
    die "can't snapshot this image format\n" if ($format // '') ne 'qcow2';
    my $snap = PVE::Storage::Qcow2Chain::snapshot_file($path, $snapname);
    return wantarray ? ($snap, $vmid, $vtype) : $snap;
}

# ---- volumes -----------------------------------------------------------

# qcow2 volumes are created natively (64k clusters, as Proxmox does); other
# formats, preallocation modes we do not implement, and storages without
# the switch go to the parent.
sub alloc_image {
    my ($class, $storeid, $scfg, $vmid, $fmt, $name, $size) = @_;
    my $prealloc = $scfg->{preallocation} // 'metadata';
    return $class->SUPER::alloc_image($storeid, $scfg, $vmid, $fmt, $name, $size)
        if !chain_enabled($scfg) || $fmt ne 'qcow2' || $prealloc !~ /^(off|metadata)$/;

    my $imagedir = $class->get_subdir($scfg, 'images') . "/$vmid";
    File::Path::make_path($imagedir);
    $name = $class->find_free_diskname($storeid, $scfg, $vmid, $fmt, 1) if !$name;
    my (undef, $tmpfmt) = PVE::Storage::Plugin::parse_name_dir($name);
    die "illegal name '$name' - wrong extension for format ('$tmpfmt != '$fmt')\n" if $tmpfmt ne $fmt;
    my $path = "$imagedir/$name";
    die "disk image '$path' already exists\n" if -e $path;
    eval { $class->qcow2_create($path, $size, { preallocation => $prealloc }) };
    if (my $err = $@) {
        rmdir $imagedir;
        die $err;
    }
    return "$vmid/$name";
}

# Hooks (also used by the test stand-ins): a new qcow2 volume, or one backed
# by another image (linked clones), made by the core.
sub qcow2_create {
    my ($class, $path, $size_kib, $opts) = @_;
    core(sub {
        PVE::Storage::Qcow2Chain::create($path, size => $size_kib * 1024,
            preallocation => ($opts->{preallocation} // 'off') eq 'metadata' ? 'metadata' : 'off');
    });
    return;
}

sub qcow2_create_backed {
    my ($class, $path, $backing, $backing_fmt, $opts) = @_;
    core(sub {
        PVE::Storage::Qcow2Chain::create($path, backing_file => $backing, backing_fmt => $backing_fmt,
            cluster_size => '128k', extended_l2 => 1,
            preallocation => ($opts->{preallocation} // 'off') eq 'metadata' ? 'metadata' : 'off');
    });
    return;
}

sub free_image {
    my ($class, $storeid, $scfg, $volname, $isBase, $format) = @_;
    return $class->SUPER::free_image($storeid, $scfg, $volname, $isBase, $format)
        if !chain_enabled($scfg) || !is_qcow2($volname);

    die "cannot remove protected volume '$volname' on '$storeid'\n"
        if $class->get_volume_attribute($scfg, $storeid, $volname, 'protected');
    my $path = $class->filesystem_path($scfg, $volname);
    if (!-e $path) {
        warn "disk image '$path' does not exist\n";
        return undef;
    }
    # nothing of the storage may still build on a file of this volume's tree
    # (a template's linked clones, also through their snapshots: Proxmox's
    # check sees only volumes); a volume whose chain the policy refuses still
    # goes, its files are not followed
    my ($image, $file, $list);
    eval {
        ($image, $file) = core(sub {
            PVE::Storage::Qcow2Chain::volume_dependent($path, $class->images_opt($scfg), $class->policy($scfg));
        });
        ($list) = $class->snap_info_of_volume($scfg, $storeid, $volname);
    };
    warn "not looking for snapshot files of '$volname': $@" if $@;
    if (defined $image) {
        die "base volume '$volname' is still in use by linked clones\n" if $isBase;
        die "'$file' of volume '$volname' is the backing file of '$image'; not removed\n";
    }
    if ($isBase) {
        eval { PVE::Tools::run_command(['/usr/bin/chattr', '-i', $path]) }; # create_base made it immutable
        warn $@ if $@;
    }
    # the whole tree of this volume goes: current, then every snapshot file
    unlink($path) or die "unlink '$path' failed - $!\n";
    for my $n ($list ? @{ $list->{nodes} } : ()) {
        next if $n->{kind} ne 'snapshot' && $n->{kind} ne 'stray';
        unlink($n->{file}) or warn "unlink '$n->{file}' failed - $!\n";
    }
    core(sub { PVE::Storage::Qcow2Chain::volume_forget($path) }); # its lock, journal and temporary files
    rmdir(dirname($path));
    return undef;
}

# A linked clone with snapshots has a snapshot file as its backing file;
# Proxmox would then name it as a volume of its own and see its base as
# unused. The clone is named after the base its tree rests on
# ("200/base-200-disk-0.qcow2/201/vm-201-disk-0.qcow2", as Proxmox names
# clones), so volume_is_base_and_used keeps the base.
sub list_images {
    my ($class, $storeid, $scfg, $vmid, $vollist, $cache) = @_;
    return $class->SUPER::list_images($storeid, $scfg, $vmid, $vollist, $cache) if !chain_enabled($scfg);
    # volids change below: filter by $vollist afterwards
    my $res = $class->SUPER::list_images($storeid, $scfg, $vollist ? undef : $vmid, undef, $cache);
    # snapshot files are parts of a volume, never volumes of their own
    $res = [grep { $_->{volid} !~ m!/snap-[^/]+$! } @$res];
    for my $info (@$res) {
        next if ($info->{format} // '') ne 'qcow2' || ($info->{parent} // '') =~ m!/!;
        my (undef, $volname) = split(/:/, $info->{volid}, 2);
        # only a volume with snapshots (its parent, or next to it when flattened) rests on a base that way
        my ($vmdir, $file) = ($class->get_subdir($scfg, 'images') . "/$volname") =~ m!^(.*)/([^/]+)$!;
        my @snaps = glob("$vmdir/snap-*-$file");
        next if !defined($info->{parent}) && !@snaps;
        my $base = $class->tree_base($scfg, $storeid, $volname) // next;
        $info->{volid} = "$storeid:$base/$volname";
    }
    if ($vollist) {
        my %want = map { $_ => 1 } @$vollist;
        $res = [grep { $want{ $_->{volid} } } @$res];
    }
    return $res;
}

# "BASEVMID/BASENAME" of the base volume a volume's snapshot tree rests on
# (the live chain's first), or undef.
sub tree_base {
    my ($class, $scfg, $storeid, $volname) = @_;
    my $path = $class->filesystem_path($scfg, $volname);
    my $list = eval { PVE::Storage::Qcow2Chain::snapshot_list($path, lock_timeout_ms => 2000, $class->policy($scfg)) }
        or return undef;
    my $images = Cwd::abs_path($class->get_subdir($scfg, 'images')) // return undef;
    my %node = map { $_->{file} => $_ } @{ $list->{nodes} };
    my ($cur) = grep { $_->{kind} eq 'current' } @{ $list->{nodes} };
    my @ext;
    for (my ($n, $i) = ($cur, 0); $n && $i++ < @{ $list->{nodes} }; $n = $node{ $n->{'backing-file'} // '' }) {
        push @ext, $n if $n->{kind} eq 'external';
    }
    push @ext, sort { $a->{file} cmp $b->{file} } grep { $_->{kind} eq 'external' } @{ $list->{nodes} };
    for my $e (@ext) {
        my $real = Cwd::abs_path($e->{file}) // next;
        return "$1/$2" if $real =~ m!^\Q$images\E/(\d+)/(base-[^/]+\.qcow2)$!;
    }
    return undef;
}

sub volume_resize {
    my ($class, $scfg, $storeid, $volname, $size, $running, $snapname) = @_;
    return $class->SUPER::volume_resize($scfg, $storeid, $volname, $size, $running, $snapname)
        if !chain_enabled($scfg) || !is_qcow2($volname);
    # A running QEMU resizes its disks itself, and its block-commit grows the
    # snapshot it commits into (qemu-server asks before deleting the first one).
    return 1 if $running;
    my $path = $class->filesystem_path($scfg, $volname, $snapname);
    core(sub {
        my $img = PVE::Storage::Qcow2Chain::Image->open($path, rw => 1, $class->policy($scfg));
        die "shrinking '$volname' is not supported\n" if $size < $img->size;
        $img->grow($size);
        $img->close;
    });
    return undef;
}

sub rename_volume {
    my ($class, $scfg, $storeid, $source_volname, $target_vmid, $target_volname) = @_;
    return $class->SUPER::rename_volume($scfg, $storeid, $source_volname, $target_vmid, $target_volname)
        if !chain_enabled($scfg) || !is_qcow2($source_volname);
    my ($list, $path) = $class->snap_info_of_volume($scfg, $storeid, $source_volname);
    die "we can't rename volume if a snapshot backed by a volume-chain exists\n"
        if grep { $_->{kind} eq 'snapshot' } @{ $list->{nodes} };
    my $res = $class->SUPER::rename_volume($scfg, $storeid, $source_volname, $target_vmid, $target_volname);
    core(sub { PVE::Storage::Qcow2Chain::volume_forget($path) }); # the lock taken above
    return $res;
}

# Proxmox ships a chain volume as one file: its snapshots are other files,
# the target would get a layer without its backing files.
sub volume_export {
    my ($class, $scfg, $storeid, $fh, $volname, $format, $snapshot, $base_snapshot, $with_snapshots) = @_;
    die "cannot export volumes together with their snapshots in $class\n" if $with_snapshots && chain_enabled($scfg);
    return $class->SUPER::volume_export($scfg, $storeid, $fh, $volname, $format, $snapshot, $base_snapshot,
        $with_snapshots);
}

# ---- snapshots ---------------------------------------------------------

# Without the switch, qcow2 volumes take internal snapshots as Proxmox's
# directory storage does (there with qemu-img snapshot -c/-a/-d and qemu-img
# info), here in-process. qemu-server calls these only for stopped VMs: a
# running VM's internal snapshots are QEMU's (QMP), and a delete with
# $running has nothing left to do.
sub internal_qcow2 {
    my ($scfg, $volname) = @_;
    return !chain_enabled($scfg) && is_qcow2($volname);
}

sub volume_snapshot {
    my ($class, $scfg, $storeid, $volname, $snap) = @_;
    if (internal_qcow2($scfg, $volname)) {
        my $path = $class->filesystem_path($scfg, $volname);
        core(sub { PVE::Storage::Qcow2Chain::internal_snapshot_create($path, $snap) });
        return undef;
    }
    return $class->SUPER::volume_snapshot($scfg, $storeid, $volname, $snap) if !chain_enabled($scfg);
    die "can't snapshot this image format\n" if !is_qcow2($volname);
    my $path = $class->filesystem_path($scfg, $volname);
    # with the VM running qemu-server switches QEMU to the new overlay itself
    my $running = vm_running(($class->parse_volname($volname))[2]);
    eval {
        PVE::Storage::Qcow2Chain::snapshot_create($path, $snap, overlay_opts($scfg), running => $running,
            $class->policy($scfg));
    };
    if (my $err = $@) {
        die "target snapshot '$snap' already exists\n" if ref($err) && $err->code eq 'exists';
        die "$err";
    }
    return undef;
}

sub rename_snapshot {
    my ($class, $scfg, $storeid, $volname, $source_snap, $target_snap) = @_;
    return $class->SUPER::rename_snapshot($scfg, $storeid, $volname, $source_snap, $target_snap)
        if !chain_enabled($scfg);
    my $path = $class->filesystem_path($scfg, $volname);
    my $target = $class->filesystem_path($scfg, $volname, $target_snap);
    # "current" as target replaces the volume in one step (see volume_snapshot_delete);
    # qemu-server renames onto it only after QEMU committed the volume into the snapshot
    die "target snapshot '$target_snap' already exists\n" if $target_snap ne 'current' && -e $target;
    # with the VM running (qemu-server's delete), QEMU renames the backing names it uses
    # itself; onto current only after QEMU committed the volume into the snapshot
    my $running = $target_snap eq 'current' || vm_running(($class->parse_volname($volname))[2]);
    core(sub {
        PVE::Storage::Qcow2Chain::snapshot_rename($path, $source_snap, $target_snap, overlay_opts($scfg),
            running => $running ? 1 : 0, $class->images_opt($scfg), $class->policy($scfg));
    });
    return undef;
}

sub volume_rollback_is_possible {
    my ($class, $scfg, $storeid, $volname, $snap, $blockers) = @_;
    return $class->SUPER::volume_rollback_is_possible($scfg, $storeid, $volname, $snap, $blockers)
        if !chain_enabled($scfg);
    # any snapshot, not just the newest: nothing blocks a rollback
    my $file = $class->filesystem_path($scfg, $volname, $snap);
    die "can't rollback, snapshot '$snap' does not exist on '$volname'\n" if !-e $file;
    return 1;
}

sub volume_snapshot_rollback {
    my ($class, $scfg, $storeid, $volname, $snap) = @_;
    if (internal_qcow2($scfg, $volname)) {
        my $path = $class->filesystem_path($scfg, $volname);
        core(sub { PVE::Storage::Qcow2Chain::internal_snapshot_apply($path, $snap) });
        return undef;
    }
    return $class->SUPER::volume_snapshot_rollback($scfg, $storeid, $volname, $snap) if !chain_enabled($scfg);
    die "can't rollback snapshot this image format\n" if !is_qcow2($volname);
    my $path = $class->filesystem_path($scfg, $volname);
    core(sub { PVE::Storage::Qcow2Chain::snapshot_rollback($path, $snap, overlay_opts($scfg), $class->policy($scfg)) });
    return undef;
}

sub volume_snapshot_delete {
    my ($class, $scfg, $storeid, $volname, $snap, $running) = @_;
    if (internal_qcow2($scfg, $volname)) {
        return 1 if $running; # QEMU deletes a running VM's internal snapshots itself
        my $path = $class->filesystem_path($scfg, $volname);
        $class->deactivate_volume($storeid, $scfg, $volname, $snap, {});
        core(sub { PVE::Storage::Qcow2Chain::internal_snapshot_delete($path, $snap) });
        return undef;
    }
    return $class->SUPER::volume_snapshot_delete($scfg, $storeid, $volname, $snap, $running)
        if !chain_enabled($scfg);
    die "can't delete snapshot for this image format\n" if !is_qcow2($volname);
    my $path = $class->filesystem_path($scfg, $volname);
    if ($running && $snap eq 'current') {
        # QEMU committed the volume into its snapshot; qemu-server renames the
        # snapshot onto "current" next. Keeping the volume until then means it
        # is replaced in one rename instead of missing for a moment.
        return undef;
    }
    my $file = $class->filesystem_path($scfg, $volname, $snap);
    die "volume $file is missing\n" if !-e $file;
    core(sub {
        PVE::Storage::Qcow2Chain::snapshot_delete($path, $snap, running => $running ? 1 : 0, $class->images_opt($scfg),
            $class->policy($scfg));
    });
    return undef;
}

# snapname => { order, file, volname, volid, ext, virtual-size, parent, child, children }
# "current" is order 0; the live chain counts up towards the oldest snapshot,
# snapshots on other branches follow. Files that are not this volume's
# snapshots (a linked clone's base) never appear.
sub volume_snapshot_info {
    my ($class, $scfg, $storeid, $volname) = @_;
    if (internal_qcow2($scfg, $volname)) {
        # Proxmox's shape without the switch: name => { timestamp }
        my $path = $class->filesystem_path($scfg, $volname);
        my $list = core(sub { PVE::Storage::Qcow2Chain::internal_snapshot_list($path) });
        return { map { ($_->{name} => { timestamp => $_->{'date-sec'} }) } @$list };
    }
    return $class->SUPER::volume_snapshot_info($scfg, $storeid, $volname) if !chain_enabled($scfg);
    my ($list) = $class->snap_info_of_volume($scfg, $storeid, $volname);
    my (undef, $name, $vmid) = $class->parse_volname($volname);
    my %node = map { $_->{name} => $_ } grep { $_->{kind} eq 'current' || $_->{kind} eq 'snapshot' } @{ $list->{nodes} };

    my (@order, %seen);
    for (my $n = $node{current}; $n && !$seen{ $n->{name} }++; $n = defined $n->{parent} ? $node{ $n->{parent} } : undef) {
        push @order, $n;
    }
    push @order, sort { ($b->{'date-sec'} // 0) <=> ($a->{'date-sec'} // 0) || $a->{name} cmp $b->{name} }
        grep { !$seen{ $_->{name} } } values %node;

    my $info = {};
    for my $i (0 .. $#order) {
        my $n = $order[$i];
        my $vn = $n->{name} eq 'current' ? "$vmid/$name" : "$vmid/" . basename($n->{file});
        my @kids = grep { $node{$_} } @{ $n->{children} };
        my ($live_kid) = grep { $node{$_}{live} } @kids;
        my $e = {
            order => $i,
            file => $n->{file},
            volname => $vn,
            volid => "$storeid:$vn",
            ext => 1,
            'virtual-size' => $n->{'virtual-size'},
            children => [sort @kids],
        };
        $e->{parent} = $n->{parent} if defined $n->{parent} && $node{ $n->{parent} };
        my $child = $live_kid // (sort @kids)[0];
        $e->{child} = $child if defined $child;
        $info->{ $n->{name} } = $e;
    }
    return $info;
}

sub volume_qemu_snapshot_method {
    my ($class, $storeid, $scfg, $volname) = @_;
    return 'mixed' if chain_enabled($scfg) && is_qcow2($volname);
    return $class->SUPER::volume_qemu_snapshot_method($storeid, $scfg, $volname);
}

sub qemu_blockdev_options {
    my ($class, $scfg, $storeid, $volname, $machine_version, $options) = @_;
    my $snap = $options && $options->{'snapshot-name'};
    if (chain_enabled($scfg) && defined($snap) && $snap ne 'current') {
        my $path = $class->filesystem_path($scfg, $volname, $snap);
        die "volume '$storeid:$volname' snapshot '$snap' does not exist\n" if !-e $path;
        return { driver => 'file', filename => "$path" };
    }
    return $class->SUPER::qemu_blockdev_options($scfg, $storeid, $volname, $machine_version, $options)
        if $class->SUPER::can('qemu_blockdev_options');
    return { driver => 'file', filename => scalar($class->filesystem_path($scfg, $volname)) };
}

sub volume_has_feature {
    my ($class, $scfg, $feature, $storeid, $volname, $snapname, $running, $opts) = @_;
    if (chain_enabled($scfg) && is_qcow2($volname)) {
        # snapshots of any volume state, copies from snapshots; linked clones from base only
        return 1 if $feature eq 'snapshot';
        return 1 if $feature eq 'copy';
    }
    return $class->SUPER::volume_has_feature($scfg, $feature, $storeid, $volname, $snapname, $running, $opts);
}

1;

__END__

=head1 NAME

PVE::Storage::Qcow2Chain::Plugin - Proxmox VE directory storage with native external qcow2 snapshots

=head1 SYNOPSIS

    # /etc/pve/storage.cfg
    qcow2chain: fastsnap
        path /srv/vmdata
        content images
        snapshot-as-volume-chain 1

    pvesm add qcow2chain fastsnap --path /srv/vmdata --content images --snapshot-as-volume-chain 1

=head1 DESCRIPTION

A L<PVE::Storage::DirPlugin> subclass (storage type C<qcow2chain>) for
directory-type storages, following pve-storage 9.1.7 and qemu-server
9.2.6. With the storage option C<snapshot-as-volume-chain> (Proxmox VE 9's
name, which qemu-server reads) or its older name C<external-snapshots> set
when the storage is created (a section with only the older name is read
with C<snapshot-as-volume-chain> added, see C<check_config>), every
snapshot operation on qcow2 volumes goes through
L<PVE::Storage::Qcow2Chain>: no C<qemu-img> process, no moment without the
live disk, rollback to any snapshot (snapshots form a tree), deletes
anywhere in the tree moving the smaller layer, a per-volume lock, and an
intent journal that makes every operation crash-safe. With the option off
the storage behaves exactly as a directory storage.

Volumes are untrusted: every backing file must resolve (after symlinks)
inside the storage's C<images> directory, and a volume may depend only on
its own VM's files or on a template's C<base-> volume; every method that
opens a chain refuses anything else with a one-line error.

Snapshot C<S> of volume C<images/VMID/vm-VMID-disk-N.qcow2> is the file
C<snap-S-vm-VMID-disk-N.qcow2> next to it; snapshot files are never listed
as volumes.

Running VMs: C<volume_qemu_snapshot_method> is C<mixed>, so qemu-server
switches QEMU to new overlays and merges layers itself (QMP
C<blockdev-snapshot>, C<block-commit>, C<block-stream>,
C<change-backing-file>). Proxmox's QEMU takes no image locks; the plugin
knows that the VM runs the way qemu-server does (C<vm_running>: its pid
file) and then leaves QEMU its part. Any other process that has a file of
the chain open makes every change of that file fail, naming the process.
Deleting a snapshot that is a branch point while the VM runs lets QEMU
merge into it; delete those with the VM stopped.

=head1 MOVING A DISK WITH INTERNAL SNAPSHOTS ONTO A VOLUME-CHAIN STORAGE

A VM disk made on a directory storage without volume chains (or before
they existed) keeps its snapshots inside the qcow2 file. To bring it with
its snapshots onto a storage with C<external-snapshots>, with the VM
stopped:

    qm shutdown 100
    # move the file into the chain storage's directory (same name), then:
    qcow2-chain to-external -p /srv/vmdata/images/100/vm-100-disk-0.qcow2
    # (--name OLD=NEW for snapshot names that are not valid volume snapshot names)
    qm set 100 --scsi0 fastsnap:100/vm-100-disk-0.qcow2

Every internal snapshot becomes C<snap-NAME-vm-100-disk-0.qcow2>, in the
order they were taken, each holding only what differs from the one
before; the disk keeps its data and loses its internal snapshots. The VM
configuration's snapshot sections stay valid (same names). Snapshots with
VM state (taken by QEMU's savevm, not by Proxmox, which keeps VM state in
a volume of its own) are refused unless C<--drop-vm-state>. And back, for
a storage without volume chains (Proxmox migrates qcow2 files with
internal snapshots, but refuses volume chains):

    qcow2-chain to-internal -p /srv/vmdata/images/100/vm-100-disk-0.qcow2

Both are journaled: an interrupted conversion is undone or completed by
the next operation on the volume (any C<qcow2-chain snapshot> call, or
C<PVE::Storage::Qcow2Chain::volume_recover>).

=head1 METHODS

The Proxmox storage plugin interface, with Proxmox's signatures, return
shapes and messages:

=over

=item api, type, plugindata, properties, options, check_config

Registration. C<snapshot-as-volume-chain> is declared only when the running
Proxmox VE does not define it already; both switches are C<fixed> (set
when the storage is created). C<check_config> (called by SectionConfig's
C<parse_config> for each section, and by the storage API) adds
C<snapshot-as-volume-chain 1> to a section that sets only
C<external-snapshots>, because qemu-server tests that key itself.

=item chain_enabled($scfg), core($code), is_qcow2($name), overlay_opts($scfg), base_has_chain_property, snap_info_of_volume

Helpers: the switch, error conversion to plain strings, new overlay options.

=item policy($scfg)

The backing-file policy every core call gets: the storage's C<images>
directory, and C<base-> as the only name allowed in another VM's
directory.

=item vm_running($vmid)

Whether the VM's QEMU runs on this node, by qemu-server's own test
(C<PVE::QemuServer::Helpers::vm_running_locally>: its pid file and the
process's command line); false where qemu-server is not installed.
C<volume_snapshot> and C<rename_snapshot> then let QEMU do its part.

=item tree_base($scfg, $storeid, $volname)

The base volume (C<BASEVMID/BASENAME>) a volume's snapshot tree rests on.

=item images_opt($scfg)

Where deleting or renaming a snapshot looks for images built on it: the
storage's C<images> directory, every VM's.

=item parse_volname, filesystem_path, path

C<filesystem_path($scfg, $volname, $snapname)> gives the snapshot file;
snapshot file names are refused as volume names (C<'NAME' is a snapshot
filename, not a volume!>).

=item alloc_image, free_image, list_images, qcow2_create, qcow2_create_backed

With the switch on, qcow2 volumes are created natively. C<free_image>
removes the volume and every snapshot file of its tree, then its lock,
journal and temporary files (C<volume_forget>); it is refused while
another volume of the storage is built on one of those files (a base
volume: "still in use by linked clones", also through a clone's
snapshots); a base volume's immutable flag is cleared first
(C<create_base> set it), as Proxmox does; a volume whose chain the policy
refuses is still removed (its chain is not followed, with a warning).
C<list_images> never lists snapshot files and names a linked clone with
snapshots after the base its tree rests on
(C<200/base-200-disk-0.qcow2/201/vm-201-disk-0.qcow2>), as Proxmox names
clones, so C<volume_is_base_and_used> keeps that base. With the switch
off, the parent's behaviour.

=item volume_resize($scfg, $storeid, $volname, $size, $running, $snapname)

Grows the volume, or with C<$snapname> a snapshot file (before a commit
into it), under the policy. Shrinking is refused. With C<$running> it
returns 1 and touches nothing, as Proxmox's: QEMU resizes its disks, and
its C<block-commit> grows the snapshot it commits into.

=item rename_volume

Refused while the volume has snapshots; the old name's lock file is
removed.

=item volume_export

With snapshots refused on a volume-chain storage ("cannot export volumes
together with their snapshots in ..."), as Proxmox's: the snapshots are
other files. Otherwise the parent's.

=item volume_snapshot, rename_snapshot, volume_rollback_is_possible, volume_snapshot_rollback, volume_snapshot_delete, volume_snapshot_info

The snapshot operations. Any snapshot can be rolled back to (no
C<$blockers> are reported). C<volume_snapshot_info> returns Proxmox's
fields plus C<children> and C<virtual-size>; C<parent> links from
C<current> walk the live chain.

=item internal_qcow2($scfg, $volname)

True for a qcow2 volume on a storage without the switch: its snapshots are
internal ones. C<volume_snapshot>, C<volume_snapshot_rollback>,
C<volume_snapshot_delete> and C<volume_snapshot_info> then do what
Proxmox's directory storage does with C<qemu-img snapshot -c/-a/-d> and
C<qemu-img info> (C<volume_snapshot_info> returns C<name =E<gt> {
timestamp }>; a delete with C<$running> returns 1 untouched, QEMU deletes
a running VM's snapshots itself), in-process, without a C<qemu-img>
process. Snapshot names that already exist are refused.

=item volume_qemu_snapshot_method, qemu_blockdev_options, volume_has_feature

C<mixed> for qcow2 volumes with the option; C<qemu_blockdev_options> with
C<snapshot-name> attaches the snapshot file.

=back

=cut
