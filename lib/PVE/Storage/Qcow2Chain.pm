package PVE::Storage::Qcow2Chain;

use strict;
use warnings;

use JSON::PP (); # booleans in results are JSON::PP::true/false
use PVE::Storage::Qcow2Chain::Error;

our $VERSION = '0.1.0';

require XSLoader;
XSLoader::load('PVE::Storage::Qcow2Chain', $VERSION);

# Options understood by every function; anything else is a caller bug.
my %COMMON = map { $_ => 1 } qw(
    format max_depth probe_backing_format allow_data_file allow_absolute_backing
    force_share no_lock cache_size rate_limit allowed_dirs foreign_backing progress
);

sub _opts {
    my ($fn, $extra, %opt) = @_;
    for my $k (keys %opt) {
        die "$fn: unknown option '$k'\n" if !$COMMON{$k} && !$extra->{$k};
    }
    return \%opt;
}

sub _file {
    my ($fn, $file) = @_;
    die "$fn: no file given\n" if !defined($file) || $file eq '';
    return $file;
}

sub info {
    my ($file, %opt) = @_;
    my $o = _opts('info', { backing_chain => 1 }, %opt);
    my $chain = delete $o->{backing_chain};
    return _info(_file('info', $file), delete $o->{format}, $chain ? 1 : 0, $o);
}

sub map_image {
    my ($file, %opt) = @_;
    my $o = _opts('map_image', {}, %opt);
    return _map(_file('map_image', $file), delete $o->{format}, $o);
}

sub convert_raw {
    my ($file, $out, %opt) = @_;
    my $o = _opts('convert_raw', {}, %opt);
    _convert_raw(_file('convert_raw', $file), delete $o->{format}, _file('convert_raw', $out), $o);
    return;
}

