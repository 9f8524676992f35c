package PVE::Storage::Custom::Qcow2ChainPlugin;

# Loaded by Proxmox VE from PVE/Storage/Custom/: registers the storage type
# 'qcow2chain' implemented by PVE::Storage::Qcow2Chain::Plugin.

use strict;
use warnings;

use base qw(PVE::Storage::Qcow2Chain::Plugin);

our $VERSION = '0.1.0';

1;

__END__

=head1 NAME

PVE::Storage::Custom::Qcow2ChainPlugin - Proxmox VE custom storage plugin registration for qcow2-chain

=head1 DESCRIPTION

Proxmox VE loads every module in C<PVE/Storage/Custom/> as a custom storage
plugin. This one registers the storage type C<qcow2chain>, a directory
storage whose qcow2 volumes take external snapshots natively; see
L<PVE::Storage::Qcow2Chain::Plugin> for everything it does and
L<qcow2-chain(1)> for how to enable it:

    pvesm add qcow2chain NAME --path /srv/vmdata --content images --snapshot-as-volume-chain 1

=cut
