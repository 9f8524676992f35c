package PVE::Storage::Custom::Qcow2ChainLVMPlugin;

# Loaded by Proxmox VE from PVE/Storage/Custom/: registers the storage type
# 'qcow2lvm' implemented by PVE::Storage::Qcow2Chain::LVMPlugin.

use strict;
use warnings;

use base qw(PVE::Storage::Qcow2Chain::LVMPlugin);

our $VERSION = '0.1.0';

1;

__END__

=head1 NAME

PVE::Storage::Custom::Qcow2ChainLVMPlugin - Proxmox VE custom storage plugin registration for qcow2-chain on LVM

=head1 DESCRIPTION

Proxmox VE loads every module in C<PVE/Storage/Custom/> as a custom storage
plugin. This one registers the storage type C<qcow2lvm>: Proxmox's (shared,
thick) LVM storage whose qcow2 volumes take snapshots as volume chains
natively; see L<PVE::Storage::Qcow2Chain::LVMPlugin>:

    pvesm add qcow2lvm san --vgname vg_san --shared 1 --content images --snapshot-as-volume-chain 1

=cut
