package QcLVM;

# A real LVM volume group for tests, on loop devices over scratch files,
# with loop devices standing in for device-mapper (this kernel has none,
# so lvm2 runs with activation disabled). Device-mapper maps an active
# linear LV onto its extents of the PV; here each active LV is a loop
# device over the same bytes of the PV's file (offset pe_start + first
# extent * extent size, length the LV's size), at /dev/VG/LV as a symlink.
# The mapping is refreshed after every lvm command the code under test
# runs through PVE::Tools::run_command (activation by lvcreate/lvchange/
# vgchange, renames, resizes, removals). Several PVs, so that each LV lies
# on a PV of its own and an lvextend stays one segment (a loop device maps
# one range; an LV in two segments is reported, not emulated): before an
# lvcreate only empty PVs are allocatable, before an lvextend only the
# LV's own (pvchange -x), as an administrator could arrange it. The group,
# the devices and /dev/VG go away at the end of the test, also on failure.

use strict;
use warnings;

use Exporter 'import';
use File::Path qw(make_path remove_tree);
use PVE::Tools;
use QcBlock;
use QcTest qw(run_cmd);
use Time::HiRes ();

our @EXPORT = qw(lvm_usable lvm_setup lvm_storage lvm_run lvm_lvs lvm_refresh lvm_save lvm_restore);

# Seconds spent standing in for device-mapper (lvm_before, lvm_refresh
# after the commands of the code under test): bench/lvm.pl reports them.
our $standin_seconds = 0;
sub timed {
    my ($code) = @_;
    return sub {
        my $t = Time::HiRes::time();
        my $err = eval { $code->(@_); 1 } ? undef : $@;
        $standin_seconds += Time::HiRes::time() - $t;
        die $err if $err;
        return;
    };
}

my %vg; # name, dir, pvs => [{dev, file}], pe_start, extent, active => {uuid => 1}, map => {uuid => {dev, file, offset, size, name}}

sub lvm_usable {
    my $why = loop_usable();
    return $why if $why;
    my ($rc) = run_cmd('lvm', 'version');
    return 'needs lvm2' if $rc != 0;
    return undef;
}

# lvm command with the test configuration; dies on failure; returns stdout
sub lvm_run {
    my (@cmd) = @_;
    my ($rc, $o, $e) = run_cmd(@cmd);
    die "@cmd failed ($rc): $e" if $rc != 0;
    return $o;
}

