# Test-only clean-room stand-in for Proxmox's PVE::Storage (pve-storage).
# Provides the storage API version constants of Proxmox VE 9.1 (APIVER 15,
# APIAGE 6), the file-name regexes the base plugin's parse_volname refers to,
# check_custom_plugin(), which applies the same acceptance rules the real
# module applies to PVE/Storage/Custom/*.pm plugins, and the storage-level
# entry points qemu-server and the API call (volume_snapshot*, volume_resize,
# rename_snapshot, vdisk_free, volume_is_base_and_used, volume_export/import,
# a local storage_migrate). It does not load or register any plugin by
# itself. Written from the behaviour of pve-storage 9.1.7; this is not
# Proxmox's code.
package PVE::Storage;

use strict;
use warnings;

use constant APIVER => 15;
use constant APIAGE => 6;

# Volume name pieces used by PVE::Storage::Plugin::parse_volname. The trailing
# digit tells how many capture groups the regex has.
our $ISO_EXT_RE_0 = qr/\.(?:iso|img)/i;
our $VZTMPL_EXT_RE_1 = qr/\.tar\.(gz|xz|zst|bz2)/i;
our $BACKUP_EXT_RE_2 = qr/\.(tgz|(?:tar|vma)(?:\.(gz|lzo|zst|bz2))?)/;
our $IMPORT_EXT_RE_1 = qr/\.(ova|ovf|qcow2|raw|vmdk)/;
our $SAFE_CHAR_CLASS_RE = qr/[a-zA-Z0-9\-\.\+\=\_]/;
our $SAFE_CHAR_WITH_WHITESPACE_CLASS_RE = qr/[ a-zA-Z0-9\-\.\+\=\_]/;
our $OVA_CONTENT_RE_1 = qr/${SAFE_CHAR_WITH_WHITESPACE_CLASS_RE}+\.(qcow2|raw|vmdk)/;

# The same acceptance test PVE applies to a third-party plugin module before
# registering it: it must be a PVE::Storage::Plugin, provide api(), and its
# api() must lie in [APIVER - APIAGE, APIVER]. Dies with the message PVE would
# log (PVE itself only warns "Error loading storage plugin ..." and skips the
# plugin). On success the plugin is registered; a warning is printed when its
# API version is older than APIVER. Returns the plugin's api() value.
sub check_custom_plugin {
    my ($modname) = @_;

    require PVE::Storage::Plugin;

    die "not derived from PVE::Storage::Plugin\n" if !$modname->isa('PVE::Storage::Plugin');
    die "does not provide an api() method\n" if !$modname->can('api');

    my $version = $modname->api();
    my $max = APIVER;
    my $min = APIVER - APIAGE;
    die "implements an API version newer than current ($version > $max)\n" if $version > $max;
    die "API version too old, please update the plugin ($version < $min)\n" if $version < $min;

    $modname->register();

    warn "Plugin \"$modname\" is implementing an older storage API, an upgrade is recommended\n"
        if $version != $max;

    return $version;
}

# Name of the marker file that protects a backup archive from removal
# (the Dir plugin's 'protected' volume attribute).
sub protection_file_path {
    my ($path) = @_;
    return "$path.protected";
}

# ---------------------------------------------------------------------------
# The storage-level entry points qemu-server and the API use, for a $cfg
# ({ ids => { STOREID => $scfg } }, e.g. from PVE::Storage::Plugin->parse_config):
# each finds the plugin of the storage and calls it as the real module does.

sub storage_config {
    my ($cfg, $storeid, $noerr) = @_;
    die "no storage ID specified\n" if !$storeid;
    my $scfg = $cfg->{ids}->{$storeid};
    die "storage '$storeid' does not exist\n" if !$noerr && !$scfg;
    return $scfg;
}

sub parse_volume_id {
    my ($volid, $noerr) = @_;
    require PVE::Storage::Plugin;
    return PVE::Storage::Plugin::parse_volume_id($volid, $noerr);
}

my sub plugin_of {
    my ($cfg, $volid) = @_;
    my ($storeid, $volname) = parse_volume_id($volid);
    my $scfg = storage_config($cfg, $storeid);
    return (PVE::Storage::Plugin->lookup($scfg->{type}), $scfg, $storeid, $volname);
}

sub parse_volname {
    my ($cfg, $volid) = @_;
    my ($plugin, undef, undef, $volname) = plugin_of($cfg, $volid);
    return $plugin->parse_volname($volname);
}

