package QcTest;

# Helpers for the test suite: scratch directories, the real qemu-img/qemu-io
# as oracles, and comparison of our results with theirs.

use strict;
use warnings;

use Cwd qw(abs_path getcwd);
use Digest::MD5;
use File::Basename qw(dirname);
use Exporter 'import';
use File::Temp qw(tempdir);
use POSIX ();
use JSON::PP;
use Test::More;

our @EXPORT = qw(
    scratch qimg qimg_ok qio run_cmd json_canon qimg_json our_cli slurp same_file
    asan_driver BIN patch peek guest_write qio_holder holder_do holder_stop qsd_holder branched_volume peak_mib
    quietly need_tool remembered qimg_check view_md5 copy_sparse
);

my $ROOT = abs_path(__FILE__ . '/../../..');
sub BIN { "$ROOT/bin/qcow2-chain" }

# A fresh directory for this test file, removed at the end.
sub scratch {
    my $base = $ENV{QC_TEST_TMP} // '/tmp';
    return tempdir('qc-test-XXXXXX', DIR => $base, CLEANUP => !$ENV{QC_KEEP});
}

# Run a command; returns (exit code, stdout, stderr). Output goes through
# files, so a chatty command cannot block on a full pipe.
sub run_cmd {
    my (@cmd) = @_;
    my $o = File::Temp->new;
    my $e = File::Temp->new;
    my $pid = fork() // die "fork: $!";
    if (!$pid) {
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>&', $o) or die;
        open(STDERR, '>&', $e) or die;
        exec(@cmd) or POSIX::_exit(127);
    }
    waitpid($pid, 0);
    my $rc = $? >> 8;
    return ($rc, slurp("$o"), slurp("$e"));
}

sub qimg {
    my (@args) = @_;
    my ($rc, $o, $e) = run_cmd('qemu-img', @args);
    die "qemu-img @args failed ($rc): $e" if $rc != 0;
    return $o;
}

# qemu-img whose exit code matters (check: 0, 2, 3).
# The path of a program the tests need; dies when it is missing (tools/run
# test installs it: a skipped test would hide the missing install step).
sub need_tool {
    my ($name, $package) = @_;
    my $p = `sh -c 'command -v $name'`;
    chomp $p;
    die "$name not found: install $package (./tools/run test does)\n" if !$p;
    return $p;
}

sub qimg_ok {
    my (@args) = @_;
    return run_cmd('qemu-img', @args);
}

# ---- qemu-img's answers, remembered --------------------------------------
# What qemu-img says of an image is a function of the bytes of the image
# and of its backing files. The fault tests reach the same states over and
# over (a fault before the first write, a redo that ends where the last one
# did), so its answers are kept by the digest of those bytes and qemu-img
# runs again only for bytes it has not seen.

# Backing file name in a qcow2 header, undef if none (or not qcow2).
sub backing_name {
    my ($f) = @_;
    open(my $fh, '<:raw', $f) or return undef;
    read($fh, my $h, 80) == 80 or return undef;
    my ($magic, $version, $off, $len) = unpack('a4 N Q> N', $h);
    return undef if $magic ne "QFI\xfb" || !$off || !$len;
    seek($fh, $off, 0) or return undef;
    read($fh, my $n, $len) == $len or return undef;
    return $n;
}

# MD5 of a file: of its data extents (SEEK_DATA/SEEK_HOLE) with their
# offsets, so holes cost no reading (the same bytes with other holes only
# make another digest). The last extents seen under each name (of files up
# to 64 MiB) are kept: comparing is cheaper than hashing, and most files of
# a chain have not changed since the last question.
my %last_seen;
sub file_md5 {
    my ($f) = @_;
    open(my $fh, '<:raw', $f) or return undef;
    my $size = -s $fh;
    return Digest::MD5->new->addfile($fh)->hexdigest if $size > 64 << 20;
    my $bytes = pack('Q>', $size); # a trailing hole is in the size only
    for (my $off = 0; $off < $size;) {
        my $data = sysseek($fh, $off, 3); # SEEK_DATA
        if (!defined $data) { last if $! == POSIX::ENXIO(); return undef } # ENXIO: a hole to the end
        my $hole = sysseek($fh, $data, 4) // return undef; # SEEK_HOLE
        $bytes .= pack('Q> Q>', $data, $hole - $data);
        sysseek($fh, $data, 0) // return undef;
        for (my $at = $data; $at < $hole;) {
            my $n = sysread($fh, $bytes, $hole - $at, length($bytes)) or return undef;
            $at += $n;
        }
        $off = $hole;
    }
    my $l = $last_seen{$f};
    return $l->[1] if $l && ${ $l->[0] } eq $bytes;
    $last_seen{$f} = [\$bytes, Digest::MD5::md5_hex($bytes)]; # kept, not copied
    return $last_seen{$f}[1];
}

