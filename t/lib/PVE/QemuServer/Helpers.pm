# Test-only clean-room stand-in for Proxmox's PVE::QemuServer::Helpers
# (qemu-server 9.2.6): how qemu-server tells that a VM runs on this node.
# Its pid file names a process whose command line is a QEMU (a command
# ending in "kvm" or named "qemu-*") started with that very pid file.
# Only that part is provided. The run directory is
# $PVE_STANDIN_QEMU_RUN_DIR (the real one is /var/run/qemu-server), so a
# test can start a qemu-storage-daemon with --pidfile there. Written from
# the behaviour of qemu-server; this is not Proxmox's code.
package PVE::QemuServer::Helpers;

use strict;
use warnings;

our $var_run_tmpdir = $ENV{PVE_STANDIN_QEMU_RUN_DIR} // '/var/run/qemu-server';

sub vm_pidfile_name {
    my ($vmid) = @_;
    return "$var_run_tmpdir/$vmid.pid";
}

# The options of a QEMU process: { name => { value => ... } }, undef when
# the process is no QEMU.
sub parse_cmdline {
    my ($pid) = @_;
    open(my $fh, '<', "/proc/$pid/cmdline") or return undef;
    my $line = <$fh>;
    close($fh);
    return undef if !$line;
    my @param = split(/\0/, $line);
    my $cmd = $param[0];
    return undef if !$cmd || ($cmd !~ m|kvm$| && $cmd !~ m@(?:^|/)qemu-[^/]+$@);
    my ($res, $pending) = ({}, undef);
    for my $p (@param) {
        next if !$p;
        if ($p =~ m/^--?(.*)$/) {
            $res->{$pending} = {} if $pending;
            $pending = $1;
        } elsif ($pending) {
            $res->{$pending} = { value => $p };
            $pending = undef;
        }
    }
    return $res;
}

# The pid of the VM's QEMU if it runs here, else undef.
sub vm_running_locally {
    my ($vmid) = @_;
    my $pidfile = vm_pidfile_name($vmid);
    open(my $fh, '<', $pidfile) or return undef;
    my $line = <$fh>;
    close($fh);
    return undef if !defined($line) || $line !~ m/^(\d+)$/;
    my $pid = $1;
    my $cmdline = parse_cmdline($pid) or return undef;
    return undef if ($cmdline->{pidfile}->{value} // '') ne $pidfile;
    # a zombie does not run
    open(my $st, '<', "/proc/$pid/stat") or return undef;
    my $stat = <$st>;
    close($st);
    return undef if !$stat || $stat =~ m/^\d+ \(.*\) Z /s;
    return $pid;
}

1;
