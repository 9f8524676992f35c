# Test-only clean-room stand-in for Proxmox's PVE::JSONSchema (pve-common).
# It implements the small part of the documented contract that storage plugins
# and the other stand-ins use: standard options, named formats, a few format
# checkers, parse_boolean, parse_property_string and a reduced check_prop.
# It is written from the documented behaviour, it is not Proxmox's code.
package PVE::JSONSchema;

use strict;
use warnings;

use Exporter 'import';

our @EXPORT_OK = qw(get_standard_option register_standard_option parse_property_string json_bool);

my %standard_option;
my %format;

# ---------------------------------------------------------------------------
# standard options

sub register_standard_option {
    my ($name, $schema) = @_;
    die "standard option '$name' already registered\n" if exists $standard_option{$name};
    $standard_option{$name} = $schema;
    return;
}

# Returns a new hash: the keys of $overrides win, the registered schema fills in
# the rest. The registered schema itself is never modified.
sub get_standard_option {
    my ($name, $overrides) = @_;
    my $schema = $standard_option{$name} or die "no such standard option '$name'\n";
    my $res = { %{ $overrides // {} } };
    for my $k (keys %$schema) {
        $res->{$k} = $schema->{$k} if !exists $res->{$k};
    }
    return $res;
}

# ---------------------------------------------------------------------------
# formats

sub register_format {
    my ($name, $checker) = @_;
    die "JSON schema format '$name' already registered\n" if exists $format{$name};
    $format{$name} = $checker;
    return;
}

sub get_format { return $format{ $_[0] } }

sub pve_verify_configid {
    my ($id, $noerr) = @_;
    # a letter, then at least one more letter, digit, '_' or '-'
    return $id if defined($id) && $id =~ m/^[A-Za-z][A-Za-z0-9_-]+$/;
    return undef if $noerr;
    die "invalid configuration ID '" . ($id // '') . "'\n";
}

sub parse_storage_id {
    my ($id, $noerr) = @_;
    # starts with a letter, ends with a letter or digit, '-', '_' and '.' inside
    return $id if defined($id) && $id =~ m/^[A-Za-z][A-Za-z0-9._-]*[A-Za-z0-9]$/;
    return undef if $noerr;
    die "storage ID '" . ($id // '') . "' contains illegal characters\n";
}

sub pve_verify_vmid {
    my ($vmid, $noerr) = @_;
    return $vmid if defined($vmid) && $vmid =~ m/^[1-9][0-9]{2,8}$/;
    return undef if $noerr;
    die "value does not look like a valid VM ID\n";
}

sub pve_verify_node_name {
    my ($node, $noerr) = @_;
    return $node if defined($node) && $node =~ m/^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/;
    return undef if $noerr;
    die "value does not look like a valid node name\n";
}

register_format('string', sub { return $_[0] });
register_format('pve-configid', \&pve_verify_configid);
register_format('pve-storage-id', \&parse_storage_id);
register_format('pve-vmid', \&pve_verify_vmid);
register_format('pve-node', \&pve_verify_node_name);

# ---------------------------------------------------------------------------
# standard options every storage plugin expects to find

register_standard_option('pve-storage-id', {
    description => "The storage identifier.",
    type => 'string',
    format => 'pve-storage-id',
});
register_standard_option('pve-node', {
    description => "The cluster node name.",
    type => 'string',
    format => 'pve-node',
});
register_standard_option('pve-node-list', {
    description => "List of cluster node names.",
    type => 'string',
    format => 'pve-node-list',
});
register_standard_option('pve-vmid', {
    description => "The (unique) ID of the VM.",
    type => 'integer',
    format => 'pve-vmid',
    minimum => 100,
});
register_standard_option('pve-config-digest', {
    description => 'Prevent changes if the configuration file has a different SHA1 digest.',
    type => 'string',
    optional => 1,
    maxLength => 40,
});
register_standard_option('pve-snapshot-name', {
    description => "The name of the snapshot.",
    type => 'string',
    format => 'pve-configid',
    maxLength => 40,
});
register_standard_option('bwlimit', {
    description => "Set I/O bandwidth limits for various operations (in KiB/s).",
    optional => 1,
    type => 'string',
    format => 'string',
});

# ---------------------------------------------------------------------------
# small helpers

sub parse_boolean {
    my ($v) = @_;
    return undef if !defined($v);
    return 1 if $v =~ m/^(?:1|on|yes|true)$/i;
    return 0 if $v =~ m/^(?:0|off|no|false)$/i;
    return undef;
}

# JSON booleans without requiring JSON.pm at load time.
sub json_bool {
    my ($v) = @_;
    require JSON::PP;
    return $v ? JSON::PP::true() : JSON::PP::false();
}

# Parses "key=value,key2=value2" (and one bare default key) against a format
# hash (or a registered hash format).
sub parse_property_string {
    my ($fmt, $data, $path, $additional) = @_;

    if (!ref($fmt)) {
        my $named = $format{$fmt};
        die "unknown format: $fmt\n" if !$named || ref($named) ne 'HASH';
        $fmt = $named;
    }
    die "unexpected format value of type " . ref($fmt) . "\n" if ref($fmt) ne 'HASH';

    my ($default_key) = grep { $fmt->{$_}->{default_key} } keys %$fmt;
    my $res = {};
    for my $part (split(/,/, $data // '')) {
        next if $part =~ m/^\s*$/;
        my ($k, $v);
        if ($part =~ m/^([^=]+)=(.*)$/) {
            ($k, $v) = ($1, $2);
        } elsif (defined($default_key)) {
            ($k, $v) = ($default_key, $part);
        } else {
            die "value without key, but schema does not define a default key\n";
        }
        die "duplicate key in comma-separated list property: $k\n" if exists $res->{$k};
        my $schema = $fmt->{$k};
        if (!$schema) {
            die "invalid key in comma-separated list property: $k\n" if !$additional;
            $res->{$k} = $v;
            next;
        }
        if (($schema->{type} // '') eq 'boolean') {
            my $b = parse_boolean($v);
            $v = $b if defined($b);
        }
        $res->{$k} = $v;
    }
    for my $k (sort keys %$fmt) {
        next if $fmt->{$k}->{optional} || exists $res->{$k};
        die "missing key '$k' in property string\n";
    }
    return $res;
}

sub print_property_string {
    my ($data) = @_;
    return join(',', map { "$_=$data->{$_}" } sort keys %$data);
}

# Runs the checker of a named format (also "<name>-list" and "<name>-opt").
sub check_format {
    my ($fmt, $value) = @_;
    return if !defined($fmt);
    return parse_property_string($fmt, $value) if ref($fmt) eq 'HASH';
    my ($name, $kind) = ($fmt, '');
    if ($fmt =~ m/^(.+)-(a?list|opt)$/ && !$format{$fmt}) {
        ($name, $kind) = ($1, $2);
    }
    my $checker = $format{$name};
    return if !$checker; # unknown formats are not checked by the stand-in
    if (ref($checker) eq 'HASH') {
        return parse_property_string($checker, $value);
    }
    if ($kind eq 'opt') {
        return if !length($value // '');
        return $checker->($value);
    }
    if ($kind) {
        $checker->($_) for grep { length } split(/[,;\s]+/, $value // '');
        return;
    }
    return $checker->($value);
}

# Reduced schema check of one value. Errors are stored in $errors under $path
# (or '_root' when $path is empty), like the real function.
sub check_prop {
    my ($value, $schema, $path, $errors) = @_;

    my $key = (defined($path) && length($path)) ? $path : '_root';
    my $fail = sub { $errors->{$key} = $_[0]; return };

    return if !$schema;
    my $type = $schema->{type} // 'string';

    if (!defined($value)) {
        return $fail->("property is missing and it is not optional") if !$schema->{optional};
        return;
    }
    if ($type eq 'boolean') {
        return $fail->("type check ('boolean') failed - got '$value'")
            if !defined(parse_boolean($value));
    } elsif ($type eq 'integer') {
        return $fail->("type check ('integer') failed - got '$value'") if $value !~ m/^-?\d+$/;
    } elsif ($type eq 'number') {
        return $fail->("type check ('number') failed - got '$value'")
            if $value !~ m/^-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$/;
    }
    if ($type eq 'integer' || $type eq 'number') {
        return $fail->("value must have a minimum value of $schema->{minimum}")
            if defined($schema->{minimum}) && $value < $schema->{minimum};
        return $fail->("value must have a maximum value of $schema->{maximum}")
            if defined($schema->{maximum}) && $value > $schema->{maximum};
    }
    if ($type eq 'string') {
        return $fail->("value may only be $schema->{maxLength} characters long")
            if defined($schema->{maxLength}) && length($value) > $schema->{maxLength};
        return $fail->("value must be at least $schema->{minLength} characters long")
            if defined($schema->{minLength}) && length($value) < $schema->{minLength};
        if (defined(my $re = $schema->{pattern})) {
            return $fail->("value does not match the regex pattern") if $value !~ m/^(?:$re)$/;
        }
    }
    if (my $enum = $schema->{enum}) {
        return $fail->("value '$value' does not have a value in the enumeration '"
            . join(', ', @$enum) . "'")
            if !grep { $_ eq $value } @$enum;
    }
    if (defined($schema->{format})) {
        eval { check_format($schema->{format}, $value) };
        if (my $err = $@) {
            chomp $err;
            return $fail->($err);
        }
    }
    return;
}

1;
