# Test-only clean-room stand-in for Proxmox's PVE::Storage::DirPlugin
# (pve-storage, Proxmox VE 9.x): storage type 'dir', its plugindata,
# properties and options (including 'snapshot-as-volume-chain', settable only
# when the storage is created), the mount point handling, backup notes and
# protection, path validation on creation, and volume_qemu_snapshot_method
# ('mixed' for qcow2 with the option set). Written from the documented
# contract; this is not Proxmox's code.
package PVE::Storage::DirPlugin;

use strict;
use warnings;

use Cwd ();
use Encode qw(decode encode);
use File::Spec;
use POSIX qw(ENOENT);

use PVE::JSONSchema qw(get_standard_option);
use PVE::Storage::Plugin;
use PVE::Tools;

use base qw(PVE::Storage::Plugin);

sub type { return 'dir' }

sub plugindata {
    return {
        content => [
            {
                images => 1,
                rootdir => 1,
                vztmpl => 1,
                iso => 1,
                backup => 1,
                snippets => 1,
                none => 1,
                import => 1,
            },
            { images => 1, rootdir => 1 },
        ],
        format => [{ raw => 1, qcow2 => 1, vmdk => 1, subvol => 1 }, 'raw'],
        'sensitive-properties' => {},
    };
}

sub properties {
    return {
        path => {
            description => "File system path.",
            type => 'string',
            format => 'pve-storage-path',
        },
        mkdir => {
            description => "Create the directory if it doesn't exist (deprecated).",
            type => 'boolean',
            default => 'yes',
        },
        'create-base-path' => {
            description => "Create the base directory if it doesn't exist.",
            type => 'boolean',
            default => 'yes',
        },
        'create-subdirs' => {
            description => "Populate the directory with the default structure.",
            type => 'boolean',
            default => 'yes',
        },
        is_mountpoint => {
            description => "The path is an externally managed mount point (yes/no or the mount point).",
            type => 'string',
            default => 'no',
        },
        bwlimit => get_standard_option('bwlimit'),
    };
}

sub options {
    return {
        path => { fixed => 1 },
        'content-dirs' => { optional => 1 },
        nodes => { optional => 1 },
        shared => { optional => 1 },
        disable => { optional => 1 },
        'prune-backups' => { optional => 1 },
        'max-protected-backups' => { optional => 1 },
        content => { optional => 1 },
        format => { optional => 1 },
        mkdir => { optional => 1 },
        'create-base-path' => { optional => 1 },
        'create-subdirs' => { optional => 1 },
        is_mountpoint => { optional => 1 },
        bwlimit => { optional => 1 },
        preallocation => { optional => 1 },
        ($PVE::Storage::Plugin::PVE8 ? () : ('snapshot-as-volume-chain' => { optional => 1, fixed => 1 })),
    };
}

# ---------------------------------------------------------------------------
# mount points

sub path_is_mounted {
    my ($mountpoint, $mountdata) = @_;

    $mountpoint = Cwd::realpath($mountpoint);
    return 0 if !defined($mountpoint);

    $mountdata //= parse_proc_mounts();
    return 1 if grep { $_->[1] eq $mountpoint } @$mountdata;
    return undef;
}

# [[device, mountpoint, fstype, options], ...] from /proc/self/mounts
sub parse_proc_mounts {
    my $res = [];
    open(my $fh, '<', '/proc/self/mounts') or return $res;
    while (my $line = <$fh>) {
        my @f = split(/\s+/, $line);
        s/\\040/ /g for @f;
        push @$res, [@f[0 .. 3]];
    }
    close($fh);
    return $res;
}

# undef when is_mountpoint is unset or false, the storage path when it is
# true, else the mount point path it names.
sub parse_is_mountpoint {
    my ($scfg) = @_;
    my $v = $scfg->{is_mountpoint};
    return undef if !defined($v);
    my $b = PVE::JSONSchema::parse_boolean($v);
    return $b ? $scfg->{path} : undef if defined($b);
    return $v;
}

# ---------------------------------------------------------------------------
# backup notes and protection

my sub read_notes {
    my ($class, $scfg, $storeid, $volname) = @_;
    my ($vtype) = $class->parse_volname($volname);
    return if $vtype ne 'backup';
    my $path = $class->filesystem_path($scfg, $volname) . PVE::Storage::Plugin::NOTES_EXT;
    return '' if !-f $path;
    my $data = PVE::Tools::file_get_contents($path);
    return eval { decode('UTF-8', $data, 1) } // $data;
}