# Sizes as qemu-img takes them: bytes, or a number with k/M/G/T/P/E (binary).
sub parse_size {
    my ($s) = @_;
    die "invalid size '" . ($s // '') . "'\n" if !defined($s) || $s !~ /^(\d+(?:\.\d+)?)\s*([bkKmMgGtTpPeE]?)(?:i?B)?$/;
    my ($n, $u) = ($1, lc($2 // ''));
    my %m = ('' => 1, b => 1, k => 1024, m => 1024**2, g => 1024**3, t => 1024**4, p => 1024**5, e => 1024**6);
    my $v = $n * $m{$u};
    die "invalid size '$s'\n" if $v != int($v);
    return int($v);
}

my %CREATE = map { $_ => 1 } qw(
    size compat cluster_size extended_l2 refcount_bits lazy_refcounts compression_type
    preallocation backing_file backing_fmt backing_unchecked
);

my %PREALLOC = (off => 0, metadata => 1, falloc => 2, full => 3);

# Take the image options out of %$opt, in the form the core takes them.
sub _create_spec {
    my ($fn, $opt, $preallocs) = @_;
    my %spec;
    for my $k (keys %$opt) {
        next if !$CREATE{$k};
        $spec{$k} = delete $opt->{$k};
    }
    $spec{size} = parse_size($spec{size}) if defined $spec{size};
    $spec{cluster_size} = parse_size($spec{cluster_size}) if defined $spec{cluster_size};
    if (defined(my $c = delete $spec{compat})) {
        $spec{version} = $c eq '0.10' ? 2 : $c eq '1.1' ? 3 : die "$fn: compat must be 0.10 or 1.1\n";
    }
    if (defined(my $c = $spec{compression_type})) {
        $spec{compression_type} = $c eq 'zlib' ? 0 : $c eq 'zstd' ? 1 : die "$fn: compression_type must be zlib or zstd\n";
    }
    if (defined(my $p = $spec{preallocation})) {
        die "$fn: preallocation must be " . join(' or ', @$preallocs) . "\n" if !grep { $_ eq $p } @$preallocs;
        $spec{preallocation} = $PREALLOC{$p};
    }
    for my $b (qw(extended_l2 lazy_refcounts backing_unchecked)) {
        next if !defined $spec{$b};
        my $v = $spec{$b};
        $spec{$b} = ($v && $v !~ /^(off|false|no|0)$/i) ? 1 : 0;
    }
    return \%spec;
}

sub create {
    my ($file, %opt) = @_;
    my $spec = _create_spec('create', \%opt, [qw(off metadata)]);
    my $o = _opts('create', {}, %opt);
    _create(_file('create', $file), $spec, $o);
    return;
}

sub measure {
    my ($file, %opt) = @_;
    my $spec = _create_spec('measure', \%opt, [qw(off metadata falloc full)]);
    my $o = _opts('measure', { output_format => 1, layer => 1 }, %opt);
    my ($ofmt, $layer) = (delete $o->{output_format}, delete $o->{layer});
    die "measure: give a file or a size, not both\n" if defined($file) && defined($spec->{size});
    die "measure: give a file or a size\n" if !defined($file) && !defined($spec->{size});
    return _measure($file, delete $o->{format}, $ofmt, $spec, $layer ? 1 : 0, $o);
}

sub compact {
    my ($file, $out, %opt) = @_;
    my $o = _opts('compact', {}, %opt);
    _compact(_file('compact', $file), delete $o->{format}, $out, $o);
    return;
}

sub commit {
    my ($file, %opt) = @_;
    my $o = _opts('commit', { base => 1, keep => 1 }, %opt);
    my ($base, $keep) = (delete $o->{base}, delete $o->{keep});
    _commit(_file('commit', $file), delete $o->{format}, $base, $keep ? 1 : 0, $o);
    return;
}

sub rebase {
    my ($file, %opt) = @_;
    my $o = _opts('rebase', { backing_file => 1, backing_fmt => 1, unsafe => 1 }, %opt);
    my ($b, $bf, $unsafe) = (delete $o->{backing_file}, delete $o->{backing_fmt}, delete $o->{unsafe});
    die "rebase: backing_file is required (use '' for none)\n" if !defined $b;
    _rebase(_file('rebase', $file), delete $o->{format}, $b, $bf, $unsafe ? 1 : 0, $o);
    return;
}

# ---- external snapshots of a volume ----

my %SNAP = map { $_ => 1 } qw(cluster_size extended_l2 preallocation running delete_method lock_timeout_ms images_dir);
my %DELETE = (auto => 0, commit => 1, stream => 2);

sub _snap_opts {
    my ($fn, %opt) = @_;
    my $o = _opts($fn, \%SNAP, %opt);
    $o->{cluster_size} = parse_size($o->{cluster_size}) if defined $o->{cluster_size};
    if (defined(my $p = $o->{preallocation})) {
        $o->{preallocation} = $p eq 'metadata' || $p eq '1' ? 1 : $p eq 'off' || $p eq '0' ? 0
            : die "$fn: preallocation must be off or metadata\n";
    }
    if (defined(my $m = $o->{delete_method})) {
        die "$fn: delete_method must be auto, commit or stream\n" if !exists $DELETE{$m};
        $o->{delete_method} = $DELETE{$m};
    }
    $o->{extended_l2} = $o->{extended_l2} ? 1 : 0 if exists $o->{extended_l2};
    return $o;
}

sub snapshot_create {
    my ($volume, $name, %opt) = @_;
    _snapshot_create(_file('snapshot_create', $volume), $name // '', _snap_opts('snapshot_create', %opt));
    return;
}

sub snapshot_rollback {
    my ($volume, $name, %opt) = @_;
    _snapshot_rollback(_file('snapshot_rollback', $volume), $name // '', _snap_opts('snapshot_rollback', %opt));
    return;
}

sub snapshot_delete {
    my ($volume, $name, %opt) = @_;
    return _snapshot_delete(_file('snapshot_delete', $volume), $name // '', _snap_opts('snapshot_delete', %opt));
}

sub snapshot_rename {
    my ($volume, $from, $to, %opt) = @_;
    _snapshot_rename(_file('snapshot_rename', $volume), $from // '', $to // '', _snap_opts('snapshot_rename', %opt));
    return;
}

sub snapshot_list {
    my ($volume, %opt) = @_;
    return _snapshot_list(_file('snapshot_list', $volume), _snap_opts('snapshot_list', %opt));
}

# An image outside the volume's tree built on one of its files: ($image, $file), or ().
sub volume_dependent {
    my ($volume, %opt) = @_;
    return _volume_dependent(_file('volume_dependent', $volume), _snap_opts('volume_dependent', %opt));
}

sub volume_recover {
    my ($volume, %opt) = @_;
    _volume_recover(_file('volume_recover', $volume), _snap_opts('volume_recover', %opt));
    return;
}

sub volume_forget {
    my ($volume, %opt) = @_;
    _volume_forget(_file('volume_forget', $volume), _snap_opts('volume_forget', %opt));
    return;
}

# the directory store's name for it, from the core (the one place that spells it)
sub snapshot_file {
    my ($volume, $name) = @_;
    die "snapshot_file: bad volume path\n" if !defined($volume) || $volume !~ m{[^/]$};
    return _snapshot_file($volume, $name // '');
}

# ---- internal snapshots (the image's own snapshot table) ----

sub internal_snapshot_create {
    my ($file, $name, %opt) = @_;
    _internal_snapshot_create(_file('internal_snapshot_create', $file), $name // '', _opts('internal_snapshot_create', {}, %opt));
    return;
}

sub internal_snapshot_apply {
    my ($file, $name, %opt) = @_;
    _internal_snapshot_apply(_file('internal_snapshot_apply', $file), $name // '', _opts('internal_snapshot_apply', {}, %opt));
    return;
}

sub internal_snapshot_delete {
    my ($file, $name, %opt) = @_;
    _internal_snapshot_delete(_file('internal_snapshot_delete', $file), $name // '', _opts('internal_snapshot_delete', {}, %opt));
    return;
}

sub internal_snapshot_list {
    my ($file, %opt) = @_;
    return _internal_snapshot_list(_file('internal_snapshot_list', $file), _opts('internal_snapshot_list', {}, %opt));
}

sub snapshot_split {
    my ($file, $snap, $out, %opt) = @_;
    my $o = _opts('snapshot_split', { base => 1, backing_file => 1, backing_fmt => 1 }, %opt);
    my ($base, $b, $bf) = (delete $o->{base}, delete $o->{backing_file}, delete $o->{backing_fmt});
    die "snapshot_split: no snapshot given\n" if !defined($snap) || $snap eq '';
    return _snapshot_split(_file('snapshot_split', $file), $snap, _file('snapshot_split', $out), $base, $b, $bf, $o);
}

sub _convert {
    my ($xsub, $fn, $volume, %opt) = @_;
    my $o = _opts($fn, { names => 1, drop_vm_state => 1, lock_timeout_ms => 1 }, %opt);
    my $names = delete($o->{names}) // {};
    die "$fn: names must be a hash reference (old => new)\n" if ref($names) ne 'HASH';
    my $drop = delete($o->{drop_vm_state}) ? 1 : 0;
    $xsub->(_file($fn, $volume), [map { "$_=$names->{$_}" } sort keys %$names], $drop, $o);
    return;
}

sub volume_to_external { my ($volume, %opt) = @_; return _convert(\&_volume_to_external, 'volume_to_external', $volume, %opt) }

sub volume_to_internal { my ($volume, %opt) = @_; return _convert(\&_volume_to_internal, 'volume_to_internal', $volume, %opt) }

sub import_check {
    my ($file, %opt) = @_;
    my $o = _opts('import_check', {}, %opt);
    return _import_check(_file('import_check', $file), delete $o->{format}, $o);
}

my %REPAIR = (none => 0, leaks => 1, all => 2);

sub check {
    my ($file, %opt) = @_;
    my $o = _opts('check', { repair => 1 }, %opt);
    my $repair = delete($o->{repair}) // 'none';
    die "check: repair must be 'leaks' or 'all'\n" if !exists $REPAIR{$repair};
    my $r = _check(_file('check', $file), delete $o->{format}, $REPAIR{$repair}, $o);
    # what to do about it, for people and monitoring scripts
    $r->{repair} = $r->{corruptions} ? "qcow2-chain check -r all '$file' (with the VM stopped; back up the file first)"
        : $r->{leaks} ? "qcow2-chain check -r leaks '$file' (with the VM stopped; leaks only waste space)"
        : undef;
    $r->{status} = $r->{corruptions} ? 'corrupt' : $r->{leaks} ? 'leaks' : $r->{'check-errors'} ? 'error' : 'clean';
    return $r;
}

sub read_image {
    my ($file, $offset, $length, %opt) = @_;
    my $o = _opts('read_image', {}, %opt);
    die "read_image: offset and length must be non-negative integers\n"
        if ($offset // '') !~ /^\d+$/ || ($length // '') !~ /^\d+$/;
    return _read(_file('read_image', $file), delete $o->{format}, $offset, $length, $o);
}

# The old names, kept for compatibility. Assigned at run time, so no sub named
# like a builtin exists in this package while it compiles.
{
    no warnings 'once'; ## no critic (TestingAndDebugging::ProhibitNoWarnings) -- each old name appears once
    *map = \&map_image;
    *read = \&read_image;
}

1;

__END__

=head1 NAME

PVE::Storage::Qcow2Chain - native qcow2 backing chains for Proxmox VE storage plugins

=head1 SYNOPSIS

    use PVE::Storage::Qcow2Chain;

    # the same data as `qemu-img info --output=json --backing-chain`
    my $chain = PVE::Storage::Qcow2Chain::info($path, backing_chain => 1);
    for my $layer (@$chain) {
        print "$layer->{filename}: $layer->{'virtual-size'} bytes\n";
    }

    my $extents = PVE::Storage::Qcow2Chain::map_image($path);   # like `qemu-img map`
    PVE::Storage::Qcow2Chain::convert_raw($path, "/tmp/disk.raw");
    my $bytes = PVE::Storage::Qcow2Chain::read_image($path, 0, 4096);

=head1 DESCRIPTION

This module reads qcow2 images and their backing chains natively (no
C<qemu-img> process). All functions raise a
L<PVE::Storage::Qcow2Chain::Error> on failure; it stringifies as one line
ending in C<"\n">.

Relative backing names resolve against the directory of the overlay, never
the current directory. The backing format must be recorded in the overlay
(unless C<probe_backing_format> is set); C<json:> and protocol names are
refused; loops and chains deeper than C<max_depth> are errors.

Opening takes QEMU's image locks: inspection (C<info>, C<map_image>, C<read_image>) only
takes the shared lock, so it works while a VM runs; C<convert_raw> takes
the normal read lock and fails while another process writes the image.

Proxmox VE builds QEMU with image locking off, so a lock alone does not
show a running Proxmox VM. Everything that changes or replaces a file
(guest writes, C<check> with repair, C<commit>, C<rebase>, the snapshot
operations) therefore takes QEMU's write lock on it first, then looks at
the open files of every other process (F</proc/PID/fd>, one pass for all
the files of the operation) and refuses with an error of code C<locked>
naming the file, the process id and its command, for instance
C<'.../vm-100-disk-0.qcow2' is in use by process 4242 (kvm); not changing
it while another process has it open>. The lock is kept until the change
is durable, so a QEMU that takes locks cannot start in between. Only
processes whose descriptors we may read are seen: run as root.

=head1 OPTIONS

Every function takes these options after its positional arguments:

=over

=item format => 'qcow2' | 'raw'

Format of the top image; detected when not given.

=item max_depth => N

Longest backing chain accepted (default 256).

=item probe_backing_format => 1

Guess the format of a backing file the overlay does not record. Off by
default: a guessed raw header can point at host files.

=item allowed_dirs => [DIR, ...]

Backing files must resolve (after symlinks) inside one of these directories.

=item foreign_backing => 'base-'

With C<allowed_dirs>: a backing file in another directory than its overlay
must have a name starting with this prefix, else the chain is refused as
untrusted (the Proxmox plugin: a volume may depend only on its own VM's
files or on a template's C<base-> volume).

=item allow_absolute_backing => 1

With C<allowed_dirs>, also accept absolute backing names (still inside).

=item allow_data_file => 1

Open images that use an external data file (refused by default).

=item force_share => 1

Take only the shared lock (C<qemu-img -U>). C<no_lock =E<gt> 1> takes none.

=item cache_size => BYTES

Metadata cache per image (default 8 MiB).

=item progress => sub { my ($done, $total) = @_; ... }

Called during long operations; return C<'cancel'> (or die) to stop.

=back

=head1 FUNCTIONS

=over

=item info($file, %opt)

Returns a hash with exactly the fields of C<qemu-img info --output=json>
(C<filename>, C<format>, C<virtual-size>, C<actual-size>, C<cluster-size>,
C<dirty-flag>, C<backing-filename>, C<full-backing-filename>,
C<backing-filename-format>, C<snapshots>, C<format-specific>). With
C<backing_chain =E<gt> 1> returns an array of such hashes, top first.
Booleans are C<$JSON::PP::true> and C<$JSON::PP::false>, as C<decode_json>
of qemu-img's output would give them.

=item map_image($file, %opt)

Returns the extents of C<qemu-img map --output=json>: an array of hashes
with C<start>, C<length>, C<depth>, C<present>, C<zero>, C<data> and, where
the data has a host position, C<offset>.

=item map($file, %opt)

Alias of C<map_image>, kept for compatibility.

=item convert_raw($file, $out, %opt)

Writes the guest view of the whole chain to C<$out> (created or truncated)
as a sparse raw file.

=item read_image($file, $offset, $length, %opt)

Returns C<$length> bytes of the guest view starting at C<$offset>.

=item read($file, $offset, $length, %opt)

Alias of C<read_image>, kept for compatibility.

=item create($file, %opt)

Creates a qcow2 image as C<qemu-img create -f qcow2> would, atomically
(temporary name, fsync, rename without replacing, directory fsync). Options:
C<size> (bytes or with k/M/G/T suffix; taken from the backing file when
omitted), C<compat> (C<'1.1'> default or C<'0.10'>), C<cluster_size>
(512..2M, default 64k), C<extended_l2>, C<refcount_bits> (1..64),
C<lazy_refcounts>, C<compression_type> (C<zlib>, C<zstd>),
C<preallocation> (C<off>, C<metadata>), C<backing_file> (stored as
given, relative to the new image), C<backing_fmt> (required with a
backing file) and C<backing_unchecked> (do not open the backing file,
which may not exist yet: C<size> is then required). An existing file is
never replaced. An existing block device receives the image in place,
if it is large enough (C<measure>); its old header is wiped first and the
new one written last.

=item measure($file, output_format => 'qcow2', layer => 1, %create_options)

=item measure(undef, size => $bytes, output_format => 'qcow2', %create_options)

C<qemu-img measure>: the bytes a new image needs, C<{ required,
'fully-allocated' }> (and C<bitmaps> for a qcow2 input written as qcow2
v3), equal to qemu-img's. Without a file: a new empty image of C<size>
(an overlay needs as much). With a file: the copy of its guest view, the
whole chain; with C<layer =E<gt> 1> the layer alone, its own clusters
without its backing file (what a copy of that layer keeping its backing
needs). The create options (C<cluster_size>, C<extended_l2>,
C<refcount_bits>, C<compat>, C<preallocation> C<off>, C<metadata>,
C<falloc> or C<full>, C<backing_file>) describe the new image;
C<output_format =E<gt> 'raw'> measures a raw copy.

=item compact($file, $out, progress => sub {...})

Copies the layer C<$file> (a qcow2 file or block device, only read) into
C<$out>: a new image holding exactly the layer's allocated clusters,
packed after the metadata, with its zero clusters and subclusters, its
unallocated ranges (which keep reading from the backing file), the same
backing name and format, cluster size and extended L2 entries. On the same
backing file the copy reads exactly as the layer, and it needs at most
C<measure($file, layer =E<gt> 1, ...)-E<gt>{required}> bytes: a snapshot
taken on a full-size logical volume shrinks to what it holds. C<$out> is a
new file (it appears whole, atomically) or another block device (written
in place). With C<$out> undef a file is compacted in place: replaced in one
rename under its own name, so its children keep pointing at it. Refused
for images with internal snapshots, external data files, or marked
corrupt or dirty.

=item commit($file, base => $base, keep => 1, progress => sub {...}, rate_limit => $bps)

C<qemu-img commit>: copies everything allocated in C<$file> and in the
layers above the base (default: C<$file>'s backing file) into the base,
zeros as zeros, growing the base when C<$file> is larger. Afterwards
C<$file> is emptied, unless C<keep> is true or a C<base> was named (as
C<qemu-img commit -d> / C<-b>). No backing pointer is rewritten.
Whole clusters move with C<copy_file_range>, so on XFS/btrfs (reflinks)
and NFS 4.2 (server-side copy) the data is not read at all. C<$file>'s
guest view stays the same at every moment, also across a crash.

=item rebase($file, backing_file => $new, backing_fmt => $fmt, unsafe => 1)

C<qemu-img rebase>. Safe mode (default) keeps C<$file>'s guest view:
where the old chain and C<$new> can read differently, C<$file> receives the
old data, then one header write records C<$new>. Only ranges allocated
above the deepest layer both chains share are read (deleting a middle
snapshot reads just that snapshot's data). C<backing_file =E<gt> ''>
removes the backing file. C<unsafe =E<gt> 1> only rewrites the header.
C<backing_fmt> is required unless C<backing_file> is C<''>; every
argument is checked (new backing readable, name fits in the header)
before anything is written.

=back

=head2 External snapshots of a volume

A volume is a qcow2 file C<$volume>; snapshot C<$name> lives in the file
C<snap-$name-FILE> next to it (C<snapshot_file> gives the path); images
refer to their backing files by these relative names. Snapshot names match
C</^[a-z][a-z0-9_-]*$/i>, at most 40 characters; C<current> is reserved.

Every operation takes the volume's lock (C<.FILE.lock>; another process
waits up to C<lock_timeout_ms>, default 10000, then gets an error with code
C<busy>), first completes or undoes an operation that was interrupted
(recorded in C<.FILE.journal>), and records its own intent before
changing anything. There is never a moment without C<$volume>. The
journal names files relative to the volume's directory, so an operation
interrupted on C<images/100/vm-100-disk-0.qcow2> is completed through
C</srv/images/100/vm-100-disk-0.qcow2> and the other way round; a journal
left half-written (C<.FILE.journal.tmp>: its operation never started) is
removed.

=over

=item snapshot_create($volume, $name, %opt)

The live data becomes snapshot C<$name> and C<$volume> a new overlay on it
(C<cluster_size> default 128k, C<extended_l2> default on, C<preallocation>
default C<metadata>). The new C<$volume> keeps the owner, group and mode of
the old one. Refused when the new overlay's backing chain would be deeper
than C<max_depth> (256) images, which no later operation could open.
Refused while another process has C<$volume> open (it would go on writing
into what became the snapshot), unless C<running =E<gt> 1> says that a
QEMU holds it and switches to the new overlay itself (QMP
C<blockdev-snapshot>, as qemu-server does). An existing snapshot file is
never replaced.

=item snapshot_rollback($volume, $name, %opt)

C<$volume> becomes a fresh overlay on snapshot C<$name>, any snapshot, not
just the newest; the other snapshots stay valid. Taking a snapshot after
rolling back to an older one starts a branch: snapshots form a tree.
The new C<$volume> keeps the owner, group and mode of the old one. Refused
while another process has C<$volume> open.

=item snapshot_delete($volume, $name, running => 0, delete_method => 'auto', %opt)

Removes snapshot C<$name> anywhere in the tree. Without children the file
is removed. With one child the way that copies fewer bytes is taken: the
child is committed into the snapshot, which then takes the child's name
(the child's data clusters are copied), or the snapshot is streamed into
the child (the snapshot's data clusters that the child does not cover are
copied). Both are counted from the tables before anything moves, without
reading data; zero clusters and clusters that metadata preallocation
reserved but nothing wrote count as nothing. C<delete_method> forces
C<commit> or C<stream>. With several children each child is streamed.
Every child keeps its exact guest view. With C<running =E<gt> 1> (QEMU has
merged already) only the file is removed. A file that another image still
uses as backing file is never removed: the images of C<$volume>'s
directory are looked at, and with C<images_dir =E<gt> $dir> those of
C<$dir> and its subdirectories (a Proxmox VE storage's C<images>
directory, where a linked clone of another VM may be built on the
snapshot). Only two header fields of each file are read, without locks;
FIFOs and devices are never opened. The snapshot and the children it
writes are held and refused while another process has them open, before
anything is recorded. If it fails after that, the error says so: the
delete is recorded in the volume's journal and the next operation on the
volume (any of these functions, a listing included) completes it.

Returns a hash reference saying what was done: C<snapshot> (the name),
C<method> (C<commit>, C<stream>, C<unlink> for a snapshot without
children, or C<recovered> when an interrupted delete of it was just
completed), C<bytes> (the data bytes copied) and, with one child,
C<commit-bytes> and C<stream-bytes> (what each way copies).

=item snapshot_rename($volume, $from, $to, running => 0, images_dir => $dir, %opt)

Renames a snapshot file and rewrites its children's backing names.
"target snapshot '$to' already exists" if C<$to> exists. Refused, as a
delete is, while another image is built on the snapshot. Refused while
another process has a child open, unless C<running =E<gt> 1>: then a child
a QEMU holds keeps the old name (a second name of the same file) until QEMU
has changed its backing name itself (QMP C<change-backing-file>), and the
next operation on the volume removes the old name.

C<current> names the live disk C<$volume>, as in Proxmox VE's storage API.
C<$from = 'current'> takes snapshot C<$to>: the live data becomes C<$to>
and C<$volume> a new overlay on it (the options of C<snapshot_create>
apply; refused while another process has C<$volume> open, unless
C<running>). C<$to = 'current'> makes snapshot C<$from> the live disk,
replacing C<$volume> in one rename: the last step of deleting a snapshot
while a VM runs, after QEMU has committed C<$volume> into C<$from>
(C<running =E<gt> 1> says so). It is refused unless C<$volume> is built
on C<$from> and is its only child, and, without C<running>, unless
C<$volume> holds no data of its own. Every other snapshot stays, and
C<$volume> is never missing.

=item snapshot_list($volume, %opt)

The tree, rebuilt from the files. A regular file C<snap-NAME-FILE> (never
a symlink) is a snapshot of C<$volume> when it is recorded as its (the
extended attribute C<user.qcow2chain.volume> set when the snapshot is
taken) or lies in its tree: on the backing chain of C<$volume>, or built
on a snapshot that is. A file that merely fits the name pattern, such as
a snapshot of C<vm-100-x-vm-100-disk-0.qcow2> next to
C<vm-100-disk-0.qcow2>, is not one; every operation goes by this tree.
 C<{volume =E<gt> $volume, nodes =E<gt>
[...]}>, each node with C<name> (C<current>, a snapshot name, or undef),
C<kind> (C<current>, C<snapshot>, C<external> for a backing file that is
not one of this volume's snapshots, such as a linked clone's base, C<stray>
for an unreadable C<snap-*> file), C<file>, C<parent> (a name or undef),
C<backing-file>, C<children>, C<virtual-size>, C<actual-size>,
C<date-sec> (when the snapshot was taken: kept in the extended attribute
C<user.qcow2chain.created> of its file, so later merges into it do not
change it; the file's mtime where there is none), C<live> (on the chain of
C<current>). When an interrupted operation cannot be finished now (a file
it would change is in use), the listing changes nothing and says so in
C<pending> (one line).

=item volume_dependent($volume, images_dir => $dir, %opt)

Before removing a whole volume: C<($image, $file)>, an image outside the
volume's tree that is built on C<$file>, one of the volume's files (the
live disk or a snapshot); an empty list when there is none. Looked for as
C<snapshot_delete> does.

=item volume_recover($volume, %opt)

Completes or undoes an interrupted operation now (every operation does it
first anyway).

=item volume_forget($volume, %opt)

After the volume file was removed or renamed away: removes its lock,
journal and temporary files (C<.FILE.lock>, C<.FILE.journal>, ...).
Refused while C<$volume> exists.

=item snapshot_file($volume, $name)

The path of snapshot C<$name>'s file.

=back

=head2 Internal snapshots

In QEMU and in qcow2, a "snapshot" is an entry of the image's own snapshot
table (what C<qemu-img snapshot> manages): these functions. The
C<snapshot_*> functions above are a volume's external snapshots.

Each operation opens the file for writing (refused while another process
holds it) and becomes visible in one header write: the refcounts, tables
and snapshot table of the new state are first written to free clusters
(refcount blocks that change are copied, never changed in place), then the
header switches to them. A crash leaves the image as before or as after,
with no leaked cluster and no COPIED flag out of step with its refcount
(QEMU's in-place order can leave those, which C<qemu-img check> reports as
corruption). Memory stays bounded whatever the disk size. C<progress>
reports the guest bytes walked.

=over

=item internal_snapshot_create($file, $name, %opt)

C<qemu-img snapshot -c>: a snapshot of the live disk, with the next free
ID, the date, no VM state. Names are 1 to 255 bytes; a name (or ID) that
exists is refused ("snapshot 'NAME' already exists"; qemu-img would add a
second one with the same name). Snapshots with VM state made by QEMU
(savevm) keep it.

=item internal_snapshot_apply($file, $id_or_name, %opt)

C<qemu-img snapshot -a>: the live disk becomes the snapshot's view (its
virtual size included). The ID is looked up first, then the name.

=item internal_snapshot_delete($file, $id_or_name, %opt)

C<qemu-img snapshot -d>: removes the snapshot and frees what only it used,
its VM state included; the freed space goes back to the host.

=item internal_snapshot_list($file, %opt)

The C<snapshots> array of C<qemu-img info --output=json> (empty if none):
C<id>, C<name>, C<vm-state-size>, C<date-sec>, C<date-nsec>,
C<vm-clock-sec>, C<vm-clock-nsec>, C<icount>. Shared lock only.

=item snapshot_split($file, $snap, $out, base => $snap2, backing_file => $name, backing_fmt => $fmt, %opt)

Writes the guest view of internal snapshot C<$snap> to the new qcow2 file
C<$out> (atomically; an existing file is never replaced). Without C<base>,
C<$out> holds every cluster of the snapshot and keeps C<$file>'s own
backing file, if any (so it belongs next to C<$file>). With C<base>
(another snapshot's ID or name, C<''> for the live disk), C<$out> is backed
by C<backing_file> (stored as given), which must show that snapshot, and
holds only the clusters whose L2 entries differ from the base's: two
entries naming the same host cluster hold the same data, so those clusters
are never read. Returns C<{clusters, cluster-size, compared-entries,
skipped-tables, copied-clusters, zeroed-clusters, bytes-read}>.

Works while QEMU runs C<$file> (shared lock only). That is safe because
QEMU never rewrites a cluster a snapshot uses: a cluster only the snapshot
uses has no active table pointing at it, and a shared one (refcount above
one) is copied before a guest write; QEMU changes only the COPIED flags of
a snapshot's tables, which the comparison ignores. What can happen is a
concurrent delete of the snapshot (QMP C<snapshot-delete>, C<delvm>),
after which its clusters may be reused: the snapshot's table entry (ID,
name, L1 table, date) is read again after the copy, and if it changed
C<$out> is not created and the call fails (code C<busy>).

=item volume_to_external($volume, names => { OLD => 'new' }, drop_vm_state => 1, %opt)

Offline. Every internal snapshot of C<$volume> becomes an external one,
C<snap-NAME-FILE>, in the order they were taken (C<snapshot_list> shows
them so), each on the file of the one before and holding only the
clusters that differ from it; C<$volume> keeps its view, on the newest,
without internal snapshots. Internal snapshot names that are not valid
volume snapshot names are refused, all listed in one message, unless
C<names> maps them; snapshots with VM state are refused unless
C<drop_vm_state>. Journaled like the volume operations: new files are
built under temporary names; an interruption before they are renamed into
place is undone, after it completed, by the next operation on the volume.

=item volume_to_internal($volume, %opt)

Offline, the reverse: every external snapshot of C<$volume> becomes an
internal snapshot of C<$volume> (same name, same date), parents first,
and its file is removed; C<$volume> keeps its view. Each snapshot costs its
own layer's data, not the disk size. All snapshots must share one base (a
linked clone's base stays the backing file). Journaled as above.

=back

=head2 Checks and helpers

=over

=item check($file, repair => 'leaks' | 'all', %opt)

Checks every refcount against the metadata, as C<qemu-img check>. Returns
a hash with qemu-img's JSON keys (C<image-end-offset>, C<total-clusters>,
C<check-errors>, C<leaks>, C<leaks-fixed>, C<corruptions>,
C<corruptions-fixed>, C<allocated-clusters>, C<fragmented-clusters>,
C<compressed-clusters>, C<filename>, C<format>), plus C<messages> (the
findings, one per line), C<status> (C<clean>, C<leaks>, C<corrupt>,
C<error>) and C<repair> (the command that repairs it, or undef), for
monitoring scripts. C<repair =E<gt> 'leaks'> frees leaked clusters,
C<'all'> also rebuilds wrong refcounts.

=item import_check($file, format => $fmt)

Whether an uploaded image is safe to attach (what Proxmox calls an
"untrusted" import): reads C<$file> alone, never a backing or data file,
never through a symlink. Returns C<{ filename, format, virtual-size, safe,
problems =E<gt> [...] }>; C<safe> is false when the image has a backing
file, an external data file, encryption, unknown features, tables or
references outside the file, or is marked corrupt or dirty.

=item parse_size($text)

Bytes from a size with an optional k/M/G/T/P/E suffix (powers of 1024).

=item core_version()

Version of the C core.

=back

=head1 SEE ALSO

L<qcow2-chain(1)>, L<PVE::Storage::Qcow2Chain::Image> (guest reads and
writes on an open image), L<PVE::Storage::Qcow2Chain::Error>.

=cut
