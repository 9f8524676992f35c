package QcTest;

# Helpers for the test suite: scratch directories, the real qemu-img/qemu-io
# as oracles, and comparison of our results with theirs.

use strict;
use warnings;

use Cwd qw(abs_path getcwd);
use Exporter 'import';
use File::Temp qw(tempdir);
use POSIX ();
use JSON::PP;
use Test::More;

our @EXPORT = qw(
    scratch qimg qimg_ok qio run_cmd json_canon qimg_json our_cli slurp same_file
    asan_driver BIN patch peek guest_write peak_mib
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
sub qimg_ok {
    my (@args) = @_;
    return run_cmd('qemu-img', @args);
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

sub same_file {
    my ($a, $b) = @_;
    my ($rc) = run_cmd('cmp', '-s', $a, $b);
    return $rc == 0;
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

# Bytes of a file at an offset.
sub peek {
    my ($f, $off, $len) = @_;
    open(my $fh, '<:raw', $f) or die "$f: $!";
    seek($fh, $off, 0);
    read($fh, my $b, $len);
    return $b;
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

# The probe driver built with AddressSanitizer and UBSan (built once).
sub asan_driver {
    my $bin = "$ROOT/t/c/bin/qc-probe";
    my ($rc, $o, $e) = run_cmd($^X, "$ROOT/t/c/run-ctest.pl", '--build-only');
    die "building the ASan driver failed: $o$e" if $rc != 0;
    return $bin;
}

1;