# Digest of an image and its backing files (names and bytes), or undef
# when it cannot be known from files alone (an external data file, a
# backing name that is no plain file, a loop).
sub chain_digest {
    my ($f) = @_;
    my $md5 = Digest::MD5->new;
    my %seen;
    for (my $x = $f; defined $x;) {
        return undef if $seen{$x}++ || !-f $x;
        open(my $fh, '<:raw', $x) or return undef;
        read($fh, my $h, 80);
        my ($magic, $version, $incompat) = unpack('a4 N x64 Q>', $h . "\0" x 80);
        return undef if $magic eq "QFI\xfb" && $version >= 3 && ($incompat & 4); # external data file
        my $d = file_md5($x) // return undef;
        $md5->add("$x\0$d\0");
        my $b = backing_name($x);
        $x = !defined($b) ? undef : $b =~ m{^/} ? $b : dirname($x) . "/$b";
    }
    return $md5->hexdigest;
}

my %remembered;

# $code's answer about image $f, asked once per content of its chain
# ($question names what $code computes, with anything else it depends on).
sub remembered {
    my ($f, $question, $code) = @_;
    my $k = chain_digest($f);
    return $code->() if !defined $k;
    return @{ $remembered{"$question\0$k"} //= [$code->()] };
}

# qemu-img check FILE: (exit code, stdout, stderr), remembered.
sub qimg_check {
    my ($f) = @_;
    return remembered($f, 'check', sub { run_cmd('qemu-img', 'check', $f) });
}

# MD5 of FILE's guest view (qemu-img convert to raw), or of its internal
# snapshot $snap's, remembered.
sub view_md5 {
    my ($f, $snap) = @_;
    my @l = defined $snap ? ('-l', "snapshot.name=$snap") : ();
    return (remembered($f, "view @l", sub {
        my $raw = File::Temp->new(TEMPLATE => 'qc-view-XXXXXX', TMPDIR => 1);
        qimg('convert', '-O', 'raw', @l, $f, "$raw");
        open(my $fh, '<:raw', "$raw") or die "$raw: $!";
        return Digest::MD5->new->addfile($fh)->hexdigest;
    }))[0];
}

# Copy a file with its holes where they are (SEEK_DATA/SEEK_HOLE): the copy
# of a preallocated image has data clusters over holes as the original has
# (File::Copy writes holes out as zeros, and QEMU's and our preallocation
# heuristic then sees another file).
sub copy_sparse {
    my ($from, $to) = @_;
    open(my $in, '<:raw', $from) or die "$from: $!";
    open(my $out, '>:raw', $to) or die "$to: $!";
    my $size = -s $in;
    for (my $off = 0; $off < $size;) {
        my $data = sysseek($in, $off, 3); # SEEK_DATA
        if (!defined $data) { last if $! == POSIX::ENXIO(); die "$from: $!" } # ENXIO: a hole to the end
        my $hole = sysseek($in, $data, 4) // die "$from: $!"; # SEEK_HOLE
        defined(sysseek($in, $data, 0)) && defined(sysseek($out, $data, 0)) or die "$from: $!";
        for (my $at = $data; $at < $hole;) {
            my $want = $hole - $at < 4 << 20 ? $hole - $at : 4 << 20;
            my $n = sysread($in, my $buf, $want) // die "$from: $!";
            die "$from: short read\n" if !$n;
            syswrite($out, $buf) == $n or die "$to: $!";
            $at += $n;
        }
        $off = $hole;
    }
    truncate($out, $size) or die "$to: $!";
    close $out or die "$to: $!";
    return 1;
}

sub qio {
    my ($file, @cmds) = @_;
    my @fmt = ('-f', 'qcow2');
    if (ref $file) { @fmt = ('-f', $file->[1]); $file = $file->[0] }
    my ($rc, $o, $e) = run_cmd('qemu-io', @fmt, (map { ('-c', $_) } @cmds), $file);
    die "qemu-io @cmds $file failed ($rc): $o$e" if $rc != 0 || $o =~ /(failed|error)/i;
    return $o;
}

sub qimg_json { decode_json(qimg(@_)) }

# Canonical JSON text of data (for is() with readable diffs).
sub json_canon { JSON::PP->new->canonical->pretty->encode($_[0]) }

# Run our CLI through the built blib.
sub our_cli {
    my (@args) = @_;
    return run_cmd($^X, "-I$ROOT/blib/lib", "-I$ROOT/blib/arch", BIN, @args);
}

sub slurp {
    my ($f) = @_;
    open(my $fh, '<:raw', $f) or die "open $f: $!";
    local $/;
    return scalar <$fh>;
}

# Two files with the same bytes (compared a MiB at a time; false if one is missing).
sub same_file {
    my ($a, $b) = @_;
    open(my $fa, '<:raw', $a) or return 0;
    open(my $fb, '<:raw', $b) or return 0;
    return 0 if -s $fa != -s $fb;
    while (1) {
        my $na = read($fa, my $x, 1 << 20) // die "$a: $!";
        my $nb = read($fb, my $y, 1 << 20) // die "$b: $!";
        return 0 if $x ne $y;
        return 1 if !$na;
    }
}

# Overwrite bytes of a file in place (a hand-made corruption).
sub patch {
    my ($f, $off, $bytes) = @_;
    open(my $fh, '+<:raw', $f) or die "$f: $!";
    seek($fh, $off, 0);
    print $fh $bytes;
    close $fh;
    return;
}

# A guest write through our API (the image opened read-write, then closed).
sub guest_write {
    my ($f, $off, $bytes) = @_;
    require PVE::Storage::Qcow2Chain;
    my $img = PVE::Storage::Qcow2Chain::Image->open($f, rw => 1);
    $img->write($off, $bytes);
    $img->close;
    return;
}

# A volume with a branched snapshot tree: a -> b -> current, and a -> c
# (@create: qemu-img create options of the volume).
sub branched_volume {
    my ($vol, $size, @create) = @_;
    require PVE::Storage::Qcow2Chain;
    qimg('create', '-q', '-f', 'qcow2', @create, $vol, $size);
    qio($vol, 'write -q -P 0x10 0 2M');
    PVE::Storage::Qcow2Chain::snapshot_create($vol, 'a');
    qio($vol, 'write -q -P 0x20 512k 100k');
    PVE::Storage::Qcow2Chain::snapshot_create($vol, 'c');
    PVE::Storage::Qcow2Chain::snapshot_rollback($vol, 'a');
    qio($vol, 'write -q -P 0x30 1M 300k');
    PVE::Storage::Qcow2Chain::snapshot_create($vol, 'b');
    qio($vol, 'write -q -P 0x40 3M 64k');
    return;
}

# Bytes of a file at an offset.
sub peek {
    my ($f, $off, $len) = @_;
    open(my $fh, '<:raw', $f) or die "$f: $!";
    seek($fh, $off, 0);
    read($fh, my $b, $len);
    return $b;
}

# A qemu-io holding FILE and its whole backing chain with locking off on
# every layer, as Proxmox's QEMU runs; it takes commands on its stdin
# (holder_do) and writes what it says to OUT.
sub qio_holder {
    my ($file, $out) = @_;
    my $depth = @{ qimg_json('info', '-U', '--backing-chain', '--output=json', $file) } - 1;
    my $opts = join(',', 'driver=qcow2', 'file.driver=file', "file.filename=$file",
        map { ('backing.' x $_) . 'file.locking=off' } 0 .. $depth);
    unlink $out;
    my $pid = open(my $in, '|-') // die "fork: $!";
    if (!$pid) {
        open(STDOUT, '>', $out) or die;
        open(STDERR, '>&', \*STDOUT) or die;
        exec('qemu-io', '--image-opts', $opts) or POSIX::_exit(127);
    }
    $in->autoflush(1);
    my $h = { pid => $pid, in => $in, out => $out };
    holder_do($h, 'read 0 512', 'read'); # it holds the chain once it has answered
    return $h;
}

# One qemu-io command in the holder; waits until it has said $done ("wrote", "read").
sub holder_do {
    my ($h, $cmd, $done) = @_;
    print { $h->{in} } "$cmd\n";
    my $want = ++$h->{$done};
    for (1 .. 1200) {
        my $n = () = (-e $h->{out} ? slurp($h->{out}) : '') =~ /^(?:qemu-io> )*$done /mg;
        return if $n >= $want;
        select(undef, undef, undef, 0.05);
    }
    die "qemu-io did not answer '$cmd': " . slurp($h->{out});
}

sub holder_stop {
    my ($h) = @_;
    print { $h->{in} } "flush\nquit\n";
    close $h->{in};
    waitpid($h->{pid}, 0);
    return;
}

# qemu-storage-daemon holding FILE's chain as node "drive", every layer
# given with locking off (as qemu-server attaches disks), with the extra
# arguments (exports, a monitor, --pidfile); returns its pid once the path
# $ready exists. Its stderr goes to $ready.err.
sub qsd_holder {
    my ($file, $ready, @args) = @_;
    my $node = 'null';
    for my $l (reverse @{ qimg_json('info', '-U', '--backing-chain', '--output=json', $file) }) {
        my $f = abs_path($l->{filename});
        $node = qq({"driver":"qcow2","file":{"driver":"file","filename":"$f","locking":"off"},"backing":$node});
    }
    $node =~ s/^\{/{"node-name":"drive",/;
    unlink $ready;
    my $pid = fork() // die "fork: $!";
    if (!$pid) {
        open(STDOUT, '>', '/dev/null');
        open(STDERR, '>', "$ready.err");
        exec('qemu-storage-daemon', '--blockdev', $node, @args) or POSIX::_exit(127);
    }
    for (1 .. 600) {
        return $pid if -e $ready;
        die 'qemu-storage-daemon failed: ' . slurp("$ready.err") if waitpid($pid, POSIX::WNOHANG()) == $pid;
        select(undef, undef, undef, 0.05);
    }
    die "qemu-storage-daemon did not start\n";
}

# Run $code in a child; returns its peak resident size in MiB (dies if the child failed).
sub peak_mib {
    my ($code) = @_;
    my $pid = fork() // die;
    if (!$pid) {
        eval { $code->() };
        if ($@) { print STDERR $@; POSIX::_exit(1) }
        open(my $fh, '<', '/proc/self/status') or POSIX::_exit(2);
        my ($hwm) = map { /^VmHWM:\s+(\d+)/ ? $1 : () } <$fh>;
        open(my $out, '>', 'peak') or POSIX::_exit(3);
        print $out $hwm;
        close $out;
        POSIX::_exit(0);
    }
    waitpid($pid, 0);
    die "child failed\n" if $?;
    return slurp('peak') / 1024;
}

# This process's stderr goes to a log from stderr_to_log to stderr_back, for
# what is expected there (tools that warn on every run, the errors a reference
# tool prints for a case we provoke); the log is shown only if the test fails.
my ($stderr_log, $saved_stderr);

sub stderr_to_log {
    $stderr_log //= File::Temp->new(TEMPLATE => 'qc-stderr-XXXXXX', TMPDIR => 1);
    open($saved_stderr, '>&', \*STDERR) or die "dup stderr: $!";
    open(STDERR, '>>', "$stderr_log") or die "$stderr_log: $!";
    return;
}

sub stderr_back {
    return if !$saved_stderr;
    open(STDERR, '>&', $saved_stderr) or die "restore stderr: $!";
    undef $saved_stderr;
    return;
}

# $code's results, its stderr in the log.
sub quietly {
    my ($code) = @_;
    stderr_to_log();
    my @r = eval { $code->() };
    my $err = $@;
    stderr_back();
    die $err if $err;
    return wantarray ? @r : $r[0];
}

END {
    # also when the test died (its message may be in the log: it died while stderr went there)
    if ($stderr_log && -s "$stderr_log" && (!Test::More->builder->is_passing || $?)) {
        diag("stderr kept out of the output:\n" . slurp("$stderr_log"));
    }
}

# The probe driver built with AddressSanitizer and UBSan (built once).
sub asan_driver {
    my $bin = "$ROOT/t/c/bin/qc-probe";
    my ($rc, $o, $e) = run_cmd($^X, "$ROOT/t/c/run-ctest.pl", '--build-only');
    die "building the ASan driver failed: $o$e" if $rc != 0;
    return $bin;
}

1;
