# Test-only clean-room stand-in for Proxmox's PVE::Storage::Plugin
# (pve-storage, Proxmox VE 9.x). It reproduces the documented contract of the
# base storage plugin for directory-style storages: the SectionConfig
# registration data, volume name parsing, the images/<vmid>/ layout, image
# allocation/removal/listing, the snapshot entry points with their error
# messages, the feature table and the qemu_blockdev_options/
# volume_qemu_snapshot_method defaults. It is written from that contract and
# is not Proxmox's code.
#
# Deliberate differences from the real module (see t/lib/PVE/README.md):
#   * no qemu-img is ever needed: qcow2 images are created through the hook
#     $class->qcow2_create($path, $size_kib, $opts) and backed images through
#     $class->qcow2_create_backed(...); the stand-in versions of both die, a
#     plugin (or a test) provides them. Image facts (virtual size, backing
#     file) are read from the qcow2 header in pure Perl.
#   * qemu-img commands of the "option off" paths (internal snapshots, qcow2
#     resize) go through $class->run_qemu_img(@args), which records them in
#     @PVE::Storage::Plugin::QEMU_IMG_LOG and runs nothing (unless
#     PVE_STANDIN_RUN_QEMU_IMG=1).
#   * with 'snapshot-as-volume-chain' set, volume_snapshot,
#     volume_snapshot_rollback, offline volume_snapshot_delete and
#     volume_snapshot_info die "... not implemented by the test stand-in ...":
#     a plugin under test has to implement them itself. The chain-aware parts
#     that only combine other methods (free_image, rename_volume,
#     volume_rollback_is_possible, running volume_snapshot_delete,
#     rename_snapshot, filesystem_path) behave like the real ones.
#   * PVE_STANDIN_PVE8=1 (set before loading) leaves the
#     'snapshot-as-volume-chain' property out, as on Proxmox VE 8.
package PVE::Storage::Plugin;

use strict;
use warnings;

use Cwd qw(abs_path);
use Fcntl qw(:mode);
use File::Basename qw(basename dirname);
use File::Glob qw(bsd_glob);
use File::Path qw(make_path remove_tree);
use File::Spec;

use PVE::JSONSchema qw(get_standard_option register_standard_option);
use PVE::Storage;
use PVE::Tools;

use base qw(PVE::SectionConfig);

use constant KNOWN_COMPRESSION_FORMATS => ('gz', 'lzo', 'zst', 'bz2');
use constant COMPRESSOR_RE => join('|', KNOWN_COMPRESSION_FORMATS);
use constant LOG_EXT => ".log";
use constant NOTES_EXT => ".notes";

our @SHARED_STORAGE = qw(iscsi nfs cifs rbd cephfs iscsidirect zfs drbd pbs);

our $QCOW2_PREALLOCATION = { off => 1, metadata => 1, falloc => 1, full => 1 };
our $RAW_PREALLOCATION = { off => 1, falloc => 1, full => 1 };

our $MAX_VOLUMES_PER_GUEST = 1024;

# Test knobs.
our $PVE8 = $ENV{PVE_STANDIN_PVE8} ? 1 : 0;
our @QEMU_IMG_LOG;

my $CHAIN = 'snapshot-as-volume-chain';

sub standin_not_implemented {
    my ($what) = @_;
    die "PVE::Storage::Plugin test stand-in: $what with '$CHAIN' is not implemented"
        . " - the plugin under test must provide it\n";
}

# ---------------------------------------------------------------------------
# formats and standard options used by the property list

sub verify_path {
    my ($path, $noerr) = @_;
    return $path if defined($path) && $path =~ m|^/[^;()]+|;
    return undef if $noerr;
    die "value does not look like a valid absolute path\n";
}

