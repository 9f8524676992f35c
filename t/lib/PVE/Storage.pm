# Test-only clean-room stand-in for Proxmox's PVE::Storage (pve-storage).
# Provides the storage API version constants of Proxmox VE 9.1 (APIVER 15,
# APIAGE 6), the file-name regexes the base plugin's parse_volname refers to,
# and check_custom_plugin(), which applies the same acceptance rules the real
# module applies to PVE/Storage/Custom/*.pm plugins. It does not load or
# register any plugin by itself. Written from the documented contract; this is
# not Proxmox's code.
package PVE::Storage;

use strict;
use warnings;

use constant APIVER => 15;
use constant APIAGE => 6;

# Volume name pieces used by PVE::Storage::Plugin::parse_volname. The trailing
# digit tells how many capture groups the regex has.
our $ISO_EXT_RE_0 = qr/\.(?:iso|img)/i;
our $VZTMPL_EXT_RE_1 = qr/\.tar\.(gz|xz|zst|bz2)/i;
our $BACKUP_EXT_RE_2 = qr/\.(tgz|(?:tar|vma)(?:\.(gz|lzo|zst|bz2))?)/;
our $IMPORT_EXT_RE_1 = qr/\.(ova|ovf|qcow2|raw|vmdk)/;
our $SAFE_CHAR_CLASS_RE = qr/[a-zA-Z0-9\-\.\+\=\_]/;
our $SAFE_CHAR_WITH_WHITESPACE_CLASS_RE = qr/[ a-zA-Z0-9\-\.\+\=\_]/;
our $OVA_CONTENT_RE_1 = qr/${SAFE_CHAR_WITH_WHITESPACE_CLASS_RE}+\.(qcow2|raw|vmdk)/;

# The same acceptance test PVE applies to a third-party plugin module before
# registering it: it must be a PVE::Storage::Plugin, provide api(), and its
# api() must lie in [APIVER - APIAGE, APIVER]. Dies with the message PVE would
# log (PVE itself only warns "Error loading storage plugin ..." and skips the
# plugin). On success the plugin is registered; a warning is printed when its
# API version is older than APIVER. Returns the plugin's api() value.
sub check_custom_plugin {
    my ($modname) = @_;

    require PVE::Storage::Plugin;

    die "not derived from PVE::Storage::Plugin\n" if !$modname->isa('PVE::Storage::Plugin');
    die "does not provide an api() method\n" if !$modname->can('api');

    my $version = $modname->api();
    my $max = APIVER;
    my $min = APIVER - APIAGE;
    die "implements an API version newer than current ($version > $max)\n" if $version > $max;
    die "API version too old, please update the plugin ($version < $min)\n" if $version < $min;

    $modname->register();

    warn "Plugin \"$modname\" is implementing an older storage API, an upgrade is recommended\n"
        if $version != $max;

    return $version;
}

# Name of the marker file that protects a backup archive from removal
# (the Dir plugin's 'protected' volume attribute).
sub protection_file_path {
    my ($path) = @_;
    return "$path.protected";
}

1;
