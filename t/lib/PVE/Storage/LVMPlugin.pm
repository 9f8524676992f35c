# Test-only clean-room stand-in for Proxmox's PVE::Storage::LVMPlugin
# (pve-storage 9.1, storage type 'lvm'), written from its documented
# behaviour; this is not Proxmox's code. It runs the real lvm2 commands, as
# the real module does: the volume group and LV helpers (lvm_vgs,
# lvm_list_volumes, lvcreate, lvrename), volume naming and paths
# (vm-<vmid>-disk-N[.qcow2], snapshot LVs snap_<volume>_<snap>.qcow2,
# /dev/<vg>/<lv>), allocation and removal (with 'saferemove': renamed to
# del-<name>, a cleanup worker zeroes and removes it), listing, status,
# activation of a volume or of a qcow2 volume's whole chain (lvchange
# --select), resize, rename, the feature table, qemu_blockdev_options
# (host_device) and volume_qemu_snapshot_method.
#
# Deliberate differences (see t/lib/PVE/README.md): no qemu-img. The qcow2
# paths that run qemu-img in PVE (qcow2 allocation, volume_snapshot_info,
# the snapshot operations, qcow2 resize and size) die "not implemented by
# the test stand-in"; a plugin under test implements them. The cleanup
# worker zeroes with blkdiscard --zeroout only (no cstream fallback).
package PVE::Storage::LVMPlugin;

use strict;
use warnings;

use PVE::JSONSchema qw(get_standard_option);
use PVE::Storage::Plugin;
use PVE::Tools qw(run_command trim);

use base qw(PVE::Storage::Plugin);

sub standin_not_implemented {
    my ($what) = @_;
    die "PVE::Storage::LVMPlugin test stand-in: $what is not implemented by the test stand-in\n";
}

my @REPORT = ('--separator', ':', '--noheadings', '--units', 'b', '--unbuffered', '--nosuffix');

# lvm output on stderr that is noise ("No medium found" of IPMI devices)
my $quiet_medium = sub {
    my ($line) = @_;
    print STDERR "$line\n" if $line !~ m/open failed: No medium found/;
};

# ---- LVM helpers --------------------------------------------------------

# { vgname => { size, free, lvcount [, pvs => [{name, size, free}]] } }
sub lvm_vgs {
    my ($includepvs) = @_;
    my @cols = qw(vg_name vg_size vg_free lv_count);
    push @cols, qw(pv_name pv_size pv_free) if $includepvs;
    my $vgs = {};
    eval {
        run_command(['/sbin/vgs', @REPORT, '--options', join(',', @cols)],
            outfunc => sub {
                my ($name, $size, $free, $lvcount, $pvname, $pvsize, $pvfree) = split(':', trim($_[0]));
                $vgs->{$name} //= { size => int($size), free => int($free), lvcount => int($lvcount) };
                push @{ $vgs->{$name}{pvs} }, { name => $pvname, size => int($pvsize), free => int($pvfree) }
                    if defined($pvname) && defined($pvsize) && defined($pvfree);
            },
            errfunc => $quiet_medium);
    };
    warn $@ if $@; # vgs fails without clvmd, yet lists the local groups
    return $vgs;
}

# { vgname => { lvname => { lv_size, lv_state, lv_type, tags, ctime, ... } } }
sub lvm_list_volumes {
    my ($vgname) = @_;
    my $cols = 'vg_name,lv_name,lv_size,lv_attr,pool_lv,data_percent,metadata_percent,snap_percent,uuid,tags,'
        . 'metadata_size,time';
    my $lvs = {};
    run_command(['/sbin/lvs', @REPORT, '--config', 'report/time_format="%s"', '--options', $cols, ($vgname ? $vgname : ())],
        outfunc => sub {
            my ($vg, $lv, $size, $attr, $pool, $data, $meta, $snap, $uuid, $tags, $msize, $ctime) = split(':', trim($_[0]));
            return if !$vg || !$lv;
            my $d = { lv_size => int($size), lv_state => substr($attr, 4, 1), lv_type => substr($attr, 0, 1),
                ctime => $ctime };
            $d->{pool_lv} = $pool if $pool;
            $d->{tags} = $tags if $tags;
            if ($d->{lv_type} eq 't') {
                $d->{metadata_size} = int($msize);
                $d->{metadata_used} = int((($meta || 0) * $msize) / 100);
                $d->{used} = int((($data || 0) * $size) / 100);
            }
            $lvs->{$vg}{$lv} = $d;
        },
        errfunc => $quiet_medium);
    return $lvs;
}