sub verify_options {
    my ($value, $noerr) = @_;
    return $value if defined($value) && $value =~ m/^\S+$/;
    return undef if $noerr;
    die "invalid options '" . ($value // '') . "'\n";
}

sub verify_content {
    my ($ct, $noerr) = @_;
    return $ct if $ct eq 'import';
    my %all = map { $_ => 1 } qw(images rootdir vztmpl iso backup snippets none import);
    return $ct if $all{$ct};
    return undef if $noerr;
    die "invalid content type '$ct'\n";
}

sub parse_volume_id {
    my ($volid, $noerr) = @_;
    if (defined($volid) && $volid =~ m/^([a-z][a-z0-9\-\_\.]*[a-z0-9]):(.+)$/i) {
        return wantarray ? ($1, $2) : $1;
    }
    return undef if $noerr;
    die "unable to parse volume ID '" . ($volid // '') . "'\n";
}

sub verify_dir_override {
    my ($value, $noerr) = @_;
    if ($value =~ m/^([a-z]+)=([^.]*(?:\.?[^.]+)+)$/) {
        my ($ct, $rel) = ($1, $2);
        if (verify_content($ct, 1) && length($rel) < 1023 && !grep { length($_) >= 255 } split('/', $rel)) {
            return $value;
        }
    }
    return undef if $noerr;
    die "invalid override '$value'\n";
}

PVE::JSONSchema::register_format('pve-storage-path', \&verify_path);
PVE::JSONSchema::register_format('pve-storage-options', \&verify_options);
PVE::JSONSchema::register_format('pve-storage-content', \&verify_content);
PVE::JSONSchema::register_format('pve-volume-id', \&parse_volume_id);
PVE::JSONSchema::register_format('pve-dir-override', \&verify_dir_override);

my %keep_n = (optional => 1, type => 'integer', minimum => 0);
our $prune_backups_format = {
    'keep-all' => { type => 'boolean', optional => 1 },
    map { ("keep-$_" => {%keep_n}) } qw(last hourly daily weekly monthly yearly),
};
PVE::JSONSchema::register_format('prune-backups', $prune_backups_format);

register_standard_option('prune-backups', {
    description => "Retention options for backups.",
    optional => 1,
    type => 'string',
    format => 'prune-backups',
});
register_standard_option('pve-storage-image-format', {
    type => 'string',
    enum => ['raw', 'qcow2', 'subvol', 'vmdk'],
    description => "Format of the image.",
});

# ---------------------------------------------------------------------------
# registration data shared by every storage plugin type

my $defaultData = {
    propertyList => {
        type => { description => "Storage type." },
        storage => get_standard_option('pve-storage-id'),
        nodes => get_standard_option('pve-node-list', { optional => 1 }),
        content => {
            description => "Allowed content types.",
            type => 'string',
            format => 'pve-storage-content-list',
            optional => 1,
        },
        disable => { description => "Flag to disable the storage.", type => 'boolean', optional => 1 },
        maxfiles => { type => 'integer', minimum => 0, optional => 1 },
        'prune-backups' => get_standard_option('prune-backups'),
        'max-protected-backups' => { type => 'integer', minimum => -1, optional => 1 },
        shared => { type => 'boolean', optional => 1 },
        subdir => { type => 'string', format => 'pve-storage-path', optional => 1 },
        format => get_standard_option('pve-storage-image-format', { optional => 1 }),
        preallocation => {
            type => 'string',
            enum => ['off', 'metadata', 'falloc', 'full'],
            default => 'metadata',
            optional => 1,
        },
        'content-dirs' => { type => 'string', format => 'pve-dir-override-list', optional => 1 },
        options => { type => 'string', format => 'pve-storage-options', optional => 1 },
        port => { type => 'integer', minimum => 1, maximum => 65535, optional => 1 },
        (
            $PVE8
            ? ()
            : (
                $CHAIN => {
                    type => 'boolean',
                    description => 'Take snapshots as a chain of volumes (qcow2 backing files).',
                    default => 0,
                    optional => 1,
                },
            )
        ),
    },
};

sub private { return $defaultData }

sub content_hash_to_string {
    my ($hash) = @_;
    return join(',', grep { $hash->{$_} } sort keys %$hash);
}

sub valid_content_types {
    my ($type) = @_;
    my $def = $defaultData->{plugindata}->{$type} or return {};
    return $def->{content}->[0];
}

sub dirs_hash_to_string {
    my ($hash) = @_;
    return join(',', map { "$_=$hash->{$_}" } sort keys %$hash);
}

sub sensitive_properties {
    my ($type) = @_;
    my $data = $defaultData->{plugindata}->{$type} // {};
    if (my $s = $data->{'sensitive-properties'}) {
        return [sort keys %$s];
    }
    return [qw(encryption-key keyring master-pubkey password)];
}

sub storage_has_feature {
    my ($type, $feature) = @_;
    my $data = $defaultData->{plugindata}->{$type} // {};
    return $data->{features} ? $data->{features}->{$feature} : undef;
}

sub get_formats {
    my ($class, $scfg, $storeid) = @_;
    my $data = $defaultData->{plugindata}->{ $scfg->{type} } // {};
    return { default => 'raw', valid => { raw => 1 } } if !defined($data->{format});
    return {
        default => $scfg->{format} || $data->{format}->[1],
        valid => { %{ $data->{format}->[0] } },
    };
}

sub parse_section_header {
    my ($class, $line) = @_;
    if ($line =~ m/^(\S+):\s*(\S+)\s*$/) {
        my ($type, $storeid) = (lc($1), $2);
        my $errmsg;
        eval { PVE::JSONSchema::parse_storage_id($storeid) };
        $errmsg = $@ if $@;
        return ($type, $storeid, $errmsg, {});
    }
    return;
}

sub decode_value {
    my ($class, $type, $key, $value) = @_;

    my $def = $defaultData->{plugindata}->{$type} // {};

    if ($key eq 'content') {
        my $valid = $def->{content}->[0] // {};
        my $res = {};
        for my $c (PVE::Tools::split_list($value)) {
            if (!$valid->{$c}) {
                warn "storage does not support content type '$c'\n";
                next;
            }
            $res->{$c} = 1;
        }
        die "unable to combine 'none' with other content types\n"
            if $res->{none} && scalar(keys %$res) > 1;
        die "storage does not support content type 'none'\n" if !%$res && !$valid->{none};
        return $res;
    } elsif ($key eq 'format') {
        my $valid = $def->{format}->[0] // {};
        if (!$valid->{$value}) {
            warn "storage does not support format '$value'\n";
            return undef;
        }
        return $value;
    } elsif ($key eq 'nodes') {
        return { map { $_ => 1 } grep { PVE::JSONSchema::pve_verify_node_name($_, 1) }
                PVE::Tools::split_list($value) };
    } elsif ($key eq 'content-dirs') {
        my $valid = $def->{content}->[0] // {};
        my $res = {};
        for my $item (PVE::Tools::split_list($value)) {
            my ($ct, $dir) = split(/=/, $item, 2);
            if (!$valid->{$ct}) {
                warn "storage does not support content type '$ct'\n";
                next;
            }
            $res->{$ct} = $dir;
        }
        return $res;
    }
    return $value;
}

sub encode_value {
    my ($class, $type, $key, $value) = @_;
    return join(',', sort keys %$value) if $key eq 'nodes';
    return content_hash_to_string($value) || 'none' if $key eq 'content';
    return dirs_hash_to_string($value) if $key eq 'content-dirs';
    return $value;
}

# Like the real one, fills in the type's default content and marks shared
# storage types; unlike it, no implicit 'local' storage is added.
sub parse_config {
    my ($class, $filename, $raw) = @_;
    my $cfg = $class->SUPER::parse_config($filename, $raw);
    for my $storeid (keys %{ $cfg->{ids} }) {
        my $d = $cfg->{ids}->{$storeid};
        my $def = $defaultData->{plugindata}->{ $d->{type} } // {};
        $d->{content} = { %{ $def->{content}->[1] } } if $def->{content} && !$d->{content};
        $d->{shared} = 1 if grep { $_ eq $d->{type} } @SHARED_STORAGE;
    }
    return $cfg;
}

# LVM names: letters, digits, '-', '_' and '.', not starting or ending
# with '-', '_' or '.' (the format 'pve-storage-vgname').
sub parse_lvm_name {
    my ($name, $noerr) = @_;
    if ($name !~ m/^[a-z0-9][a-z0-9\-\_\.]*[a-z0-9]$/i) {
        return undef if $noerr;
        die "lvm name '$name' contains illegal characters\n";
    }
    return $name;
}
PVE::JSONSchema::register_format('pve-storage-vgname', \&parse_lvm_name);

# The preallocation mode to use for a new image of format $fmt (undef for
# formats without one).
sub preallocation_cmd_opt {
    my ($scfg, $fmt) = @_;
    my $prealloc = $scfg->{preallocation};
    if ($fmt eq 'qcow2') {
        $prealloc //= 'metadata';
        die "preallocation mode '$prealloc' not supported by format '$fmt'\n"
            if !$QCOW2_PREALLOCATION->{$prealloc};
        return $prealloc;
    } elsif ($fmt eq 'raw') {
        $prealloc //= 'off';
        $prealloc = 'off' if $prealloc eq 'metadata';
        die "preallocation mode '$prealloc' not supported by format '$fmt'\n"
            if !$RAW_PREALLOCATION->{$prealloc};
        return $prealloc;
    }
    return;
}

# ---------------------------------------------------------------------------
# hooks and locks

sub on_add_hook { return undef }
sub on_update_hook { return undef }
sub on_delete_hook { return undef }

# Runs $func under the storage lock. The real module uses a node-local flock
# for local storages and the cluster file system lock for shared ones; the
# stand-in uses a local flock for both.
sub cluster_lock_storage {
    my ($class, $storeid, $shared, $timeout, $func, @param) = @_;
    my $lockdir = $ENV{PVE_STANDIN_LOCKDIR} // File::Spec->catdir(File::Spec->tmpdir(), "pve-standin-locks-$<");
    make_path($lockdir) if !-d $lockdir;
    my $res = PVE::Tools::lock_file("$lockdir/pve-storage-$storeid", $timeout, $func, @param);
    die $@ if $@;
    return $res;
}

# Test seam: qemu-img invocations of the paths that do not involve volume
# chains. Recorded, not executed (set PVE_STANDIN_RUN_QEMU_IMG=1 to run them).
sub run_qemu_img {
    my ($class, @args) = @_;
    push @QEMU_IMG_LOG, [@args];
    PVE::Tools::run_command(['/usr/bin/qemu-img', @args]) if $ENV{PVE_STANDIN_RUN_QEMU_IMG};
    return;
}

# Test seam: create an empty qcow2 image of $size_kib KiB at $path.
# $opts->{preallocation} carries the preallocation mode.
sub qcow2_create {
    my ($class, $path, $size_kib, $opts) = @_;
    die "qcow2_create: not implemented by the test stand-in (the plugin or the test must provide it)\n";
}

# Test seam: create a qcow2 image at $path backed by $backing (a name relative
# to the directory of $path, or absolute) of format $backing_fmt.
sub qcow2_create_backed {
    my ($class, $path, $backing, $backing_fmt, $opts) = @_;
    die "qcow2_create_backed: not implemented by the test stand-in (the plugin or the test must provide it)\n";
}

# ---------------------------------------------------------------------------
# names and paths

# The snapshot file of $volname's snapshot $snap: "snap-<snap>-<volume file>";
# 'current' is the volume file itself.
my sub snap_file_name {
    my ($class, $volname, $snap) = @_;
    die "missing snapname\n" if !$snap;
    my $name = ($class->parse_volname($volname))[1];
    return $snap eq 'current' ? $name : "snap-$snap-$name";
}

# The snapshot name encoded in a snapshot file name (undef if it is none).
my sub snap_name_of_file {
    my ($file) = @_;
    return $file =~ m/^snap-(.*)-vm(.*)$/ ? $1 : undef;
}

# Splits an image file name into (name, format, isBase). Snapshot files of
# volume chains are refused; other names with a known extension are taken
# as they are (pve-storage 9.1.7).
sub parse_name_dir {
    my ($name) = @_;

    if ($name =~ m!^((vm-|base-|subvol-)(\d+)-[^/\s]+\.(raw|qcow2|vmdk|subvol))$!) {
        my $isbase = $2 eq 'base-' ? $2 : undef;
        return ($1, $4, $isbase);
    } elsif ($name =~ m!^snap-.*\.qcow2$!) {
        die "'$name' is a snapshot filename, not a volume!\n";
    } elsif ($name =~ m!^((base-)?[^/\s]+\.(raw|qcow2|vmdk|subvol))$!) {
        return ($1, $3, $2);
    }
    die "unable to parse volume filename '$name'\n";
}

# Returns ($vtype, $name, $vmid, $basename, $basevmid, $isBase, $format).
sub parse_volname {
    my ($class, $volname) = @_;

    if ($volname =~ m!^(\d+)/(\S+)/(\d+)/(\S+)$!) {
        my ($basevmid, $basename, $vmid, $name) = ($1, $2, $3, $4);
        parse_name_dir($basename);
        my (undef, $format, $isBase) = parse_name_dir($name);
        return ('images', $name, $vmid, $basename, $basevmid, $isBase, $format);
    } elsif ($volname =~ m!^(\d+)/(\S+)$!) {
        my ($vmid, $name) = ($1, $2);
        my (undef, $format, $isBase) = parse_name_dir($name);
        return ('images', $name, $vmid, undef, undef, $isBase, $format);
    } elsif ($volname =~ m!^iso/([^/]+$PVE::Storage::ISO_EXT_RE_0)$!) {
        return ('iso', $1, undef, undef, undef, undef, 'raw');
    } elsif ($volname =~ m!^vztmpl/([^/]+$PVE::Storage::VZTMPL_EXT_RE_1)$!) {
        return ('vztmpl', $1, undef, undef, undef, undef, 'raw');
    } elsif ($volname =~ m!^rootdir/(\d+)$!) {
        return ('rootdir', $1, $1);
    } elsif ($volname =~ m!^backup/([^/]+$PVE::Storage::BACKUP_EXT_RE_2)$!) {
        my $fn = $1;
        my $vmid = $fn =~ m/^vzdump-(?:openvz|lxc|qemu)-(\d+)-.+/ ? $1 : undef;
        return ('backup', $fn, $vmid, undef, undef, undef, 'raw');
    } elsif ($volname =~ m!^snippets/([^/]+)$!) {
        return ('snippets', $1, undef, undef, undef, undef, 'raw');
    } elsif ($volname =~ m!^import/(${PVE::Storage::SAFE_CHAR_WITH_WHITESPACE_CLASS_RE}+\.ova/${PVE::Storage::OVA_CONTENT_RE_1})$!) {
        return ('import', $1, undef, undef, undef, undef, "ova+$2");
    } elsif ($volname =~ m!^import/(${PVE::Storage::SAFE_CHAR_WITH_WHITESPACE_CLASS_RE}+$PVE::Storage::IMPORT_EXT_RE_1)$!) {
        return ('import', $1, undef, undef, undef, undef, $2);
    }

    die "unable to parse directory volume name '$volname'\n";
}

my $vtype_subdirs = {
    images => 'images',
    rootdir => 'private',
    iso => 'template/iso',
    vztmpl => 'template/cache',
    backup => 'dump',
    snippets => 'snippets',
    import => 'import',
};

sub get_vtype_subdirs { return $vtype_subdirs }

sub get_subdir {
    my ($class, $scfg, $vtype) = @_;
    my $path = $scfg->{path};
    die "storage definition has no path\n" if !$path;
    die "unknown vtype '$vtype'\n" if !exists $vtype_subdirs->{$vtype};
    my $subdir = $scfg->{'content-dirs'}->{$vtype} // $vtype_subdirs->{$vtype};
    return "$path/$subdir";
}

# The file of $volname, or with the option set and a $snapname, the file of
# that snapshot. In list context: ($path, $vmid, $vtype).
sub filesystem_path {
    my ($class, $scfg, $volname, $snapname) = @_;

    my ($vtype, $name, $vmid, undef, undef, $isBase, $format) = $class->parse_volname($volname);
    $name = snap_file_name($class, $volname, $snapname) if $scfg->{$CHAIN} && $snapname;

    die "can't snapshot this image format\n"
        if defined($snapname) && ($format // '') !~ m/^(?:qcow2|qed)$/;

    my $dir = $class->get_subdir($scfg, $vtype);
    $dir .= "/$vmid" if $vtype eq 'images';
    my $path = "$dir/$name";

    return wantarray ? ($path, $vmid, $vtype) : $path;
}

sub path {
    my ($class, $scfg, $volname, $storeid, $snapname) = @_;
    return $class->filesystem_path($scfg, $volname, $snapname);
}

# ---------------------------------------------------------------------------
# image facts without qemu-img

my @checked_formats = qw(raw qcow qcow2 qed vmdk cloop);

# Reads virtual size and backing file name from a qcow2 header.
my sub read_qcow2_header {
    my ($filename) = @_;
    open(my $fh, '<:raw', $filename) or die "qemu-img: Could not open '$filename': $!\n";
    my $n = read($fh, my $hdr, 32);
    if (!$n || $n < 32 || substr($hdr, 0, 4) ne "QFI\xfb") {
        close($fh);
        return undef;
    }
    my (undef, $version, $boff, $bsize, undef, $size) = unpack('a4 N Q> N N Q>', $hdr);
    my $backing;
    if ($boff && $bsize && $bsize < 1024) {
        seek($fh, $boff, 0) or die "qemu-img: Could not read '$filename': $!\n";
        read($fh, $backing, $bsize) == $bsize or die "qemu-img: Could not read '$filename'\n";
    }
    close($fh);
    return { version => $version, size => $size, backing => $backing };
}

# file_size_info($filename, $timeout, $file_format, $untrusted)
# Returns ($size, $format, $used, $parent, $ctime) in list context, the virtual
# size in scalar context. $file_format 'auto-detect' (or undef) probes the
# file; 'qcow2' on a file that is no qcow2 image dies with qemu-img's
# "Image is not in qcow2 format".
sub file_size_info {
    my ($filename, $timeout, $file_format, $untrusted) = @_;

    warn "file_size_info: detected call without \$file_format parameter\n" if !defined($file_format);
    $file_format = undef if defined($file_format) && $file_format eq 'auto-detect';

    my @st = stat($filename);
    if (!@st) {
        my $msg = "failed to stat '$filename'" . (-l $filename ? ' - dangling symlink?' : '') . "\n";
        die $msg if $untrusted;
        warn $msg;
        return undef;
    }
    my ($mode, $size_b, $ctime, $blocks) = @st[2, 7, 10, 12];

    if (S_ISDIR($mode)) {
        if ($file_format && $file_format ne 'subvol') {
            my $msg = "expected format '$file_format', but '$filename' is a directory\n";
            die $msg if $untrusted;
            warn $msg;
        }
        return wantarray ? (0, 'subvol', 0, undef, $ctime) : 0;
    }
    if ($file_format && $file_format eq 'subvol') {
        my $msg = "expected format '$file_format', but '$filename' is not a directory\n";
        die $msg if $untrusted;
        warn $msg;
    }
    if ($file_format && !grep { $_ eq $file_format } @checked_formats) {
        warn "file_size_info: '$filename': falling back to 'raw' from unknown format '$file_format'\n";
        $file_format = 'raw';
    }

    my $used = ($blocks // 0) * 512;
    my ($size, $format, $parent) = ($size_b, 'raw', undef);

    my $q = (!$file_format || $file_format eq 'qcow2') ? read_qcow2_header($filename) : undef;
    if ($file_format && $file_format eq 'qcow2' && !$q) {
        die "qemu-img: Could not open '$filename': Image is not in qcow2 format\n";
    }
    if ($q) {
        ($size, $format, $parent) = ($q->{size}, 'qcow2', $q->{backing});
    } elsif ($file_format) {
        $format = $file_format;
    }

    die "backing file not allowed for untrusted image '$filename'!\n" if $untrusted && $parent;

    return wantarray ? (int($size), $format, int($used), $parent, $ctime) : int($size);
}

sub volume_size_info {
    my ($class, $scfg, $storeid, $volname, $timeout) = @_;
    my $format = ($class->parse_volname($volname))[6];
    my $path = $class->filesystem_path($scfg, $volname);
    return file_size_info($path, $timeout, $format);
}

# ---------------------------------------------------------------------------
# allocation

sub create_base {
    my ($class, $storeid, $scfg, $volname) = @_;

    die "storage definition has no path\n" if !$scfg->{path};

    my ($vtype, $name, $vmid, $basename, $basevmid, $isBase, $format) = $class->parse_volname($volname);
    die "create_base on wrong vtype '$vtype'\n" if $vtype ne 'images';
    die "create_base not possible with base image\n" if $isBase;

    my $path = $class->filesystem_path($scfg, $volname);
    my ($size, undef, undef, $parent) = file_size_info($path, undef, $format);
    die "file_size_info on '$volname' failed\n" if !defined($size);
    die "volname '$volname' contains wrong information about parent\n"
        if $basename && (!$parent || $parent ne "../$basevmid/$basename");

    (my $newname = $name) =~ s/^vm-/base-/;
    my $newvolname = $basename ? "$basevmid/$basename/$vmid/$newname" : "$vmid/$newname";
    my $newpath = $class->filesystem_path($scfg, $newvolname);

    die "file '$newpath' already exists\n" if -f $newpath;
    rename($path, $newpath) or die "rename '$path' to '$newpath' failed - $!\n";
    chmod(0444, $newpath); # nobody writes a base volume
    eval { PVE::Tools::run_command(['/usr/bin/chattr', '+i', $newpath]) }; # nor removes it
    warn $@ if $@;

    return $newvolname;
}

my sub disk_number_of {
    my ($disk_name, $scfg, $vmid, $suffix) = @_;
    my $re = qr/(vm|base)-$vmid-disk-(\d+)$suffix/;
    my $def = $defaultData->{plugindata}->{ $scfg->{type} } // {};
    if ($def->{format} && $def->{format}->[0]->{subvol}) {
        $re = qr/(vm|base|subvol|basevol)-$vmid-disk-(\d+)/;
    }
    return $disk_name =~ $re ? $2 : undef;
}

sub get_next_vm_diskname {
    my ($disk_list, $storeid, $vmid, $fmt, $scfg, $add_fmt_suffix) = @_;

    $fmt //= '';
    my $prefix = $fmt eq 'subvol' ? 'subvol' : 'vm';
    my $suffix = $add_fmt_suffix ? ".$fmt" : '';

    my %used;
    for my $disk (@$disk_list) {
        my $n = disk_number_of($disk, $scfg, $vmid, $suffix);
        $used{$n} = 1 if defined($n);
    }
    for my $i (0 .. $MAX_VOLUMES_PER_GUEST - 1) {
        return "$prefix-$vmid-disk-$i$suffix" if !$used{$i};
    }
    die "unable to allocate an image name for VM $vmid in storage '$storeid'\n";
}

sub find_free_diskname {
    my ($class, $storeid, $scfg, $vmid, $fmt, $add_fmt_suffix) = @_;
    my $disks = $class->list_images($storeid, $scfg, $vmid);
    return get_next_vm_diskname([map { $_->{volid} } @$disks], $storeid, $vmid, $fmt, $scfg,
        $add_fmt_suffix);
}

sub clone_image {
    my ($class, $scfg, $storeid, $volname, $vmid, $snap) = @_;

    die "storage definition has no path\n" if !$scfg->{path};

    my ($vtype, $basename, $basevmid, undef, undef, $isBase, $format) = $class->parse_volname($volname);
    die "clone_image on wrong vtype '$vtype'\n" if $vtype ne 'images';
    die "this storage type does not support clone_image on snapshot\n" if $snap;
    die "this storage type does not support clone_image on subvolumes\n" if $format eq 'subvol';
    die "clone_image only works on base images\n" if !$isBase;

    my $imagedir = $class->get_subdir($scfg, 'images') . "/$vmid";
    make_path($imagedir);

    my $name = $class->find_free_diskname($storeid, $scfg, $vmid, 'qcow2', 1);
    my $newvol = "$basevmid/$basename/$vmid/$name";
    my $path = $class->filesystem_path($scfg, $newvol);

    $class->qcow2_create_backed($path, "../$basevmid/$basename", $format,
        { preallocation => preallocation_cmd_opt($scfg, $format) });

    return $newvol;
}

# alloc_image($storeid, $scfg, $vmid, $fmt, $name, $size_kib) -> "<vmid>/<name>"
sub alloc_image {
    my ($class, $storeid, $scfg, $vmid, $fmt, $name, $size) = @_;

    my $imagedir = $class->get_subdir($scfg, 'images') . "/$vmid";
    make_path($imagedir);

    $name = $class->find_free_diskname($storeid, $scfg, $vmid, $fmt, 1) if !$name;

    my (undef, $tmpfmt) = parse_name_dir($name);
    die "illegal name '$name' - wrong extension for format ('$tmpfmt != '$fmt')\n" if $tmpfmt ne $fmt;

    my $path = "$imagedir/$name";
    die "disk image '$path' already exists\n" if -e $path;

    if ($fmt eq 'subvol') {
        die "storage does not support subvol quotas\n" if $size != 0;
        my $old = umask(0022);
        my $ok = mkdir($path);
        my $err = $!;
        umask($old);
        die "unable to create subvol '$path' - $err\n" if !$ok;
        return "$vmid/$name";
    }

    my $prealloc = preallocation_cmd_opt($scfg, $fmt);
    eval {
        if ($fmt eq 'raw') {
            open(my $fh, '>', $path) or die "unable to create image: '$path' - $!\n";
            truncate($fh, $size * 1024) or die "unable to create image: '$path' - $!\n";
            close($fh);
        } elsif ($fmt eq 'qcow2') {
            $class->qcow2_create($path, $size, { preallocation => $prealloc });
        } else {
            die "unable to create image: the test stand-in cannot create '$fmt' images\n";
        }
    };
    if (my $err = $@) {
        unlink $path;
        rmdir $imagedir;
        die $err;
    }

    return "$vmid/$name";
}

# Removes the volume; with the option set also every snapshot file of its
# chain (as reported by $class->volume_snapshot_info, taken before the volume
# file is removed; failures there only warn).
sub free_image {
    my ($class, $storeid, $scfg, $volname, $isBase, $format) = @_;

    die "cannot remove protected volume '$volname' on '$storeid'\n"
        if $class->get_volume_attribute($scfg, $storeid, $volname, 'protected');

    my $path = $class->filesystem_path($scfg, $volname);

    if ($isBase) {
        eval { PVE::Tools::run_command(['/usr/bin/chattr', '-i', $path]) }; # set by create_base
        warn $@ if $@;
    }

    if (defined($format) && $format eq 'subvol') {
        remove_tree($path);
    } else {
        if (!(-f $path || -l $path)) {
            warn "disk image '$path' does not exist\n";
            return undef;
        }
        my $snapshots = $scfg->{$CHAIN} ? $class->volume_snapshot_info($scfg, $storeid, $volname) : undef;

        unlink($path) or die "unlink '$path' failed - $!\n";

        if ($snapshots) {
            for my $snap (sort { $snapshots->{$b}->{order} <=> $snapshots->{$a}->{order} }
                grep { $_ ne 'current' && $snapshots->{$_}->{ext} } keys %$snapshots)
            {
                eval {
                    my $spath = $class->path($scfg, $volname, $storeid, $snap);
                    unlink($spath) or die "unlink '$spath' failed - $!\n";
                };
                warn $@ if $@;
            }
        }
    }

    rmdir(dirname($path)); # drop the guest's directory if it became empty
    return undef;
}

# ---------------------------------------------------------------------------
# attributes

sub get_volume_notes {
    my ($class, $scfg, $storeid, $volname, $timeout) = @_;
    die "volume notes are not supported for $class";
}

sub update_volume_notes {
    my ($class, $scfg, $storeid, $volname, $notes, $timeout) = @_;
    die "volume notes are not supported for $class";
}

sub get_volume_attribute {
    my ($class, $scfg, $storeid, $volname, $attribute) = @_;
    if ($attribute eq 'notes') {
        my $notes = eval { $class->get_volume_notes($scfg, $storeid, $volname) };
        if (my $err = $@) {
            return if $err =~ m/^volume notes are not supported/;
            die $err;
        }
        return $notes;
    }
    return;
}

sub update_volume_attribute {
    my ($class, $scfg, $storeid, $volname, $attribute, $value) = @_;
    if ($attribute eq 'notes') {
        $class->update_volume_notes($scfg, $storeid, $volname, $value);
    }
    die "attribute '$attribute' is not supported for storage type '$scfg->{type}'\n";
}

# ---------------------------------------------------------------------------
# resize and snapshots

# $size in bytes. Returns 1 when the guest is running (QEMU resizes, also a
# snapshot it commits into), undef otherwise. A snapshot ($snapname) can be
# resized only with the chain option.
sub volume_resize {
    my ($class, $scfg, $storeid, $volname, $size, $running, $snapname) = @_;

    die "can't resize this image format\n" if $volname !~ m/\.(raw|qcow2)$/;
    return 1 if $running;
    die "resizing a snapshot is not supported for $class without '$CHAIN'\n" if !$scfg->{$CHAIN} && $snapname;

    my $path = $class->filesystem_path($scfg, $volname, $snapname);
    my $format = ($class->parse_volname($volname))[6];
    my $prealloc = preallocation_cmd_opt($scfg, $format);

    if ($format eq 'raw') {
        truncate($path, $size) or die "unable to resize '$path' - $!\n";
    } else {
        $class->run_qemu_img('resize', ($prealloc ? ("--preallocation=$prealloc") : ()),
            '-f', $format, $path, $size);
    }
    return undef;
}

sub volume_snapshot {
    my ($class, $scfg, $storeid, $volname, $snap, $running) = @_;

    if ($scfg->{$CHAIN}) {
        die "can't snapshot this image format\n" if $volname !~ m/\.(qcow2)$/;
        standin_not_implemented('volume_snapshot');
    }

    die "can't snapshot this image format\n" if $volname !~ m/\.(qcow2|qed)$/;
    my $path = $class->filesystem_path($scfg, $volname);
    $class->run_qemu_img('snapshot', '-c', $snap, $path);
    return undef;
}

# Dies unless a rollback to $snap is possible; names of snapshots that are in
# the way are pushed to @$blockers before dying (the caller may pass undef).
sub volume_rollback_is_possible {
    my ($class, $scfg, $storeid, $volname, $snap, $blockers) = @_;

    return 1 if !$scfg->{$CHAIN};

    my $snapshots = $class->volume_snapshot_info($scfg, $storeid, $volname);
    $blockers //= [];
    my $found;
    for my $id (sort { $snapshots->{$b}->{order} <=> $snapshots->{$a}->{order} } keys %$snapshots) {
        next if $id eq 'current';
        if ($id eq $snap) {
            $found = 1;
        } elsif ($found) {
            push @$blockers, $id;
        }
    }

    die "can't rollback, snapshot '$snap' does not exist on '$volname'\n" if !$found;
    die "can't rollback, '$snap' is not most recent snapshot on '$volname'\n" if @$blockers;

    return 1;
}

sub volume_snapshot_rollback {
    my ($class, $scfg, $storeid, $volname, $snap) = @_;

    die "can't rollback snapshot this image format\n" if $volname !~ m/\.(qcow2|qed)$/;

    standin_not_implemented('volume_snapshot_rollback') if $scfg->{$CHAIN};

    my $path = $class->filesystem_path($scfg, $volname);
    $class->run_qemu_img('snapshot', '-a', $snap, $path);
    return undef;
}

sub volume_snapshot_delete {
    my ($class, $scfg, $storeid, $volname, $snap, $running) = @_;

    die "can't delete snapshot for this image format\n" if $volname !~ m/\.(qcow2|qed)$/;

    if ($scfg->{$CHAIN}) {
        if ($running) {
            # QEMU already merged the layer: only its file has to go.
            eval {
                my $spath = $class->path($scfg, $volname, $storeid, $snap);
                unlink($spath) or die "unlink '$spath' failed - $!\n";
            };
            die "can't delete snapshot $snap of volume $volname: $@\n" if $@;
            return;
        }
        standin_not_implemented('offline volume_snapshot_delete');
    }

    return 1 if $running;

    my $path = $class->filesystem_path($scfg, $volname);
    $class->deactivate_volume($storeid, $scfg, $volname, $snap, {});
    $class->run_qemu_img('snapshot', '-d', $snap, $path);
    return undef;
}

sub volume_snapshot_needs_fsfreeze { return 0 }

sub storage_can_replicate { return 0 }

# The real module asks qemu-img for the backing chain; the stand-in cannot.
sub volume_snapshot_info {
    my ($class, $scfg, $storeid, $volname) = @_;
    die "PVE::Storage::Plugin test stand-in: volume_snapshot_info is not implemented"
        . " (needs qemu-img) - the plugin under test must provide it\n";
}

# Renames the file of $source_snap to the file of $target_snap ('current'
# allowed on either side).
sub rename_snapshot {
    my ($class, $scfg, $storeid, $volname, $source_snap, $target_snap) = @_;

    my $src = $class->filesystem_path($scfg, $volname, $source_snap);
    my $dst = $class->filesystem_path($scfg, $volname, $target_snap);
    print "rename $src to $dst\n";

    die "target snapshot '${target_snap}' already exists\n" if -e $dst;
    rename($src, $dst) or die "rename '$src' to '$dst' failed - $!\n";
    return;
}

sub volume_has_feature {
    my ($class, $scfg, $feature, $storeid, $volname, $snapname, $running, $opts) = @_;

    my $features = {
        snapshot => {
            current => { qcow2 => 1 },
            snap => { qcow2 => 1 },
        },
        clone => {
            base => { qcow2 => 1, raw => 1, vmdk => 1 },
        },
        template => {
            current => { qcow2 => 1, raw => 1, vmdk => 1, subvol => 1 },
        },
        copy => {
            base => { qcow2 => 1, raw => 1, vmdk => 1 },
            current => { qcow2 => 1, raw => 1, vmdk => 1 },
            snap => { qcow2 => 1 },
        },
        sparseinit => {
            base => { qcow2 => 1, raw => 1, vmdk => 1 },
            current => { qcow2 => 1, raw => 1, vmdk => 1 },
        },
        rename => {
            current => { qcow2 => 1, raw => 1, vmdk => 1 },
        },
    };

    if ($feature eq 'clone') {
        my $targets = $opts ? $opts->{valid_target_formats} : undef;
        return 0 if defined($targets) && !grep { $_ eq 'qcow2' } @$targets;
    } elsif ($feature eq 'rename') {
        return 0 if $class->can('api') && $class->api() < 10;
    }

    my (undef, undef, undef, undef, undef, $isBase, $format) = $class->parse_volname($volname);
    my $key = $snapname ? 'snap' : ($isBase ? 'base' : 'current');

    return 1 if defined($format) && $features->{$feature}->{$key}->{$format};
    return undef;
}

# ---------------------------------------------------------------------------
# listing

# Every image file below images/<vmid>/ with a known format extension, as
# { volid, format, size, vmid, used, parent, ctime }. Linked clones (backing
# file "../<basevmid>/<basename>") get the "<basevmid>/<basename>/<vmid>/<name>"
# volid. Snapshot files (names parse_name_dir refuses) are skipped.
sub list_images {
    my ($class, $storeid, $scfg, $vmid, $vollist, $cache) = @_;

    my $imagedir = $class->get_subdir($scfg, 'images');
    my $fmts = join('|', sort keys %{ $class->get_formats($scfg, $storeid)->{valid} });

    my $res = [];
    for my $fn (sort(bsd_glob("$imagedir/[0-9][0-9]*/*"))) {
        next if $fn !~ m!^(/.+/(\d+)/([^/]+\.($fmts)))$!;
        my ($file, $owner, $name, $format) = ($1, $2, $3, $4);

        next if !$vollist && defined($vmid) && $owner ne $vmid;

        my ($parsed_name) = eval { parse_name_dir(basename($file)) };
        next if !defined($parsed_name);

        my ($size, undef, $used, $parent, $ctime) = eval { file_size_info($file, undef, $format) };
        if (my $err = $@) {
            die $err if $err !~ m/Image is not in \S+ format$/;
            warn "image '$file' is not in expected format '$format', querying as raw\n";
            ($size, undef, $used, $parent, $ctime) = file_size_info($file, undef, 'raw');
            $format = 'invalid';
        }
        next if !defined($size);

        my $volid;
        if ($parent && $parent =~ m!^\.\./(\d+)/([^/]+\.($fmts))$!) {
            $volid = "$storeid:$1/$2/$owner/$name";
        } else {
            $volid = "$storeid:$owner/$name";
        }

        next if $vollist && !grep { $_ eq $volid } @$vollist;

        my $info = {
            volid => $volid,
            format => $format,
            size => $size,
            vmid => $owner,
            used => $used,
            parent => $parent,
        };
        $info->{ctime} = $ctime if $ctime;
        push @$res, $info;
    }

    return $res;
}

# Reduced: images/rootdir come from list_images (always as content 'images'),
# iso/vztmpl/snippets/backup are plain directory listings.
sub list_volumes {
    my ($class, $storeid, $scfg, $vmid, $content_types) = @_;

    my $res = [];
    for my $type (@$content_types) {
        if ($type eq 'images' || $type eq 'rootdir') {
            next if $type eq 'rootdir';
            push @$res, map { { %$_, content => 'images' } } @{ $class->list_images($storeid, $scfg, $vmid) };
            next;
        }
        next if !$scfg->{path} || !$vtype_subdirs->{$type};
        my $dir = $class->get_subdir($scfg, $type);
        for my $fn (sort(bsd_glob("$dir/*"))) {
            next if -d $fn;
            my $base = basename($fn);
            next if defined($vmid) && $type eq 'backup' && $base !~ m/\S+-$vmid-\S+/;
            next if defined($vmid) && ($type eq 'iso' || $type eq 'vztmpl');
            my @st = stat($fn);
            push @$res, {
                volid => "$storeid:$type/$base",
                content => $type,
                size => $st[7],
                ctime => $st[10],
                format => ($type eq 'snippets' ? 'snippet' : $type eq 'iso' ? 'iso' : 'raw'),
            };
        }
    }
    return $res;
}

# ---------------------------------------------------------------------------
# storage and volume activation

sub status {
    my ($class, $storeid, $scfg, $cache) = @_;

    my $path = $scfg->{path};
    die "storage definition has no path\n" if !$path;

    my ($total, $used, $avail);
    eval {
        PVE::Tools::run_command(['df', '-P', '-B1', $path], outfunc => sub {
            my ($line) = @_;
            if ($line =~ m/^\S+\s+(\d+)\s+(\d+)\s+(\d+)\s/) {
                ($total, $used, $avail) = ($1, $2, $3);
            }
        });
    };
    return undef if $@ || !$total;
    return ($total, $avail, $used, 1);
}

sub activate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;

    my $path = $scfg->{path};
    die "storage definition has no path\n" if !$path;
    die "unable to activate storage '$storeid' - directory '$path' does not exist or is unreachable\n"
        if !-d $path;

    return if !defined($scfg->{content});

    if ((!defined($scfg->{'create-subdirs'}) || $scfg->{'create-subdirs'})
        && (!defined($scfg->{mkdir}) || $scfg->{mkdir}))
    {
        for my $vtype (sort keys %$vtype_subdirs) {
            next if !defined($scfg->{content}->{$vtype})
                && !($vtype eq 'backup' && defined($scfg->{content}->{rootdir}));
            my $subdir = $class->get_subdir($scfg, $vtype);
            make_path($subdir) if $subdir ne $path;
        }
    }

    my %seen;
    for my $vtype (sort keys %{ $scfg->{content} }) {
        next if !$vtype_subdirs->{$vtype};
        my $abs = abs_path($class->get_subdir($scfg, $vtype));
        next if !defined($abs);
        die "storage '$storeid' uses directory $abs for multiple content types\n" if $seen{$abs}++;
    }
    return;
}

sub deactivate_storage { return }

sub map_volume {
    my ($class, $storeid, $scfg, $volname, $snapname) = @_;
    my ($path) = $class->path($scfg, $volname, $storeid, $snapname);
    return $path;
}

sub unmap_volume { return 1 }

sub activate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache) = @_;
    my $path = $class->filesystem_path($scfg, $volname, $snapname);
    if ($scfg->{path}) {
        die "volume '$storeid:$volname' does not exist\n" if !-e $path;
    } else {
        die "volume '$storeid:$volname' does not exist\n" if !-b $path;
    }
    return;
}

sub deactivate_volume { return }

sub check_connection { return 1 }

sub config_aware_base_mkdir {
    my ($class, $scfg, $path) = @_;
    make_path($path) if $scfg->{'create-base-path'} // $scfg->{mkdir} // 1;
    return;
}

# ---------------------------------------------------------------------------
# export/import: the "<format>+size" streams (an 8-byte little-endian size,
# then the file's bytes) for files copied as they are ('qcow2+size' with
# snapshots, 'raw+size' of raw images); the real module runs dd for these.
# Converting qcow2 to a raw stream (qemu-img convert) and tar streams are not
# provided.

sub write_common_header($$) {
    my ($fh, $size) = @_;
    syswrite($fh, pack('Q<', $size), 8);
}

sub read_common_header($) {
    my ($fh) = @_;
    sysread($fh, my $size, 8);
    $size = unpack('Q<', $size // '');
    die "import: no size found in export header, aborting.\n" if !defined($size);
    return $size;
}

my sub copy_stream {
    my ($in, $out) = @_;
    while (1) {
        my $n = sysread($in, my $buf, 1 << 20);
        die "read failed - $!\n" if !defined($n);
        last if !$n;
        syswrite($out, $buf) == $n or die "write failed - $!\n";
    }
}

sub volume_export_formats {
    my ($class, $scfg, $storeid, $volname, $snapshot, $base_snapshot, $with_snapshots) = @_;
    return () if !$scfg->{path} || defined($snapshot) || defined($base_snapshot);
    my ($vtype, $format) = ($class->parse_volname($volname))[0, 6];
    if ($with_snapshots) {
        return ("$format+size") if $format eq 'qcow2' || $format eq 'vmdk';
        return ();
    }
    return ('tar+size') if $format eq 'subvol';
    return ('raw+size') if $vtype =~ /^(images|iso|snippets|vztmpl|import)$/;
    return ();
}

sub volume_import_formats {
    my ($class, $scfg, $storeid, $volname, $snapshot, $base_snapshot, $with_snapshots) = @_;
    return () if !$scfg->{path} || defined($base_snapshot);
    my ($vtype, $format) = ($class->parse_volname($volname))[0, 6];
    if ($with_snapshots) {
        return ("$format+size") if $format eq 'qcow2' || $format eq 'vmdk';
        return ();
    }
    return ('tar+size') if $format eq 'subvol';
    return ('raw+size') if $vtype =~ /^(images|iso|snippets|vztmpl|import)$/;
    return ();
}

sub volume_export {
    my ($class, $scfg, $storeid, $fh, $volname, $format, $snapshot, $base_snapshot, $with_snapshots) = @_;

    die "cannot export volumes together with their snapshots in $class\n"
        if $with_snapshots && $scfg->{$CHAIN};

    my $err_msg = "volume export format $format not available for $class\n";
    die $err_msg if !$scfg->{path} || defined($snapshot) || defined($base_snapshot);
    my ($file) = $class->path($scfg, $volname, $storeid);
    my $file_format = ($class->parse_volname($volname))[6];
    my $size = file_size_info($file, undef, $file_format);
    if ($format eq 'raw+size') {
        die $err_msg if $with_snapshots || $file_format eq 'subvol';
        die "volume_export: converting '$file_format' to raw is not implemented by the test stand-in\n"
            if $file_format ne 'raw';
    } elsif ($format =~ /^(qcow2|vmdk)\+size$/) {
        die $err_msg if !$with_snapshots || $file_format ne $1;
    } else {
        die $err_msg;
    }
    write_common_header($fh, $size);
    open(my $in, '<:raw', $file) or die "unable to open '$file' - $!\n";
    copy_stream($in, $fh);
    close($in);
    return;
}

sub volume_import {
    my ($class, $scfg, $storeid, $fh, $volname, $format, $snapshot, $base_snapshot, $with_snapshots, $allow_rename)
        = @_;

    die "volume import format '$format' not available for $class\n" if $format !~ /^(raw|tar|qcow2|vmdk)\+size$/;
    my $data_format = $1;
    die "format $format cannot be imported without snapshots\n"
        if !$with_snapshots && ($data_format eq 'qcow2' || $data_format eq 'vmdk');
    die "format $format cannot be imported with snapshots\n"
        if $with_snapshots && ($data_format eq 'raw' || $data_format eq 'tar');

    my ($vtype, $name, $vmid, undef, undef, undef, $file_format) = $class->parse_volname($volname);
    die "importing volume of type '$vtype' not implemented by the test stand-in\n" if $vtype ne 'images';
    die "cannot import format $format into a file of format $file_format\n" if $data_format ne $file_format;

    my ($file) = $class->path($scfg, $volname, $storeid);
    if (-e $file) {
        die "file '$file' already exists\n" if !$allow_rename;
        warn "file '$file' already exists - importing with a different name\n";
        $name = undef;
    }
    my $size = read_common_header($fh);
    $size = int(($size + 1023) / 1024);
    eval {
        $volname = $class->alloc_image($storeid, $scfg, $vmid, $file_format, $name, $size);
        my ($new) = $class->path($scfg, $volname, $storeid);
        open(my $out, '+<:raw', $new) or die "unable to open '$new' - $!\n";
        truncate($out, 0);
        copy_stream($fh, $out);
        close($out) or die "unable to write '$new' - $!\n";
    };
    if (my $err = $@) {
        eval { $class->free_image($storeid, $scfg, $volname, 0, $file_format) };
        warn $@ if $@;
        die $err;
    }
    return "$storeid:$volname";
}

# ---------------------------------------------------------------------------
# renaming

sub rename_volume {
    my ($class, $scfg, $storeid, $source_volname, $target_vmid, $target_volname) = @_;

    die "not implemented in storage plugin '$class'\n" if $class->can('api') && $class->api() < 10;
    die "no path found\n" if !$scfg->{path};

    if ($scfg->{$CHAIN}) {
        my $snapshots = $class->volume_snapshot_info($scfg, $storeid, $source_volname);
        die "we can't rename volume if a snapshot backed by a volume-chain exists\n"
            if $snapshots->{current}->{parent};
    }

    my (undef, $source_image, $source_vmid, $base_name, $base_vmid, undef, $format) =
        $class->parse_volname($source_volname);

    $target_volname = $class->find_free_diskname($storeid, $scfg, $target_vmid, $format, 1)
        if !$target_volname;

    my $basedir = $class->get_subdir($scfg, 'images');
    make_path("$basedir/$target_vmid");

    my $old = "$basedir/$source_vmid/$source_image";
    my $new = "$basedir/$target_vmid/$target_volname";

    die "target volume '${target_volname}' already exists\n" if -e $new;
    rename($old, $new) or die "rename '$old' to '$new' failed - $!\n";

    my $base = $base_name ? "$base_vmid/$base_name/" : '';
    return "${storeid}:${base}${target_vmid}/${target_volname}";
}

# ---------------------------------------------------------------------------
# QEMU integration

# Options for QEMU's -blockdev: { driver => 'file'|'host_device', filename => ... }.
# $options->{'snapshot-name'} asks for the snapshot's own file; that is only
# possible for qcow2 with the option set.
sub qemu_blockdev_options {
    my ($class, $scfg, $storeid, $volname, $machine_version, $options) = @_;

    my $snap = $options ? $options->{'snapshot-name'} : undef;
    my ($path) = $class->path($scfg, $volname, $storeid, $snap);

    if ($path =~ m|^/|) {
        my $format = ($class->parse_volname($volname))[6] // '';
        die "cannot attach only the snapshot of a '$format' image\n"
            if $snap && (($format eq 'qcow2' && !$scfg->{$CHAIN}) || $format eq 'qed');
        my @st = stat($path) or die "stat for '$path' failed - $!\n";
        my $driver = (S_ISCHR($st[2]) || S_ISBLK($st[2])) ? 'host_device' : 'file';
        return { driver => $driver, filename => $path };
    } elsif ($path =~ m|^file:(\S+)|) {
        return { driver => 'file', filename => "$1" };
    } elsif ($path =~ m|^host_device:(\S+)|) {
        return { driver => 'host_device', filename => "$1" };
    }

    die "storage plugin doesn't implement qemu_blockdev_options() method\n";
}

# Who takes snapshots of a running guest's volume: 'qemu' (internal qcow2
# snapshots), 'storage' (transparent to QEMU) or 'mixed' (storage creates the
# files, QEMU reopens/commits/streams). Note the argument order.
sub volume_qemu_snapshot_method {
    my ($class, $storeid, $scfg, $volname) = @_;
    my $format = ($class->parse_volname($volname))[6] // '';
    return 'qemu' if $format eq 'qcow2';
    return 'storage';
}

sub new_backup_provider {
    die "implement me if enabling the feature 'backup-provider' in plugindata()->{features}\n";
}

1;
