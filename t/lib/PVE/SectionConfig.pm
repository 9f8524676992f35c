# Test-only clean-room stand-in for Proxmox's PVE::SectionConfig (pve-common).
# Implements the registration mechanics storage plugins depend on, in the
# "unified" mode PVE::Storage uses (one property list shared by all plugin
# types): register, init (with the "duplicate property" and "undefined
# property" checks), lookup, check_value, check_config (fixed/required
# options) and a simple parse_config. Schema generation (createSchema,
# updateSchema) and write_config are not provided. Written from the documented
# behaviour; this is not Proxmox's code.
package PVE::SectionConfig;

use strict;
use warnings;

use PVE::JSONSchema;

# The base class of a plugin family overrides private() and returns its shared
# data hash: { propertyList => {...}, plugins => {}, plugindata => {}, options => {} }.
sub private {
    die "private() must be overridden by the base plugin class\n";
}

sub type {
    die "type() must be overridden by the plugin class\n";
}

sub properties { return {} }
sub options { return {} }
sub plugindata { return {} }

sub register {
    my ($class) = @_;

    my $type = $class->type();
    my $pdata = $class->private();

    die "duplicate plugin registration (type = $type)" if $pdata->{plugins}->{$type};

    $pdata->{plugindata}->{$type} = $class->plugindata();
    $pdata->{plugins}->{$type} = $class;
    return;
}