# { name => { uuid, size, pv, first, last, tags } } of the test group
sub lvm_lvs {
    my $out = lvm_run('lvs', '--noheadings', '--separator', '|', '--units', 'b', '--nosuffix', '-o',
        'lv_uuid,lv_name,lv_size,seg_pe_ranges,lv_tags', $vg{name});
    my %lv;
    for my $line (split /\n/, $out) {
        $line =~ s/^\s+|\s+$//g;
        next if $line eq '';
        my ($uuid, $name, $size, $ranges, $tags) = split /\|/, $line, 5;
        # one segment: "/dev/loopN:FIRST-LAST"
        my ($pv, $first, $last) = $ranges =~ m/^(\S+):(\d+)-(\d+)$/
            or die "LV $name has more than one segment ($ranges): a loop device cannot stand in for it\n";
        die "LV $name has more than one segment: a loop device cannot stand in for it\n" if $lv{$name};
        $lv{$name} = { uuid => $uuid, size => $size, pv => $pv, first => $first, last => $last, tags => $tags // '' };
    }
    return \%lv;
}

sub uuid_of {
    my ($lvs, $name) = @_;
    $name =~ s{^/dev/}{};
    $name =~ s{^\Q$vg{name}\E/}{};
    return $lvs->{$name} ? $lvs->{$name}{uuid} : undef;
}

# Which LVs an lvchange/lvcreate/vgchange command activated or deactivated.
sub track_activation {
    my ($cmd, $lvs) = @_;
    return if ref($cmd) ne 'ARRAY';
    my ($prog, @a) = @$cmd;
    $prog =~ s{.*/}{};
    my ($act) = map { /^-a(e|l)?(y|n)$/ ? $2 : () } @a;
    if ($prog eq 'lvcreate') {
        my ($name) = map { $a[$_ + 1] } grep { $a[$_] eq '--name' || $a[$_] eq '-n' } 0 .. $#a;
        my $u = defined $name ? uuid_of($lvs, $name) : undef;
        $vg{active}{$u} = 1 if $u && ($act // 'y') eq 'y';
        return;
    }
    return if !defined $act;
    my @uuids;
    if ($prog eq 'vgchange') {
        @uuids = map { $_->{uuid} } values %$lvs;
    } elsif ($prog eq 'lvchange') {
        my ($i) = grep { $a[$_] eq '--select' } 0 .. $#a;
        if (defined $i) {
            my $out = lvm_run('lvs', '--noheadings', '-o', 'lv_uuid', '--select', $a[$i + 1], $vg{name});
            @uuids = grep { length } map { s/\s+//gr } split /\n/, $out;
        } else {
            @uuids = grep { defined } map { uuid_of($lvs, $_) } grep { !/^-/ } @a;
        }
    }
    for my $u (@uuids) {
        if ($act eq 'y') { $vg{active}{$u} = 1 } else { delete $vg{active}{$u} }
    }
}

# Before a command that allocates extents: one LV per PV (see above).
sub lvm_before {
    my ($cmd) = @_;
    return if !$vg{name} || ref($cmd) ne 'ARRAY';
    my ($prog, @a) = @$cmd;
    $prog =~ s{.*/}{};
    return if $prog !~ /^lv(create|extend|resize)$/;
    my $lvs = $vg{lvs} // lvm_lvs();
    my %used = map { $_->{pv} => 1 } values %$lvs;
    my %allow;
    if ($prog eq 'lvcreate') {
        %allow = map { $_->{dev} => 1 } grep { !$used{ $_->{dev} } } @{ $vg{pvs} };
    } else {
        my ($target) = grep { !/^-/ && m{/} } @a;
        my $lv = $target ? $lvs->{ (split m{/}, $target)[-1] } : undef;
        %allow = ($lv->{pv} => 1) if $lv;
    }
    my %flip;
    for my $pv (@{ $vg{pvs} }) {
        my $want = $allow{ $pv->{dev} } ? 'y' : 'n';
        next if ($vg{allocatable}{ $pv->{dev} } // 'y') eq $want;
        push @{ $flip{$want} }, $pv->{dev};
        $vg{allocatable}{ $pv->{dev} } = $want;
    }
    lvm_run('pvchange', '-q', '-x', $_, @{ $flip{$_} }) for sort keys %flip;
    return;
}

# Make /dev/VG match the active LVs: a loop device over each one's extents.
sub lvm_refresh {
    my ($cmd) = @_;
    return if !$vg{name};
    if (ref $cmd) { # reports, tags and refreshes map nothing new
        my ($prog, @a) = @$cmd;
        return if $prog =~ m{(^|/)(lvs|vgs|pvs)$};
        return if $prog =~ m{(^|/)(lvchange|vgchange)$} && !grep { /^-a/ } @a;
        if ($prog =~ m{(^|/)lvrename$} && @a == 3 && $a[0] eq $vg{name} && $vg{lvs} && $vg{lvs}{ $a[1] }) {
            # a rename moves no extent: device-mapper renames the device
            my $lv = $vg{lvs}{ $a[2] } = delete $vg{lvs}{ $a[1] };
            my $m = $vg{map}{ $lv->{uuid} } or return;
            unlink $m->{link};
            $m->{name} = $a[2];
            $m->{link} = "/dev/$vg{name}/$a[2]";
            symlink($m->{dev}, $m->{link}) or die "symlink $m->{link}: $!";
            return;
        }
    }
    my $lvs = $vg{lvs} = lvm_lvs();
    track_activation($cmd, $lvs) if $cmd;
    my %by_uuid = map { $lvs->{$_}{uuid} => { %{ $lvs->{$_} }, name => $_ } } keys %$lvs;
    for my $u (keys %{ $vg{map} }) {
        my $m = $vg{map}{$u};
        my $want = $vg{active}{$u} ? $by_uuid{$u} : undef;
        my $pv = $want ? $vg{pv_file}{ $want->{pv} } : undef;
        my $same = $want && $pv eq $m->{file} && $want->{size} == $m->{size}
            && $vg{pe_start}{ $want->{pv} } + $want->{first} * $vg{extent} == $m->{offset};
        if (!$same) {
            unlink $m->{link};
            loop_detach($m->{dev});
            delete $vg{map}{$u};
        } elsif ($want->{name} ne $m->{name}) {
            unlink $m->{link};
            $m->{name} = $want->{name};
            $m->{link} = "/dev/$vg{name}/$want->{name}";
            symlink($m->{dev}, $m->{link}) or die "symlink $m->{link}: $!";
        }
    }
    for my $u (keys %{ $vg{active} }) {
        my $lv = $by_uuid{$u};
        if (!$lv) { delete $vg{active}{$u}; next }
        next if $vg{map}{$u};
        my $file = $vg{pv_file}{ $lv->{pv} } or die "LV $lv->{name} on an unknown PV $lv->{pv}\n";
        my $offset = $vg{pe_start}{ $lv->{pv} } + $lv->{first} * $vg{extent};
        my $dev = loop_attach($file, offset => $offset, size => $lv->{size});
        my $link = "/dev/$vg{name}/$lv->{name}";
        unlink $link;
        symlink($dev, $link) or die "symlink $link: $!";
        $vg{map}{$u} = { dev => $dev, file => $file, offset => $offset, size => $lv->{size}, name => $lv->{name}, link => $link };
    }
    return;
}

# A volume group of $o{pvs} PVs of $o{pv_size} bytes (sparse files in
# $o{dir}), extent size $o{extent} (default 4M, as vgcreate). Returns its name.
sub lvm_setup {
    my (%o) = @_;
    my $name = $o{name} // "qctest$$";
    my $dir = $o{dir} or die 'lvm_setup: dir';
    make_path("$dir/lvm");
    my @pvs;
    for my $i (1 .. ($o{pvs} // 8)) {
        my $file = "$dir/pv$i.img";
        open(my $fh, '>', $file) or die "$file: $!";
        truncate($fh, $o{pv_size}) or die "$file: $!";
        close $fh;
        push @pvs, { file => $file, dev => loop_attach($file) };
    }
    my $accept = join(', ', map { "\"a|^$_->{dev}\$|\"" } @pvs);
    open(my $c, '>', "$dir/lvm/lvm.conf") or die;
    print $c "global {\n    activation = 0\n}\n"
        . "devices {\n    obtain_device_list_from_udev = 0\n    use_devicesfile = 0\n    global_filter = [ $accept, \"r|.*|\" ]\n}\n"
        . "backup {\n    backup = 0\n    archive = 0\n}\n";
    close $c;
    $ENV{LVM_SYSTEM_DIR} = "$dir/lvm";
    $ENV{LVM_SUPPRESS_FD_WARNINGS} = 1;
    # the metadata on one PV only: every lvm command reads and writes it once, not on each PV
    lvm_run('pvcreate', '-q', '--metadatasize', '250k', $pvs[0]{dev});
    lvm_run('pvcreate', '-q', '--metadatacopies', '0', map { $_->{dev} } @pvs[1 .. $#pvs]) if @pvs > 1;
    lvm_run('vgcreate', '-q', ($o{extent} ? ('-s', $o{extent}) : ()), $name, map { $_->{dev} } @pvs);
    %vg = (name => $name, dir => $dir, pvs => \@pvs, active => {}, map => {},
        pv_file => { map { $_->{dev} => $_->{file} } @pvs });
    my $pvs = lvm_run('pvs', '--noheadings', '--units', 'b', '--nosuffix', '-o', 'pv_name,pe_start', map { $_->{dev} } @pvs);
    my %start = map { (split)[0, 1] } grep { /\S/ } split /\n/, $pvs;
    $vg{pe_start} = \%start;
    ($vg{extent}) = lvm_run('vgs', '--noheadings', '--units', 'b', '--nosuffix', '-o', 'vg_extent_size', $name) =~ /(\d+)/;
    remove_tree("/dev/$name");
    make_path("/dev/$name");
    push @PVE::Tools::BEFORE_RUN_COMMAND, timed(\&lvm_before), \&quiet_begin;
    unshift @PVE::Tools::AFTER_RUN_COMMAND, \&quiet_end;
    push @PVE::Tools::AFTER_RUN_COMMAND, timed(\&lvm_refresh);
    return $name;
}

# lvm2 warns on every command here ("Activation disabled": no kernel
# device-mapper; "metadata update is NOT backed up": backup = 0) and no
# lvm.conf setting silences it: the stderr of the lvm commands the code
# under test runs goes to QcTest's log, shown only if the test fails.
sub quiet_begin {
    my ($cmd) = @_;
    QcTest::stderr_to_log() if $vg{name} && ref($cmd) eq 'ARRAY' && $cmd->[0] =~ m{(^|/)(lvm|lv\w+|vg\w+|pv\w+)$};
    return;
}

sub quiet_end { QcTest::stderr_back(); return }

# Save the whole group (its PV files: metadata and every LV's data) as $tag.
sub lvm_save {
    my ($tag) = @_;
    for my $pv (@{ $vg{pvs} }) {
        my ($rc, undef, $e) = run_cmd('cp', '--sparse=always', $pv->{file}, "$pv->{file}.$tag");
        die "saving $pv->{file}: $e" if $rc;
    }
    $vg{saved}{$tag} = { active => { %{ $vg{active} } }, allocatable => { %{ $vg{allocatable} // {} } } };
    return;
}

# Put the group back as saved: LV devices go, the PV files get their old
# bytes (same inodes, under the attached PV devices), LVs come back as active
# as they were.
sub lvm_restore {
    my ($tag) = @_;
    for my $m (values %{ $vg{map} }) {
        unlink $m->{link};
        loop_detach($m->{dev});
    }
    $vg{map} = {};
    for my $pv (@{ $vg{pvs} }) {
        my ($rc, undef, $e) = run_cmd('cp', '--sparse=always', "$pv->{file}.$tag", $pv->{file});
        die "restoring $pv->{file}: $e" if $rc;
        run_cmd('blockdev', '--flushbufs', $pv->{dev});
    }
    my $s = $vg{saved}{$tag};
    $vg{active} = { %{ $s->{active} } };
    $vg{allocatable} = { %{ $s->{allocatable} } };
    delete $vg{lvs};
    lvm_refresh();
    return;
}

# A qcow2lvm storage 'san' (shared, snapshot-as-volume-chain) on a new
# group (lvm_setup's options): the plugin registered as Proxmox registers
# it, next to the directory and LVM plugins. Returns (plugin class, $scfg).
sub lvm_storage {
    my (%o) = @_;
    $ENV{PVE_STANDIN_LOCKDIR} = "$o{dir}/locks";
    require PVE::Storage::DirPlugin;
    require PVE::Storage::LVMPlugin;
    require PVE::Storage::Custom::Qcow2ChainLVMPlugin;
    my $P = 'PVE::Storage::Custom::Qcow2ChainLVMPlugin';
    PVE::Storage::DirPlugin->register(); # defines bwlimit, as in Proxmox
    PVE::Storage::LVMPlugin->register();
    $P->register();
    PVE::Storage::Plugin->init();
    my $vg = lvm_setup(%o);
    return ($P, { type => 'qcow2lvm', vgname => $vg, shared => 1, content => { images => 1 }, 'snapshot-as-volume-chain' => 1 });
}

sub teardown {
    return if !$vg{name};
    for my $m (values %{ $vg{map} }) {
        unlink $m->{link};
        loop_detach($m->{dev});
    }
    remove_tree("/dev/$vg{name}");
    run_cmd('vgremove', '-f', '-q', $vg{name});
    run_cmd('pvremove', '-q', '-y', map { $_->{dev} } @{ $vg{pvs} });
    loop_detach($_->{dev}) for @{ $vg{pvs} };
    %vg = ();
}

END {
    my $rc = $?;
    teardown();
    $? = $rc;
}

1;