# lvcreate($vg, $name, $size, $tags): $size in KiB unless it has a unit;
# active, signatures wiped, not auto-activated.
sub lvcreate {
    my ($vg, $name, $size, $tags) = @_;
    $size .= 'k' if $size =~ m/\d$/;
    my @cmd = ('/sbin/lvcreate', '-aly', '-Wy', '--yes', '--size', $size, '--name', $name, '--setautoactivation', 'n');
    push @cmd, '--addtag', $_ for @{ $tags // [] };
    run_command([@cmd, $vg], errmsg => "lvcreate '$vg/$name' error");
    return;
}

sub lvrename {
    my ($scfg, $oldname, $newname) = @_;
    my $vg = $scfg->{vgname};
    die "target volume '${newname}' already exists\n" if lvm_list_volumes($vg)->{$vg}{$newname};
    run_command(['/sbin/lvrename', $vg, $oldname, $newname], errmsg => "lvrename '${vg}/${oldname}' to '${newname}' error");
    return;
}

# ---- registration -------------------------------------------------------

sub type { return 'lvm' }

sub plugindata {
    return {
        content => [{ images => 1, rootdir => 1 }, { images => 1 }],
        format => [{ raw => 1, qcow2 => 1 }, 'raw'],
        'sensitive-properties' => {},
    };
}

sub properties {
    return {
        vgname => { description => "Volume group name.", type => 'string', format => 'pve-storage-vgname' },
        base => { description => "Base volume.", type => 'string', format => 'pve-volume-id' },
        saferemove => { description => "Zero-out data when removing LVs.", type => 'boolean' },
        'saferemove-stepsize' => { description => "Wipe step size in MiB.", default => 32,
            enum => [qw(1 2 4 8 16 32)], type => 'integer' },
        saferemove_throughput => { description => "Wipe throughput.", type => 'string' },
        tagged_only => { description => "Only list logical volumes tagged with 'pve-vm-ID'.", type => 'boolean' },
    };
}

sub options {
    return {
        vgname => { fixed => 1 },
        nodes => { optional => 1 },
        shared => { optional => 1 },
        disable => { optional => 1 },
        saferemove => { optional => 1 },
        'saferemove-stepsize' => { optional => 1 },
        saferemove_throughput => { optional => 1 },
        content => { optional => 1 },
        base => { fixed => 1, optional => 1 },
        tagged_only => { optional => 1 },
        bwlimit => { optional => 1 },
        'snapshot-as-volume-chain' => { optional => 1 },
    };
}

sub get_formats {
    my ($class, $scfg, $storeid) = @_;
    return { default => 'qcow2', valid => { qcow2 => 1, raw => 1 } } if $scfg->{'snapshot-as-volume-chain'};
    return { default => 'raw', valid => { raw => 1 } };
}

sub on_update_hook_full {
    my ($class, $storeid, $scfg, $update, $delete, $sensitive) = @_;
    my $turning_off = $scfg->{'snapshot-as-volume-chain'}
        && ((defined($update->{'snapshot-as-volume-chain'}) && !$update->{'snapshot-as-volume-chain'})
            || grep { $_ eq 'snapshot-as-volume-chain' } @{ $delete // [] });
    if ($turning_off) {
        my $images = $class->list_images($storeid, $scfg, undef, undef, undef);
        die "$storeid - cannot disable 'snapshot-as-volume-chain' while a qcow2 image exists\n"
            if grep { $_->{format} eq 'qcow2' } @$images;
    }
    return;
}

# ---- names and paths ----------------------------------------------------

sub parse_volname {
    my ($class, $volname) = @_;
    PVE::Storage::Plugin::parse_lvm_name($volname);
    if ($volname =~ m/^(vm-(\d+)-\S+)$/) {
        my ($name, $vmid) = ($1, $2);
        return ('images', $name, $vmid, undef, undef, undef, $volname =~ m/\.qcow2$/ ? 'qcow2' : 'raw');
    }
    die "unable to parse lvm volume name '$volname'\n";
}

# snapshot LV of a volume: snap_<name without .qcow2>_<snap>.qcow2; 'current' is the volume
sub standin_snap_name {
    my ($class, $volname, $snapname) = @_;
    die "missing snapname\n" if !$snapname;
    my $name = ($class->parse_volname($volname))[1];
    return $name if $snapname eq 'current';
    $name =~ s/\.[^.]+$//;
    return "snap_${name}_${snapname}.qcow2";
}

sub filesystem_path {
    my ($class, $scfg, $volname, $snapname) = @_;
    my (undef, $name, $vmid, undef, undef, undef, $format) = $class->parse_volname($volname);
    die "snapshot is working with qcow2 format only" if defined($snapname) && $format ne 'qcow2';
    $name = $class->standin_snap_name($volname, $snapname) if $snapname;
    my $path = "/dev/$scfg->{vgname}/$name";
    return wantarray ? ($path, $vmid, 'images') : $path;
}

sub qemu_blockdev_options {
    my ($class, $scfg, $storeid, $volname, $machine_version, $options) = @_;
    my ($path) = $class->path($scfg, $volname, $storeid, $options->{'snapshot-name'});
    return { driver => 'host_device', filename => $path };
}

sub create_base { die "can't create base images in lvm storage\n" }

sub clone_image { die "can't clone images in lvm storage\n" }

sub find_free_diskname {
    my ($class, $storeid, $scfg, $vmid, $fmt, $add_fmt_suffix) = @_;
    my $vg = $scfg->{vgname};
    my $lvs = lvm_list_volumes($vg);
    return PVE::Storage::Plugin::get_next_vm_diskname([keys %{ $lvs->{$vg} // {} }], $storeid, $vmid, $fmt, $scfg,
        ($fmt // '') eq 'qcow2' ? 1 : undef);
}

# ---- allocation and removal ---------------------------------------------

sub alloc_image {
    my ($class, $storeid, $scfg, $vmid, $fmt, $name, $size) = @_;
    $name = $class->find_free_diskname($storeid, $scfg, $vmid, $fmt) if !$name;
    my $parsed = ($class->parse_volname($name))[6];
    if (($fmt eq 'raw' || $fmt eq 'qcow2') && $parsed ne $fmt) {
        my $base = $name =~ s/\.[^.]+$//r;
        die "volume name '$name' does not match requested format '$fmt' (did you mean '"
            . ($fmt eq 'qcow2' ? "$base.qcow2" : $base) . "'?)\n";
    }
    die "unsupported format '$fmt'" if $fmt ne 'raw' && $fmt ne 'qcow2';
    die "snapshot-as-volume-chain option need to be enabled to use qcow2 format"
        if $fmt eq 'qcow2' && !$scfg->{'snapshot-as-volume-chain'};
    standin_not_implemented('qcow2 allocation (qemu-img measure and create)') if $fmt eq 'qcow2';
    my $vg = $scfg->{vgname};
    my $vgs = lvm_vgs();
    die "no such volume group '$vg'\n" if !defined($vgs->{$vg});
    my $free = int($vgs->{$vg}{free});
    die "not enough free space ($free < $size)\n" if $free < $size;
    lvcreate($vg, $name, $size, ["pve-vm-$vmid"]);
    return $name;
}

# Remove LVs, or with saferemove rename them to del-<name> and return the
# worker that zeroes and removes them (the caller forks it).
sub standin_free_lvs {
    my ($class, $scfg, $storeid, $names) = @_;
    my $vg = $scfg->{vgname};
    if (!$scfg->{saferemove}) {
        run_command(['/sbin/lvremove', '-f', "$vg/$_"], errmsg => "lvremove '$vg/$_' error") for @$names;
        return undef;
    }
    run_command(['/sbin/lvrename', $vg, $_, "del-$_"], errmsg => "lvrename '$vg/$_' error") for @$names;
    return sub {
        for my $name (@$names) {
            my $path = "/dev/$vg/del-$name";
            run_command(['/sbin/lvchange', '-aly', $path], errmsg => "can't activate LV '$path' to zero-out its data");
            run_command(['/sbin/lvchange', '--refresh', $path], errmsg => "can't refresh LV '$path' to zero-out its data");
            eval { run_command(['blkdiscard', $path, '-v', '--zeroout', '--step', (($scfg->{'saferemove-stepsize'} // 32) << 20)]) };
            warn $@ if $@;
            $class->cluster_lock_storage($storeid, $scfg->{shared}, undef, sub {
                run_command(['/sbin/lvremove', '-f', "$vg/del-$name"], errmsg => "lvremove '$vg/del-$name' error");
            });
        }
    };
}

# Called with the storage lock held. A qcow2 volume goes with every
# snapshot LV of its chain (volume_snapshot_info).
sub free_image {
    my ($class, $storeid, $scfg, $volname, $isBase, $format) = @_;
    $class->parse_volname($volname);
    my @names = ($volname);
    if (($format // '') eq 'qcow2') {
        $class->activate_volume($storeid, $scfg, $volname);
        my $snaps = $class->volume_snapshot_info($scfg, $storeid, $volname);
        for my $s (sort { $snaps->{$a}{order} <=> $snaps->{$b}{order} } keys %$snaps) {
            next if $s eq 'current' || !$snaps->{$s}{volid};
            push @names, (PVE::Storage::Plugin::parse_volume_id($snaps->{$s}{volid}))[1];
        }
    }
    return $class->standin_free_lvs($scfg, $storeid, \@names);
}

sub list_images {
    my ($class, $storeid, $scfg, $vmid, $vollist, $cache) = @_;
    my $vg = $scfg->{vgname};
    $cache->{lvs} = lvm_list_volumes() if !$cache->{lvs};
    my $res = [];
    my $dat = $cache->{lvs}{$vg} or return $res;
    for my $volname (keys %$dat) {
        next if $volname !~ m/^vm-(\d+)-/;
        my $owner = $1;
        my $info = $dat->{$volname};
        next if $scfg->{tagged_only} && !(defined($info->{tags}) && $info->{tags} =~ /(^|,)pve-vm-\d+(,|$)/);
        next if $info->{lv_type} !~ m/^[-mMrR]$/;
        my $volid = "$storeid:$volname";
        if ($vollist) {
            next if !grep { $_ eq $volid } @$vollist;
        } else {
            next if defined($vmid) && $owner ne $vmid;
        }
        my $format = ($class->parse_volname($volname))[6];
        my $entry = { volid => $volid, format => $format, vmid => $owner, ctime => $info->{ctime} };
        if ($format eq 'qcow2') {
            my $size = $info->{lv_state} eq 'a' ? $class->volume_size_info($scfg, $storeid, $volname) : undef;
            if (defined $size) { $entry->{size} = $size } else { $entry->{'approximate-size'} = $info->{lv_size} }
        } else {
            $entry->{size} = $info->{lv_size};
        }
        push @$res, $entry;
    }
    return $res;
}

sub status {
    my ($class, $storeid, $scfg, $cache) = @_;
    $cache->{vgs} = lvm_vgs() if !$cache->{vgs};
    my $info = $cache->{vgs}{ $scfg->{vgname} } or return undef;
    return ($info->{size}, $info->{free}, $info->{size} - $info->{free}, 1);
}

sub activate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;
    $cache->{vgs} = lvm_vgs() if !$cache->{vgs};
    if ($cache->{vgs} && !$cache->{vgscaned} && !$cache->{vgs}{ $scfg->{vgname} }) {
        $cache->{vgscaned} = 1;
        eval { run_command(['/sbin/vgscan', '--ignorelockingfailure', '--mknodes'], outfunc => sub { }) };
        warn $@ if $@;
    }
    return;
}

sub deactivate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;
    run_command(['/sbin/vgchange', '-aln', $scfg->{vgname}], errmsg => "can't deactivate VG '$scfg->{vgname}'");
    return;
}

# lvchange arguments selecting a raw LV, or a qcow2 volume's whole chain
sub standin_activation_target {
    my ($class, $scfg, $path, $volname) = @_;
    my ($name, $format) = ($class->parse_volname($volname))[1, 6];
    return ([$path], "LV '$path'") if $format ne 'qcow2';
    $name =~ s/\.qcow2$//;
    my $re = $name =~ s/\./\\./gr;
    return (['--select', "vg_name = \"$scfg->{vgname}\" && lv_name =~ '^(${re}|snap_${re}_.+)\\.qcow2\$'"],
        "volume chain for LV '$path'");
}

sub activate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache) = @_;
    my $path = $class->path($scfg, $volname, $storeid, $snapname);
    my ($target, $what) = $class->standin_activation_target($scfg, $path, $volname);
    run_command(['/sbin/lvchange', '-aey', @$target], errmsg => "can't activate $what");
    run_command(['/sbin/lvchange', '--refresh', @$target], errmsg => "can't refresh $what for activation");
    return;
}

sub deactivate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache) = @_;
    my $path = $class->path($scfg, $volname, $storeid, $snapname);
    return if !-b $path;
    my ($target, $what) = $class->standin_activation_target($scfg, $path, $volname);
    run_command(['/sbin/lvchange', '-aln', @$target], errmsg => "can't deactivate $what");
    return;
}

# ---- sizes, snapshots, rename -------------------------------------------

sub volume_resize {
    my ($class, $scfg, $storeid, $volname, $size, $running, $snapname) = @_;
    my $format = ($class->parse_volname($volname))[6];
    standin_not_implemented('qcow2 resize (qemu-img measure and resize)') if $format eq 'qcow2';
    my $path = $class->path($scfg, $volname, $storeid, $snapname);
    $class->cluster_lock_storage($storeid, $scfg->{shared}, undef, sub {
        run_command(['/sbin/lvextend', '-L', int($size / 1024) . 'k', $path], errmsg => "error resizing volume '$path'");
    });
    return 1;
}

sub volume_size_info {
    my ($class, $scfg, $storeid, $volname, $timeout) = @_;
    my $format = ($class->parse_volname($volname))[6];
    standin_not_implemented('qcow2 size (qemu-img info)') if $format eq 'qcow2';
    my $path = $class->filesystem_path($scfg, $volname);
    my $size;
    run_command(['/sbin/lvs', @REPORT, '--options', 'lv_size', $path], timeout => $timeout,
        errmsg => "can't get size of '$path'", outfunc => sub { $size = int(shift) });
    return wantarray ? ($size, 'raw', 0, undef) : $size;
}

sub volume_snapshot_info {
    my ($class, $scfg, $storeid, $volname) = @_;
    return {} if !$scfg->{'snapshot-as-volume-chain'};
    standin_not_implemented('volume_snapshot_info (qemu-img info --backing-chain)');
}

sub volume_snapshot { standin_not_implemented('volume_snapshot (qemu-img create on a new LV)') }
sub volume_snapshot_rollback { standin_not_implemented('volume_snapshot_rollback') }
sub volume_rollback_is_possible { standin_not_implemented('volume_rollback_is_possible') }

sub volume_snapshot_delete {
    my ($class, $scfg, $storeid, $volname, $snap, $running) = @_;
    my $format = ($class->parse_volname($volname))[6];
    die "can't delete snapshot for '$format' volume\n" if $format ne 'qcow2';
    standin_not_implemented('offline volume_snapshot_delete (qemu-img commit/rebase)') if !$running;
    my $worker = $class->cluster_lock_storage($storeid, $scfg->{shared}, undef, sub {
        $class->standin_free_lvs($scfg, $storeid, [$class->standin_snap_name($volname, $snap)]);
    });
    $worker->() if $worker; # the real module forks it as a task
    return;
}

sub rename_snapshot {
    my ($class, $scfg, $storeid, $volname, $source_snap, $target_snap) = @_;
    lvrename($scfg, $class->standin_snap_name($volname, $source_snap), $class->standin_snap_name($volname, $target_snap));
    return;
}

sub rename_volume {
    my ($class, $scfg, $storeid, $source_volname, $target_vmid, $target_volname) = @_;
    my (undef, undef, $source_vmid, undef, undef, undef, $format) = $class->parse_volname($source_volname);
    if ($format eq 'qcow2') {
        $class->activate_volume($storeid, $scfg, $source_volname);
        my $snaps = $class->volume_snapshot_info($scfg, $storeid, $source_volname);
        die "can't rename volume '$source_volname' - external snapshot exists\n" if $snaps->{current}{parent};
    }
    $target_volname = $class->find_free_diskname($storeid, $scfg, $target_vmid, $format) if !$target_volname;
    my $vg = $scfg->{vgname};
    die "target volume '${target_volname}' already exists\n" if lvm_list_volumes($vg)->{$vg}{$target_volname};
    lvrename($scfg, $source_volname, $target_volname);
    my @tags;
    push @tags, '--addtag', "pve-vm-$target_vmid", '--deltag', "pve-vm-$source_vmid" if $source_vmid ne $target_vmid;
    push @tags, '--addtag', "pve-$target_volname", '--deltag', "pve-$source_volname" if $format eq 'qcow2';
    eval { run_command(['lvchange', @tags, "$vg/$target_volname"]) if @tags };
    warn "unable to update tags for '$target_volname' - $@" if $@;
    return "$storeid:$target_volname";
}

sub volume_has_feature {
    my ($class, $scfg, $feature, $storeid, $volname, $snapname, $running) = @_;
    my $features = {
        copy => { base => { qcow2 => 1, raw => 1 }, current => { qcow2 => 1, raw => 1 }, snap => { qcow2 => 1 } },
        rename => { current => { qcow2 => 1, raw => 1 } },
        snapshot => { current => { qcow2 => 1 }, snap => { qcow2 => 1 } },
    };
    my (undef, undef, undef, undef, undef, $isBase, $format) = $class->parse_volname($volname);
    my $key = $snapname ? 'snap' : $isBase ? 'base' : 'current';
    return defined($features->{$feature}{$key}{$format}) ? 1 : undef;
}

sub volume_qemu_snapshot_method {
    my ($class, $storeid, $scfg, $volname) = @_;
    return ($class->parse_volname($volname))[6] eq 'qcow2' ? 'mixed' : 'storage';
}

1;