# Merges the properties() of every registered plugin into the shared property
# list, then records each plugin's options(). A property defined twice (by two
# plugins, or by a plugin and the base list) is fatal, and so is an option that
# names no known property.
sub init {
    my ($class) = @_;

    my $pdata = $class->private();
    $pdata->{$_} //= {} for qw(options plugins plugindata propertyList);

    my $plugins = $pdata->{plugins};
    my $props = $pdata->{propertyList};

    for my $type (sort keys %$plugins) {
        my $own = $plugins->{$type}->properties();
        for my $p (sort keys %$own) {
            die "duplicate property '$p'" if exists $props->{$p};
            $props->{$p} = { %{ $own->{$p} }, optional => 1 };
        }
    }

    for my $type (sort keys %$plugins) {
        my $opts = $plugins->{$type}->options();
        for my $p (sort keys %$opts) {
            die "undefined property '$p'" if !$props->{$p};
        }
        $pdata->{options}->{$type} = { %$opts };
    }

    $props->{type} = { %{ $props->{type} // {} }, type => 'string', enum => [sort keys %$plugins] };
    return;
}

sub lookup {
    my ($class, $type) = @_;
    my $plugin = $class->private()->{plugins}->{$type};
    die "unknown section type '$type'\n" if !$plugin;
    return $plugin;
}

sub lookup_types {
    my ($class) = @_;
    return [sort keys %{ $class->private()->{plugins} }];
}

sub decode_value {
    my ($class, $type, $key, $value) = @_;
    return $value;
}

sub encode_value {
    my ($class, $type, $key, $value) = @_;
    return $value;
}

# Validates one key/value of a section of type $type against the shared
# property list and the type's options. Numbers and booleans come back as
# numbers.
sub check_value {
    my ($class, $type, $key, $value, $section_id, $skip_schema_check) = @_;

    my $pdata = $class->private();

    return $value if $key eq 'type' && $type eq $value;

    my $opts = $pdata->{options}->{$type} or die "unknown section type '$type'\n";
    die "unexpected property '$key'\n" if !defined($opts->{$key});

    my $schema = $pdata->{propertyList}->{$key} or die "unknown property type\n";
    my $kind = $schema->{type} // 'string';

    $value = 1 if $kind eq 'boolean' && !defined($value);
    die "got undefined value\n" if !defined($value);
    die "property contains a line feed\n" if $value =~ m/[\r\n]/;

    if (!$skip_schema_check) {
        my $errors = {};
        PVE::JSONSchema::check_prop($value, $schema, '', $errors);
        if (%$errors) {
            my ($msg) = values %$errors;
            die "$msg\n";
        }
    }

    if ($kind eq 'boolean') {
        return PVE::JSONSchema::parse_boolean($value) // $value;
    }
    return $value + 0 if $kind eq 'integer' || $kind eq 'number';
    return $value;
}

# check_config($section_id, $config, $create, $skip_schema_check)
# Returns the decoded settings of one section. Changing a 'fixed' option is
# refused unless $create is set; on create every non-optional option of the
# type must be present.
sub check_config {
    my ($class, $section_id, $config, $create, $skip_schema_check) = @_;

    my $type = $class->type();
    my $opts = $class->private()->{options}->{$type} // {};

    my $settings = { type => $type };
    for my $k (sort keys %$config) {
        next if $k eq 'type';
        my $value = $config->{$k};
        die "can't change value of fixed parameter '$k'\n"
            if !$create && $opts->{$k} && $opts->{$k}->{fixed};
        die "got undefined value for option '$k'\n" if !defined($value);
        my $checked = $class->check_value($type, $k, $value, $section_id, $skip_schema_check);
        $settings->{$k} = $class->decode_value($type, $k, $checked);
    }

    if ($create) {
        for my $k (sort keys %$opts) {
            next if $opts->{$k}->{optional};
            die "missing value for required option '$k'\n" if !defined($config->{$k});
        }
    }

    return $settings;
}

sub parse_section_header {
    my ($class, $line) = @_;
    if ($line =~ m/^(\S+):\s*(\S+)\s*$/) {
        return ($1, $2, undef, {});
    }
    return;
}

# Parses the "type: id" + indented "key value" section format. Problems are
# warned about and the offending line or section is skipped, as in the real
# parser.
sub parse_config {
    my ($class, $filename, $raw) = @_;

    my $pdata = $class->private();
    my $ids = {};
    my $order = {};
    my $pri = 1;

    my @lines = split(/\n/, $raw // '');
    my $lineno = 0;
    my $next = sub {
        while (@lines) {
            my $l = shift @lines;
            $lineno++;
            return $l if $l !~ m/^\s*(?:#|$)/;
            return undef if $l =~ m/^\s*$/; # a blank line ends a section
        }
        return undef;
    };

    while (@lines) {
        my $line = $next->() // next;
        my ($type, $id, $errmsg, $config) = $class->parse_section_header($line);
        if (!$config) {
            warn "file $filename line $lineno - ignore config line: $line\n";
            next;
        }
        my $plugin = $type ? $pdata->{plugins}->{$type} : undef;
        my $skip = 0;
        if ($errmsg) {
            chomp $errmsg;
            warn "file $filename line $lineno (skip section '$id'): $errmsg\n";
            $skip = 1;
        } elsif (!$plugin) {
            warn "file $filename line $lineno (skip section '$id'): unsupported type '$type'\n";
            $skip = 1;
        }
        while (defined(my $l = $next->())) {
            next if $skip;
            if ($l =~ m/^\s+(\S+)(?:\s+(.*\S))?\s*$/) {
                my ($k, $v) = ($1, $2);
                eval {
                    die "duplicate attribute\n" if exists $config->{$k};
                    $config->{$k} = $plugin->check_value($type, $k, $v, $id);
                };
                warn "file $filename line $lineno (section '$id') - unable to parse value of '$k': $@"
                    if $@;
            } else {
                warn "file $filename line $lineno (section '$id') - ignore config line: $l\n";
            }
        }
        next if $skip;
        $config->{type} = $type;
        my $res = eval { $plugin->check_config($id, $config, 1, 1) };
        if (my $err = $@) {
            warn "file $filename (skip section '$id'): $err";
            next;
        }
        $ids->{$id} = $res;
        $order->{$id} = $pri++;
    }

    return { ids => $ids, order => $order };
}

1;
