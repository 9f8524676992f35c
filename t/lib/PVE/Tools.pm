# Test-only clean-room stand-in for Proxmox's PVE::Tools (pve-common).
# Only what the other stand-ins (and a storage plugin under test) need:
# run_command, lock_file, file helpers and split_list. Behaviour follows the
# documented contract; this is not Proxmox's code.
package PVE::Tools;

use strict;
use warnings;

use Exporter 'import';
use Fcntl qw(:flock O_CREAT O_RDWR);
use File::Basename qw(dirname);
use IO::Handle;
use IO::Select;
use IPC::Open3 qw(open3);
use POSIX ();
use Symbol qw(gensym);

our @EXPORT_OK = qw(
    run_command file_get_contents file_set_contents file_read_firstline split_list
    lock_file dir_glob_foreach trim
);

sub trim {
    my ($s) = @_;
    return undef if !defined($s);
    $s =~ s/^\s+//;
    $s =~ s/\s+$//;
    return $s;
}

# Splits "a,b;c d" style lists; empty items are dropped.
sub split_list {
    my ($list) = @_;
    return () if !defined($list);
    return grep { length } split(/[\s,;\0]+/, $list);
}

sub cmd2string {
    my ($cmd) = @_;
    return $cmd if !ref($cmd);
    return join(' ', map { my $a = $_; $a =~ m/^[-\w.\/=:+@%,]+$/ ? $a : "'" . ($a =~ s/'/'\\''/gr) . "'" } @$cmd);
}

# run_command($cmd, %param)
#   $cmd: array ref (exec without shell) or string (run by /bin/sh -c)
#   outfunc / errfunc: called once per output line (without the newline);
#       without them, output is passed through to our STDOUT/STDERR
#   input: string written to the command's stdin
#   timeout: seconds, the command is killed when it runs longer
#   errmsg: prefix of the error message
#   noerr: return the exit code instead of dying
# Returns the exit code (0 on success).
#
# Test seam (not in the real module): every sub in @BEFORE_RUN_COMMAND is
# called with the command (array ref or string) before it runs, every sub
# in @AFTER_RUN_COMMAND after it ran, whatever its outcome
# (t/lib/QcLVM.pm stands in for device-mapper this way).
our (@BEFORE_RUN_COMMAND, @AFTER_RUN_COMMAND);

sub run_command {
    my ($cmd, %param) = @_;
    $_->($cmd) for @BEFORE_RUN_COMMAND;
    my $res = eval { run_command_inner($cmd, %param) };
    my $err = $@;
    $_->($cmd) for @AFTER_RUN_COMMAND;
    die $err if $err;
    return $res;
}

sub run_command_inner {
    my ($cmd, %param) = @_;

    my $cmdstr = cmd2string($cmd);
    my @argv = ref($cmd) ? @$cmd : ('/bin/sh', '-c', $cmd);

    my ($in, $out, $err) = (gensym, gensym, gensym);
    my $pid = eval { open3($in, $out, $err, @argv) };
    if (my $e = $@) {
        die(($param{errmsg} ? "$param{errmsg}: " : '') . "command '$cmdstr' failed: $e");
    }

    print {$in} $param{input} if defined($param{input});
    close($in);

    my %buf = ($out => '', $err => '');
    my %func = ($out => $param{outfunc}, $err => $param{errfunc});
    my %fallback = ($out => \*STDOUT, $err => \*STDERR);
    my $sel = IO::Select->new($out, $err);
    my $deadline = defined($param{timeout}) ? time() + $param{timeout} : undef;
    my $timed_out;

    my $emit = sub {
        my ($fh, $line) = @_;
        if (my $f = $func{$fh}) {
            $f->($line);
        } else {
            print { $fallback{$fh} } "$line\n";
        }
    };

    while ($sel->count) {
        my $wait = defined($deadline) ? $deadline - time() : undef;
        if (defined($wait) && $wait <= 0) {
            $timed_out = 1;
            kill('KILL', $pid);
            last;
        }
        for my $fh ($sel->can_read($wait)) {
            my $n = sysread($fh, my $chunk, 65536);
            if (!$n) {
                $sel->remove($fh);
                next;
            }
            $buf{$fh} .= $chunk;
            while ($buf{$fh} =~ s/^([^\n]*)\n//) {
                $emit->($fh, $1);
            }
        }
    }
    for my $fh ($out, $err) {
        $emit->($fh, $buf{$fh}) if length($buf{$fh});
        close($fh);
    }
    waitpid($pid, 0);
    my $status = $?;

    my $prefix = $param{errmsg} ? "$param{errmsg}: " : '';
    die "${prefix}command '$cmdstr' failed: got timeout\n" if $timed_out;

    my $code = 0;
    if ($status & 127) {
        $code = -1;
        return $code if $param{noerr};
        die "${prefix}command '$cmdstr' failed: got signal " . ($status & 127) . "\n";
    }
    $code = $status >> 8;
    return $code if $param{noerr} || $code == 0;
    die "${prefix}command '$cmdstr' failed: exit code $code\n";
}

# lock_file($path, $timeout, $code, @param)
# Runs $code under an exclusive flock on $path. Like the real helper it does
# not die: on failure it returns undef and leaves the error in $@.
sub lock_file {
    my ($path, $timeout, $code, @param) = @_;

    $timeout //= 10;
    my $res;
    my $ok = eval {
        sysopen(my $fh, $path, O_CREAT | O_RDWR, 0600) or die "can't open file '$path' - $!\n";
        my $until = time() + $timeout;
        while (!flock($fh, LOCK_EX | LOCK_NB)) {
            die "can't lock file '$path' - got timeout\n" if time() >= $until;
            select(undef, undef, undef, 0.05);
        }
        $res = $code->(@param);
        close($fh);
        1;
    };
    if (!$ok) {
        return undef; # $@ is set
    }
    $@ = '';
    return $res;
}

sub file_get_contents {
    my ($path, $max) = @_;
    open(my $fh, '<:raw', $path) or die "unable to open file '$path' - $!\n";
    local $/;
    my $data = <$fh>;
    close($fh);
    $data //= '';
    die "file '$path' too long - limit $max bytes\n" if defined($max) && length($data) > $max;
    return $data;
}

sub file_read_firstline {
    my ($path) = @_;
    open(my $fh, '<', $path) or return undef;
    my $line = <$fh>;
    close($fh);
    return undef if !defined($line);
    chomp $line;
    return $line;
}

# Writes via a temporary file and rename, so readers never see half a file.
sub file_set_contents {
    my ($path, $data, $perm) = @_;
    my $tmp = "$path.tmp.$$";
    sysopen(my $fh, $tmp, Fcntl::O_WRONLY() | O_CREAT | Fcntl::O_TRUNC(), $perm // 0644)
        or die "unable to open file '$tmp' - $!\n";
    binmode($fh);
    print {$fh} $data or die "unable to write '$tmp' - $!\n";
    close($fh) or die "unable to close '$tmp' - $!\n";
    rename($tmp, $path) or do { unlink $tmp; die "unable to rename '$tmp' to '$path' - $!\n" };
    return;
}

# dir_glob_foreach($dir, $regex, $func): calls $func->($name, @captures) for
# every entry of $dir whose whole name matches $regex.
sub dir_glob_foreach {
    my ($dir, $regex, $func) = @_;
    opendir(my $dh, $dir) or return;
    for my $name (sort readdir($dh)) {
        next if $name eq '.' || $name eq '..';
        if (my @m = ($name =~ m/^(?:$regex)$/)) {
            $func->($name, (defined($1) ? @m : ()));
        }
    }
    closedir($dh);
    return;
}

1;