my sub write_notes {
    my ($class, $scfg, $storeid, $volname, $notes) = @_;
    my ($vtype) = $class->parse_volname($volname);
    die "only backups can have notes\n" if $vtype ne 'backup';
    my $path = $class->filesystem_path($scfg, $volname) . PVE::Storage::Plugin::NOTES_EXT;
    if (defined($notes) && $notes ne '') {
        PVE::Tools::file_set_contents($path, encode('UTF-8', $notes));
    } else {
        unlink($path) or $! == ENOENT or die "could not delete notes - $!\n";
    }
    return;
}

sub get_volume_notes {
    my ($class, $scfg, $storeid, $volname, $timeout) = @_;
    return read_notes($class, $scfg, $storeid, $volname);
}

sub update_volume_notes {
    my ($class, $scfg, $storeid, $volname, $notes, $timeout) = @_;
    return write_notes($class, $scfg, $storeid, $volname, $notes);
}

sub get_volume_attribute {
    my ($class, $scfg, $storeid, $volname, $attribute) = @_;

    return read_notes($class, $scfg, $storeid, $volname) if $attribute eq 'notes';

    my ($vtype) = $class->parse_volname($volname);
    return if $vtype ne 'backup';

    if ($attribute eq 'protected') {
        my $path = $class->filesystem_path($scfg, $volname);
        return -e PVE::Storage::protection_file_path($path) ? 1 : 0;
    }
    return;
}

sub update_volume_attribute {
    my ($class, $scfg, $storeid, $volname, $attribute, $value) = @_;

    return write_notes($class, $scfg, $storeid, $volname, $value) if $attribute eq 'notes';

    my ($vtype) = $class->parse_volname($volname);
    die "only backups support attribute '$attribute'\n" if $vtype ne 'backup';

    if ($attribute eq 'protected') {
        my $path = $class->filesystem_path($scfg, $volname);
        my $pfile = PVE::Storage::protection_file_path($path);
        return if !((-e $pfile) xor $value);
        if ($value) {
            open(my $fh, '>>', $pfile) or die "unable to create protection file '$pfile' - $!\n";
            close($fh);
        } else {
            unlink($pfile) or $! == ENOENT or die "could not delete protection file '$pfile' - $!\n";
        }
        return;
    }

    die "attribute '$attribute' is not supported for storage type '$scfg->{type}'\n";
}

# ---------------------------------------------------------------------------
# storage

sub status {
    my ($class, $storeid, $scfg, $cache) = @_;
    if (defined(my $mp = parse_is_mountpoint($scfg))) {
        $cache->{mountdata} //= parse_proc_mounts();
        return undef if !path_is_mounted($mp, $cache->{mountdata});
    }
    return $class->SUPER::status($storeid, $scfg, $cache);
}

sub activate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;

    my $path = $scfg->{path};
    my $mp = parse_is_mountpoint($scfg);
    if (defined($mp) && !path_is_mounted($mp, $cache->{mountdata})) {
        die "unable to activate storage '$storeid' - directory is expected to be a mount point"
            . " but is not mounted: '$mp'\n";
    }

    $class->config_aware_base_mkdir($scfg, $path);
    return $class->SUPER::activate_storage($storeid, $scfg, $cache);
}

# On creation the path must be absolute and made of safe characters; trailing
# slashes are dropped.
sub check_config {
    my ($class, $section_id, $config, $create, $skip_schema_check) = @_;
    my $opts = PVE::SectionConfig::check_config($class, $section_id, $config, $create, $skip_schema_check);
    return $opts if !$create;
    die "illegal path for directory storage: $opts->{path}\n"
        if ($opts->{path} // '') !~ m|^/[-/a-zA-Z0-9_.@]+$|;
    $opts->{path} = File::Spec->canonpath($opts->{path});
    return $opts;
}

# ---------------------------------------------------------------------------
# QEMU

sub volume_qemu_snapshot_method {
    my ($class, $storeid, $scfg, $volname) = @_;
    my $format = ($class->parse_volname($volname))[6] // '';
    return 'storage' if $format ne 'qcow2';
    return $scfg->{'snapshot-as-volume-chain'} ? 'mixed' : 'qemu';
}

1;
