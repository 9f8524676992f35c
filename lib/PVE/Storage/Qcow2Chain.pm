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
    force_share no_lock cache_size rate_limit allowed_dirs progress fault fault_stats
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

sub map {
    my ($file, %opt) = @_;
    my $o = _opts('map', {}, %opt);
    return _map(_file('map', $file), delete $o->{format}, $o);
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

my %SNAP = map { $_ => 1 } qw(cluster_size extended_l2 preallocation running delete_method lock_timeout_ms);
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
    _snapshot('create', _file('snapshot_create', $volume), $name // '', undef, _snap_opts('snapshot_create', %opt));
    return;
}

sub snapshot_rollback {
    my ($volume, $name, %opt) = @_;
    _snapshot('rollback', _file('snapshot_rollback', $volume), $name // '', undef, _snap_opts('snapshot_rollback', %opt));
    return;
}

sub snapshot_delete {
    my ($volume, $name, %opt) = @_;
    _snapshot('delete', _file('snapshot_delete', $volume), $name // '', undef, _snap_opts('snapshot_delete', %opt));
    return;
}

sub snapshot_rename {
    my ($volume, $from, $to, %opt) = @_;
    _snapshot('rename', _file('snapshot_rename', $volume), $from // '', $to // '', _snap_opts('snapshot_rename', %opt));
    return;
}

sub snapshot_list {
    my ($volume, %opt) = @_;
    return _snapshot_list(_file('snapshot_list', $volume), _snap_opts('snapshot_list', %opt));
}

sub volume_recover {
    my ($volume, %opt) = @_;
    _snapshot('recover', _file('volume_recover', $volume), '', undef, _snap_opts('volume_recover', %opt));
    return;
}

# the directory store's name for it, from the core (the one place that spells it)
sub snapshot_file {
    my ($volume, $name) = @_;
    die "snapshot_file: bad volume path\n" if !defined($volume) || $volume !~ m{[^/]$};
    return _snapshot_file($volume, $name // '');
}

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

sub read {
    my ($file, $offset, $length, %opt) = @_;
    my $o = _opts('read', {}, %opt);
    die "read: offset and length must be non-negative integers\n"
        if ($offset // '') !~ /^\d+$/ || ($length // '') !~ /^\d+$/;
    return _read(_file('read', $file), delete $o->{format}, $offset, $length, $o);
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

    my $extents = PVE::Storage::Qcow2Chain::map($path);   # like `qemu-img map`
    PVE::Storage::Qcow2Chain::convert_raw($path, "/tmp/disk.raw");
    my $bytes = PVE::Storage::Qcow2Chain::read($path, 0, 4096);

=head1 DESCRIPTION

This module reads qcow2 images and their backing chains natively (no
C<qemu-img> process). All functions raise a
L<PVE::Storage::Qcow2Chain::Error> on failure; it stringifies as one line
ending in C<"\n">.

Relative backing names resolve against the directory of the overlay, never
the current directory. The backing format must be recorded in the overlay
(unless C<probe_backing_format> is set); C<json:> and protocol names are
refused; loops and chains deeper than C<max_depth> are errors.

Opening takes QEMU's image locks: inspection (C<info>, C<map>, C<read>) only
takes the shared lock, so it works while a VM runs; C<convert_raw> takes
the normal read lock and fails while another process writes the image.

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

=item map($file, %opt)

Returns the extents of C<qemu-img map --output=json>: an array of hashes
with C<start>, C<length>, C<depth>, C<present>, C<zero>, C<data> and, where
the data has a host position, C<offset>.

=item convert_raw($file, $out, %opt)

Writes the guest view of the whole chain to C<$out> (created or truncated)
as a sparse raw file.

=item read($file, $offset, $length, %opt)

Returns C<$length> bytes of the guest view starting at C<$offset>.

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
changing anything. There is never a moment without C<$volume>.

=over

=item snapshot_create($volume, $name, %opt)

The live data becomes snapshot C<$name> and C<$volume> a new overlay on it
(C<cluster_size> default 128k, C<extended_l2> default on, C<preallocation>
default C<metadata>). Works while a VM runs: C<$volume> is only read with
the shared lock; the VM must then switch to the new overlay itself (QMP
C<blockdev-snapshot>). An existing snapshot file is never replaced.

=item snapshot_rollback($volume, $name, %opt)

C<$volume> becomes a fresh overlay on snapshot C<$name>, any snapshot, not
just the newest; the other snapshots stay valid. Taking a snapshot after
rolling back to an older one starts a branch: snapshots form a tree.
Refused while a VM holds C<$volume>.

=item snapshot_delete($volume, $name, running => 0, delete_method => 'auto', %opt)

Removes snapshot C<$name> anywhere in the tree. Without children the file
is removed. With one child the smaller layer moves: the child is committed
into the snapshot which then takes the child's name, or the snapshot is
streamed into the child (C<delete_method> forces C<commit> or C<stream>).
With several children each child is streamed. Every child keeps its exact
guest view. With C<running =E<gt> 1> (QEMU has merged already) only the
file is removed. A file that another image still uses as backing file is
never removed.

=item snapshot_rename($volume, $from, $to, %opt)

Renames a snapshot file and rewrites its children's backing names.
"target snapshot '$to' already exists" if C<$to> exists.

=item snapshot_list($volume, %opt)

The tree, rebuilt from the files: C<{volume =E<gt> $volume, nodes =E<gt>
[...]}>, each node with C<name> (C<current>, a snapshot name, or undef),
C<kind> (C<current>, C<snapshot>, C<external> for a backing file that is
not one of this volume's snapshots, such as a linked clone's base, C<stray>
for an unreadable C<snap-*> file), C<file>, C<parent> (a name or undef),
C<backing-file>, C<children>, C<virtual-size>, C<actual-size>,
C<date-sec> (when the snapshot was taken: kept in the extended attribute
C<user.qcow2chain.created> of its file, so later merges into it do not
change it; the file's mtime where there is none), C<live> (on the chain of
C<current>).

=item volume_recover($volume, %opt)

Completes or undoes an interrupted operation now (every operation does it
first anyway).

=item snapshot_file($volume, $name)

The path of snapshot C<$name>'s file.

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
