# The plugin with the volume-chain switch off: qcow2 volumes take internal
# snapshots in-process, with the results of Proxmox's directory storage,
# which runs qemu-img snapshot -c/-a/-d. The same steps run on two twin
# volumes: ours through the plugin (no qemu-img process may be recorded),
# the reference through the stand-in base class running the real qemu-img
# (PVE_STANDIN_RUN_QEMU_IMG=1). Both must read the same, list the same
# snapshots, and stay clean; the converted volumes (to a volume chain and
# back) keep every snapshot's data.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

BEGIN { $ENV{PVE_STANDIN_RUN_QEMU_IMG} = 1 }

use QcTest;
use Test::More;

use PVE::Storage;
use PVE::Storage::DirPlugin;
use PVE::Storage::Custom::Qcow2ChainPlugin;
use PVE::Storage::Qcow2Chain;

my $P = 'PVE::Storage::Custom::Qcow2ChainPlugin';
my $D = 'PVE::Storage::DirPlugin';
PVE::Storage::DirPlugin->register();
PVE::Storage::check_custom_plugin($P);
PVE::Storage::Plugin->init();

my $dir = scratch();
my $sid = 'st';
my %scfg = map { ($_ => { type => 'qcow2chain', path => "$dir/$_", content => { images => 1 } }) } qw(ours ref);
my $vol = '100/vm-100-disk-0.qcow2';
my %path;
for my $k (qw(ours ref)) {
    mkdir "$dir/$k";
    mkdir "$dir/$k/images";
    mkdir "$dir/$k/images/100";
    $path{$k} = "$dir/$k/images/100/vm-100-disk-0.qcow2";
    qimg('create', '-q', '-f', 'qcow2', $path{$k}, '16M');
}

sub both {
    my ($method, @args) = @_;
    @PVE::Storage::Plugin::QEMU_IMG_LOG = ();
    my @o = eval { $P->$method($scfg{ours}, $sid, $vol, @args) };
    my $e = $@;
    is_deeply(\@PVE::Storage::Plugin::QEMU_IMG_LOG, [], "$method @args: no qemu-img process") or diag(explain(\@PVE::Storage::Plugin::QEMU_IMG_LOG));
    # qemu-img's own message for the failures provoked below stays off the output
    my ($r, $re) = quietly(sub { my @r = eval { $D->$method($scfg{ref}, $sid, $vol, @args) }; return (\@r, $@) });
    return (\@o, $e, $r, $re);
}

sub write_both { qio($path{$_}, @_) for qw(ours ref) }

sub view {
    my ($f, $snap) = @_;
    unlink "$dir/v.raw";
    qimg('convert', '-O', 'raw', (defined $snap ? ('-l', "snapshot.name=$snap") : ()), $f, "$dir/v.raw");
    return slurp("$dir/v.raw");
}

sub same {
    my ($what) = @_;
    ok(view($path{ours}) eq view($path{ref}), "$what: the live disks read the same");
    my $ours = $P->volume_snapshot_info($scfg{ours}, $sid, $vol);
    my $info = qimg_json('info', '--output=json', $path{ref});
    my %ref = map { ($_->{name} => { timestamp => $_->{'date-sec'} }) } @{ $info->{snapshots} // [] };
    is_deeply([sort keys %$ours], [sort keys %ref], "$what: volume_snapshot_info lists what qemu-img lists");
    ok(!grep({ abs($ours->{$_}{timestamp} - $ref{$_}{timestamp}) > 60 } keys %$ours), "$what: timestamps when taken");
    for my $s (sort keys %ref) {
        ok(view($path{ours}, $s) eq view($path{ref}, $s), "$what: snapshot $s reads the same");
    }
    for my $k (qw(ours ref)) {
        my ($rc, $o, $e) = qimg_ok('check', $path{$k});
        is($rc, 0, "$what: $k clean") or diag("$o$e");
    }
}

write_both('write -q -P 0x11 0 4M');
my ($o, $e, $r, $re) = both('volume_snapshot', 'before');
is($e, '', 'volume_snapshot') or diag($e);
is_deeply($o, $r, 'volume_snapshot returns what the directory storage returns');
write_both('write -q -P 0x22 1M 1M');
both('volume_snapshot', 'after');
write_both('write -q -P 0x33 3M 64k');
same('two snapshots');
is($P->volume_rollback_is_possible($scfg{ours}, $sid, $vol, 'before'), 1, 'rollback to any snapshot is possible (as the directory storage)');
($o, $e, $r, $re) = both('volume_snapshot_rollback', 'before');
is($e, '', 'volume_snapshot_rollback') or diag($e);
is_deeply($o, $r, '.. same return');
same('after rollback');
($o, $e, $r, $re) = both('volume_snapshot_delete', 'after', 1);
is_deeply([$o, $e], [[1], ''], 'delete with a running VM: 1, nothing done (QEMU deletes it)');
is_deeply($o, $r, '.. as the directory storage');
same('running delete changed nothing');
($o, $e, $r, $re) = both('volume_snapshot_delete', 'after');
is($e, '', 'volume_snapshot_delete') or diag($e);
is_deeply($o, $r, '.. same return');
same('after delete');
($o, $e) = both('volume_snapshot_rollback', 'nope');
like($e, qr/^'.*': snapshot 'nope' does not exist\n\z/, 'rollback to a missing snapshot: one line');
($o, $e) = both('volume_snapshot', 'before');
like($e, qr/snapshot 'before' already exists\n\z/, 'an existing name is refused (qemu-img would add a second one)');

# raw volumes keep the directory storage's answer
{
    my $raw = '100/vm-100-disk-1.raw';
    eval { $P->volume_snapshot($scfg{ours}, $sid, $raw, 'x') };
    is($@, "can't snapshot this image format\n", 'raw: the directory storage\'s message');
}

# ---- an administrator's way onto a chain storage and back ----
{
    my $f = $path{ours};
    both('volume_snapshot', 'second');
    my %v = (current => view($f), before => view($f, 'before'), second => view($f, 'second'));
    PVE::Storage::Qcow2Chain::volume_to_external($f);
    my $chain = { %{ $scfg{ours} }, 'external-snapshots' => 1 };
    my $si = $P->volume_snapshot_info($chain, $sid, $vol);
    is_deeply([sort keys %$si], [qw(before current second)], 'to-external: the chain storage lists the snapshots');
    is($si->{second}{parent}, 'before', '.. in the order they were taken');
    ok(view(scalar($P->filesystem_path($chain, $vol, $_))) eq $v{$_}, "to-external: $_ reads as before") for qw(before second current);
    is_deeply(PVE::Storage::Qcow2Chain::internal_snapshot_list($f), [], '.. no internal snapshots left');
    $P->volume_snapshot_rollback($chain, $sid, $vol, 'before');
    ok(view($f) eq $v{before}, 'the chain storage rolls back to a converted snapshot');
    PVE::Storage::Qcow2Chain::volume_to_internal($f);
    is_deeply([sort keys %{ $P->volume_snapshot_info($scfg{ours}, $sid, $vol) }], [qw(before second)],
        'to-internal: internal snapshots again');
    ok(view($f, $_) eq $v{$_}, "to-internal: $_ reads as before") for qw(before second);
    ok(view($f) eq $v{before}, 'to-internal: the live disk keeps its view');
    ok(!glob("$dir/ours/images/100/snap-*"), '.. and the snapshot files are gone');
    my ($rc) = qimg_ok('check', $f);
    is($rc, 0, '.. clean');
}

done_testing();