sub path {
    my ($cfg, $volid, $snapname) = @_;
    my ($plugin, $scfg, $storeid, $volname) = plugin_of($cfg, $volid);
    return $plugin->path($scfg, $volname, $storeid, $snapname);
}

# Reduced: no disabled/node checks, no udev settling.
sub activate_storage {
    my ($cfg, $storeid, $cache) = @_;
    my $scfg = storage_config($cfg, $storeid);
    PVE::Storage::Plugin->lookup($scfg->{type})->activate_storage($storeid, $scfg, $cache // {});
    return;
}

sub volume_resize {
    my ($cfg, $volid, $size, $running, $snapname) = @_;
    $size += (1024 - $size % 1024) % 1024;
    my ($plugin, $scfg, $storeid, $volname) = plugin_of($cfg, $volid);
    return $plugin->volume_resize($scfg, $storeid, $volname, $size, $running, $snapname);
}

sub volume_snapshot {
    my ($cfg, $volid, $snap) = @_;
    my ($plugin, $scfg, $storeid, $volname) = plugin_of($cfg, $volid);
    return $plugin->volume_snapshot($scfg, $storeid, $volname, $snap);
}

sub volume_snapshot_rollback {
    my ($cfg, $volid, $snap) = @_;
    my ($plugin, $scfg, $storeid, $volname) = plugin_of($cfg, $volid);
    $plugin->volume_rollback_is_possible($scfg, $storeid, $volname, $snap);
    return $plugin->volume_snapshot_rollback($scfg, $storeid, $volname, $snap);
}

sub volume_snapshot_delete {
    my ($cfg, $volid, $snap, $running) = @_;
    my ($plugin, $scfg, $storeid, $volname) = plugin_of($cfg, $volid);
    return $plugin->volume_snapshot_delete($scfg, $storeid, $volname, $snap, $running);
}

sub volume_snapshot_info {
    my ($cfg, $volid) = @_;
    my ($plugin, $scfg, $storeid, $volname) = plugin_of($cfg, $volid);
    return $plugin->volume_snapshot_info($scfg, $storeid, $volname);
}

# Under the storage lock, as the real one.
sub rename_snapshot {
    my ($cfg, $volid, $source_snap, $target_snap) = @_;
    die "no volid provided\n" if !$volid;
    die "no source snapshot provided\n" if !$source_snap;
    die "no target snapshot provided\n" if !$target_snap;
    my ($plugin, $scfg, $storeid, $volname) = plugin_of($cfg, $volid);
    activate_storage($cfg, $storeid);
    return $plugin->cluster_lock_storage($storeid, $scfg->{shared}, undef,
        sub { $plugin->rename_snapshot($scfg, $storeid, $volname, $source_snap, $target_snap) });
}

sub vdisk_list {
    my ($cfg, $storeid, $vmid, $vollist) = @_;
    my $scfg = storage_config($cfg, $storeid);
    my $plugin = PVE::Storage::Plugin->lookup($scfg->{type});
    my $res = $plugin->list_images($storeid, $scfg, $vmid, $vollist, {});
    return { $storeid => [sort { lc($a->{volid}) cmp lc($b->{volid}) } @$res] };
}

# A base volume is used when a volume of the storage is named as its clone
# ("BASEVMID/BASENAME/VMID/NAME"): the names list_images gives decide.
sub volume_is_base_and_used {
    my ($cfg, $volid) = @_;
    my ($plugin, $scfg, $storeid, $volname) = plugin_of($cfg, $volid);
    my (undef, $name, $vmid, undef, undef, $isBase) = $plugin->parse_volname($volname);
    return 0 if !$isBase;
    for my $info (@{ $plugin->list_images($storeid, $scfg) }) {
        my (undef, $tmpvolname) = parse_volume_id($info->{volid});
        my ($basename, $basevmid);
        eval { (undef, undef, undef, $basename, $basevmid) = $plugin->parse_volname($tmpvolname) };
        return 1 if $basename && defined($basevmid) && $basevmid == $vmid && $basename eq $name;
    }
    return 0;
}

# qm destroy's removal of a disk: under the storage lock, refused for a base
# still used by linked clones, then the plugin's free_image. No cleanup
# worker is forked by the stand-in.
sub vdisk_free {
    my ($cfg, $volid) = @_;
    my ($plugin, $scfg, $storeid, $volname) = plugin_of($cfg, $volid);
    activate_storage($cfg, $storeid);
    $plugin->cluster_lock_storage($storeid, $scfg->{shared}, undef, sub {
        die "base volume '$volname' is still in use by linked clones\n" if volume_is_base_and_used($cfg, $volid);
        my (undef, undef, undef, undef, undef, $isBase, $format) = $plugin->parse_volname($volname);
        $plugin->free_image($storeid, $scfg, $volname, $isBase, $format);
    });
    return;
}

sub volume_export {
    my ($cfg, $fh, $volid, $format, $snapshot, $base_snapshot, $with_snapshots) = @_;
    my ($storeid, $volname) = parse_volume_id($volid, 1);
    die "cannot export volume '$volid'\n" if !$storeid;
    my ($plugin, $scfg) = plugin_of($cfg, $volid);
    return $plugin->volume_export($scfg, $storeid, $fh, $volname, $format, $snapshot, $base_snapshot, $with_snapshots);
}

sub volume_import {
    my ($cfg, $fh, $volid, $format, $snapshot, $base_snapshot, $with_snapshots, $allow_rename) = @_;
    my ($storeid, $volname) = parse_volume_id($volid, 1);
    die "cannot import into volume '$volid'\n" if !$storeid;
    my ($plugin, $scfg) = plugin_of($cfg, $volid);
    return $plugin->volume_import($scfg, $storeid, $fh, $volname, $format, $snapshot, $base_snapshot,
        $with_snapshots, $allow_rename) // $volid;
}

sub volume_export_formats {
    my ($cfg, $volid, $snapshot, $base_snapshot, $with_snapshots) = @_;
    my ($storeid, $volname) = parse_volume_id($volid, 1);
    return if !$storeid;
    my ($plugin, $scfg) = plugin_of($cfg, $volid);
    return $plugin->volume_export_formats($scfg, $storeid, $volname, $snapshot, $base_snapshot, $with_snapshots);
}

sub volume_import_formats {
    my ($cfg, $volid, $snapshot, $base_snapshot, $with_snapshots) = @_;
    my ($storeid, $volname) = parse_volume_id($volid, 1);
    return if !$storeid;
    my ($plugin, $scfg) = plugin_of($cfg, $volid);
    return $plugin->volume_import_formats($scfg, $storeid, $volname, $snapshot, $base_snapshot, $with_snapshots);
}

sub volume_transfer_formats {
    my ($cfg, $src_volid, $dst_volid, $snapshot, $base_snapshot, $with_snapshots) = @_;
    my @export = volume_export_formats($cfg, $src_volid, $snapshot, $base_snapshot, $with_snapshots);
    my %import = map { $_ => 1 } volume_import_formats($cfg, $dst_volid, $snapshot, $base_snapshot, $with_snapshots);
    return grep { $import{$_} } @export;
}

# Reduced: a migration to a storage of this node. The real one pipes
# `pvesm export` into `pvesm import` (over ssh for another node); here the
# export is written to a temporary file and imported from it in-process.
# Same choice of format, same refusal when none fits, same plugin calls.
sub storage_migrate {
    my ($cfg, $volid, $target_sshinfo, $target_storeid, $opts) = @_;
    die "storage_migrate: only local targets in the test stand-in\n" if defined($target_sshinfo);
    my ($storeid, $volname) = parse_volume_id($volid);
    my $scfg = storage_config($cfg, $storeid);
    return $volid if $storeid eq $target_storeid && $scfg->{shared};
    my $tcfg = storage_config($cfg, $target_storeid);
    die "storage_migrate: the test stand-in needs storages of one type\n" if $scfg->{type} ne $tcfg->{type};
    my $target_volid = "$target_storeid:" . ($opts->{target_volname} // $volname);
    my @formats = volume_transfer_formats($cfg, $volid, $target_volid, $opts->{snapshot}, $opts->{base_snapshot},
        $opts->{with_snapshots});
    die "cannot migrate from storage type '$scfg->{type}' to '$tcfg->{type}'\n" if !@formats;
    require File::Temp;
    my $fh = File::Temp->new();
    binmode($fh);
    volume_export($cfg, $fh, $volid, $formats[0], $opts->{snapshot}, $opts->{base_snapshot}, $opts->{with_snapshots});
    sysseek($fh, 0, 0);
    return volume_import($cfg, $fh, $target_volid, $formats[0], $opts->{snapshot}, $opts->{base_snapshot},
        $opts->{with_snapshots}, $opts->{allow_rename});
}

1;
