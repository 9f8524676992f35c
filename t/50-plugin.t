# The Proxmox storage plugin over clean-room stand-ins of PVE's base modules
# (t/lib/PVE): registration, every method in both option states, Proxmox's
# signatures, return shapes and messages; images checked with qemu-img.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use QcTest;
use Test::More;

use PVE::Storage;
use PVE::Storage::DirPlugin;
use PVE::Storage::Custom::Qcow2ChainPlugin;
use PVE::Storage::Qcow2Chain;

my $P = 'PVE::Storage::Custom::Qcow2ChainPlugin';

# ---- registration ---------------------------------------------------------
PVE::Storage::DirPlugin->register();
is(PVE::Storage::check_custom_plugin($P), 15, 'accepted as a custom plugin (api 15)');
PVE::Storage::Plugin->init();
is($P->type, 'qcow2chain', 'type');
ok(!exists $P->properties->{'snapshot-as-volume-chain'}, 'PVE 9: the base property is not declared again');
ok($P->properties->{'external-snapshots'}, 'external-snapshots is declared');
is_deeply($P->options->{'external-snapshots'}, { optional => 1, fixed => 1 }, 'external-snapshots: fixed at creation');
is_deeply($P->options->{'snapshot-as-volume-chain'}, { optional => 1, fixed => 1 }, 'snapshot-as-volume-chain: fixed');
eval { PVE::SectionConfig::check_config($P, 'st', { 'external-snapshots' => 1 }, 0, 1) };
like("$@", qr/can't change value of fixed parameter 'external-snapshots'/, 'the switch cannot be changed later');

# PVE 8 (no base property): registration must still work, declaring it ourselves
{
    my ($rc, $out, $err) = run_cmd($^X, "-I$FindBin::Bin/lib", "-I$FindBin::Bin/../blib/lib", "-I$FindBin::Bin/../blib/arch",
        '-e', 'use PVE::Storage; use PVE::Storage::DirPlugin; use PVE::Storage::Custom::Qcow2ChainPlugin;'
        . ' PVE::Storage::DirPlugin->register; PVE::Storage::check_custom_plugin("PVE::Storage::Custom::Qcow2ChainPlugin");'
        . ' PVE::Storage::Plugin->init; print exists(PVE::Storage::Custom::Qcow2ChainPlugin->properties->{"snapshot-as-volume-chain"}) ? "declared\n" : "absent\n"');
    local $ENV{PVE_STANDIN_PVE8};
    is($rc, 0, 'loads on PVE 9 stand-ins') or diag($err);
    $ENV{PVE_STANDIN_PVE8} = 1;
    ($rc, $out, $err) = run_cmd($^X, "-I$FindBin::Bin/lib", "-I$FindBin::Bin/../blib/lib", "-I$FindBin::Bin/../blib/arch",
        '-e', 'use PVE::Storage; use PVE::Storage::DirPlugin; use PVE::Storage::Custom::Qcow2ChainPlugin;'
        . ' PVE::Storage::DirPlugin->register; PVE::Storage::check_custom_plugin("PVE::Storage::Custom::Qcow2ChainPlugin");'
        . ' PVE::Storage::Plugin->init; print exists(PVE::Storage::Custom::Qcow2ChainPlugin->properties->{"snapshot-as-volume-chain"}) ? "declared\n" : "absent\n"');
    is($rc, 0, 'loads on PVE 8 stand-ins (no duplicate property)') or diag($err);
    is($out, "declared\n", 'PVE 8: the plugin declares snapshot-as-volume-chain itself');
}

# ---- a storage in a scratch directory --------------------------------------
my $dir = scratch();
my $sid = 'st';

sub scfg { return { type => 'qcow2chain', path => "$_[0]", content => { images => 1 }, @_[1 .. $#_] } }

for my $switch ('external-snapshots', 'snapshot-as-volume-chain') {
    my $root = "$dir/$switch";
    mkdir $root;
    my $scfg = scfg($root, $switch => 1);
    my $t = "[$switch]";

    my $vol = $P->alloc_image($sid, $scfg, 100, 'qcow2', undef, 64 * 1024);
    is($vol, '100/vm-100-disk-0.qcow2', "$t alloc_image names the volume");
    my $path = scalar($P->path($scfg, $vol, $sid));
    is($path, "$root/images/100/vm-100-disk-0.qcow2", "$t path");
    my $info = qimg_json('info', '--output=json', $path);
    is($info->{'virtual-size'}, 64 << 20, "$t allocated size");
    is($info->{'cluster-size'}, 65536, "$t base volume: 64k clusters");
    qio($path, 'write -q -P 0x11 0 4M');

    is($P->volume_snapshot($scfg, $sid, $vol, 's1'), undef, "$t volume_snapshot");
    my $s1 = scalar($P->path($scfg, $vol, $sid, 's1'));
    is($s1, "$root/images/100/snap-s1-vm-100-disk-0.qcow2", "$t path of a snapshot");
    ok(-e $s1, "$t snapshot file exists");
    my $ov = qimg_json('info', '--output=json', $path);
    is($ov->{'backing-filename'}, 'snap-s1-vm-100-disk-0.qcow2', "$t new overlay refers to the snapshot by relative name");
    is($ov->{'cluster-size'}, 131072, "$t overlay: 128k clusters");
    ok($ov->{'format-specific'}{data}{'extended-l2'}, "$t overlay: extended L2");
    eval { $P->volume_snapshot($scfg, $sid, $vol, 's1') };
    is("$@", "target snapshot 's1' already exists\n", "$t existing snapshot: Proxmox's message");
    qio($path, 'write -q -P 0x22 1M 1M');
    $P->volume_snapshot($scfg, $sid, $vol, 's2');
    qio($path, 'write -q -P 0x33 2M 1M');

    my $si = $P->volume_snapshot_info($scfg, $sid, $vol);
    is_deeply([sort keys %$si], [qw(current s1 s2)], "$t volume_snapshot_info: current and both snapshots");
    is($si->{current}{order}, 0, "$t current is order 0");
    is($si->{s2}{order}, 1, "$t newest snapshot order 1");
    is($si->{s1}{order}, 2, "$t oldest order 2");
    is($si->{current}{parent}, 's2', "$t current's parent");
    is($si->{s2}{parent}, 's1', "$t s2's parent");
    ok(!exists $si->{s1}{parent}, "$t the oldest has no parent");
    is($si->{s1}{child}, 's2', "$t s1's child");
    is($si->{s2}{child}, 'current', "$t s2's child");
    is($si->{s1}{file}, $s1, "$t file is the absolute path");
    is($si->{s1}{volname}, '100/snap-s1-vm-100-disk-0.qcow2', "$t snapshot volname");
    is($si->{s1}{volid}, "$sid:100/snap-s1-vm-100-disk-0.qcow2", "$t snapshot volid");
    is($si->{current}{volid}, "$sid:$vol", "$t current volid");
    is($si->{s1}{ext}, 1, "$t ext");
    is($si->{s1}{'virtual-size'}, 64 << 20, "$t virtual-size");

    eval { $P->parse_volname('100/snap-s1-vm-100-disk-0.qcow2') };
    is("$@", "'snap-s1-vm-100-disk-0.qcow2' is a snapshot filename, not a volume!\n", "$t snapshot file names are not volumes");
    is_deeply([map { $_->{volid} } @{ $P->list_images($sid, $scfg, 100) }], ["$sid:$vol"], "$t list_images hides snapshot files");

    # rollback to the OLDER snapshot: possible, no blockers
    my $blockers = [];
    is($P->volume_rollback_is_possible($scfg, $sid, $vol, 's1', $blockers), 1, "$t rollback to an older snapshot is possible");
    is_deeply($blockers, [], "$t .. nothing blocks it");
    eval { $P->volume_rollback_is_possible($scfg, $sid, $vol, 'nope', []) };
    is("$@", "can't rollback, snapshot 'nope' does not exist on '$vol'\n", "$t missing snapshot: Proxmox's message");
    $P->volume_snapshot_rollback($scfg, $sid, $vol, 's1');
    qimg('compare', $path, $s1);
    pass("$t after rollback the volume reads as s1");
    qio($path, 'write -q -P 0x44 3M 100k');
    $P->volume_snapshot($scfg, $sid, $vol, 'b1');   # a branch off s1
    $si = $P->volume_snapshot_info($scfg, $sid, $vol);
    is($si->{current}{parent}, 'b1', "$t branch: current on b1");
    is($si->{b1}{parent}, 's1', "$t b1 on s1");
    is_deeply($si->{s1}{children}, ['b1', 's2'], "$t s1 has two children");
    is($si->{s1}{child}, 'b1', "$t s1's child is the one on the live chain");
    is($si->{s2}{order}, 3, "$t the snapshot on the other branch comes after the live chain");
    ok(!exists $si->{s2}{child}, "$t s2 has no child now");

    # rename, either side 'current'
    $P->rename_snapshot($scfg, $sid, $vol, 's2', 'old');
    ok(-e $P->path($scfg, $vol, $sid, 'old') && !-e $P->path($scfg, $vol, $sid, 's2'), "$t rename_snapshot");
    eval { $P->rename_snapshot($scfg, $sid, $vol, 'old', 'b1') };
    is("$@", "target snapshot 'b1' already exists\n", "$t rename onto an existing snapshot");

    # offline delete of the branch point: both branches keep their data
    my $before_b1 = do { qimg('convert', '-O', 'raw', scalar($P->path($scfg, $vol, $sid, 'b1')), "$root/b1.raw"); QcTest::slurp("$root/b1.raw") };
    $P->volume_snapshot_delete($scfg, $sid, $vol, 's1');
    ok(!-e $s1, "$t branch point deleted");
    qimg('convert', '-O', 'raw', scalar($P->path($scfg, $vol, $sid, 'b1')), "$root/b1b.raw");
    is(QcTest::slurp("$root/b1b.raw"), $before_b1, "$t b1 unchanged");
    eval { $P->volume_snapshot_delete($scfg, $sid, $vol, 'nope') };
    like("$@", qr/^volume \S+snap-nope-vm-100-disk-0\.qcow2 is missing\n\z/, "$t delete of a missing snapshot");

    # running delete (QEMU merged already): only the file goes
    $P->volume_snapshot_delete($scfg, $sid, $vol, 'old', 1);
    ok(!-e $P->path($scfg, $vol, $sid, 'old'), "$t running delete removes the leaf file");
    # qemu-server's oldest-snapshot flow: QEMU commits the live disk into b1 (block-commit,
    # here qemu-img commit -d: the top keeps its data), delete(current, running), rename(b1 -> current)
    qimg('convert', '-O', 'raw', $path, "$root/live.raw");
    qimg('commit', '-q', '-d', $path);
    $P->volume_snapshot_delete($scfg, $sid, $vol, 'current', 1);
    ok(-e $path, "$t current is kept until the rename replaces it (never missing)");
    $P->rename_snapshot($scfg, $sid, $vol, 'b1', 'current');
    ok(-e $path && !-e $P->path($scfg, $vol, $sid, 'b1'), "$t rename to current replaced the volume");
    qimg('convert', '-O', 'raw', $path, "$root/live2.raw");
    ok(same_file("$root/live.raw", "$root/live2.raw"), "$t the volume reads as the live disk did before the commit");
    my ($rc) = qimg_ok('check', $path);
    is($rc, 0, "$t volume clean");

    # resize, rename_volume, methods for QEMU
    $P->volume_snapshot($scfg, $sid, $vol, 'r1');
    is($P->volume_resize($scfg, $sid, $vol, 128 << 20, 1), 1, "$t resize while running: QEMU does it");
    $P->volume_resize($scfg, $sid, $vol, 128 << 20, 0);
    is(qimg_json('info', '--output=json', $path)->{'virtual-size'}, 128 << 20, "$t volume_resize grows the volume");
    $P->volume_resize($scfg, $sid, $vol, 96 << 20, 0, 'r1');
    is(qimg_json('info', '--output=json', scalar($P->path($scfg, $vol, $sid, 'r1')))->{'virtual-size'}, 96 << 20,
        "$t volume_resize with a snapshot name grows the snapshot");
    eval { $P->volume_resize($scfg, $sid, $vol, 1 << 20, 0) };
    like("$@", qr/shrinking/, "$t shrinking refused");
    eval { $P->rename_volume($scfg, $sid, $vol, 101, undef) };
    is("$@", "we can't rename volume if a snapshot backed by a volume-chain exists\n", "$t rename_volume refused with snapshots");
    is($P->volume_qemu_snapshot_method($sid, $scfg, $vol), 'mixed', "$t volume_qemu_snapshot_method");
    is_deeply($P->qemu_blockdev_options($scfg, $sid, $vol, '10.0', { 'snapshot-name' => 'r1' }),
        { driver => 'file', filename => scalar($P->path($scfg, $vol, $sid, 'r1')) }, "$t qemu_blockdev_options with snapshot-name");
    is($P->qemu_blockdev_options($scfg, $sid, $vol, '10.0', {})->{filename}, $path, "$t qemu_blockdev_options of current");
    ok($P->volume_has_feature($scfg, 'snapshot', $sid, $vol), "$t feature snapshot");
    ok($P->volume_has_feature($scfg, 'copy', $sid, $vol, 'r1'), "$t feature copy from a snapshot");

    # free_image takes every snapshot file with it
    $P->free_image($sid, $scfg, $vol, 0, 'qcow2');
    my @left = glob("$root/images/100/*"), glob("$root/images/100/.*.qcow2.*");
    is_deeply(\@left, [], "$t free_image removes the volume and all snapshot files");
}

# ---- the option off: the directory storage's behaviour --------------------
{
    my $root = "$dir/off";
    mkdir $root;
    my $scfg = scfg($root);
    my $vol = $P->alloc_image($sid, $scfg, 200, 'qcow2', undef, 1024);
    my $path = scalar($P->path($scfg, $vol, $sid));
    is($P->path($scfg, $vol, $sid, 's1'), $path, 'off: a snapshot lives inside the volume (internal)');
    @PVE::Storage::Plugin::QEMU_IMG_LOG = ();
    $P->volume_snapshot($scfg, $sid, $vol, 's1');
    is_deeply(\@PVE::Storage::Plugin::QEMU_IMG_LOG, [], 'off: internal snapshot in-process, no qemu-img (t/73)');
    is($P->volume_qemu_snapshot_method($sid, $scfg, $vol), 'qemu', 'off: QEMU snapshots');
    is($P->volume_rollback_is_possible($scfg, $sid, $vol, 'x'), 1, 'off: parent rollback check');
    is_deeply([keys %{ $P->volume_snapshot_info($scfg, $sid, $vol) }], ['s1'], 'off: volume_snapshot_info lists the internal snapshot');
    # a file named like a snapshot is skipped as the directory storage (pve-storage 9.1.7) skips it
    qimg('create', '-q', '-f', 'qcow2', "$root/images/200/snap-x-vm-200-disk-0.qcow2", '1M');
    qimg('create', '-q', '-f', 'qcow2', "$root/images/200/vm-200-disk-1.qcow2", '1M');
    is_deeply([sort map { $_->{volid} } @{ $P->list_images($sid, $scfg, 200) }],
        ["$sid:$vol", "$sid:200/vm-200-disk-1.qcow2"], 'off: list_images is the parent\'s');
}

# ---- untrusted volumes: backing files must stay inside the storage -------
{
    my $root = "$dir/policy";
    mkdir $root;
    my $scfg = scfg($root, 'external-snapshots' => 1);
    my $vol = $P->alloc_image($sid, $scfg, 400, 'qcow2', undef, 1024);
    my $path = scalar($P->path($scfg, $vol, $sid));
    open(my $fh, '>', "$dir/host-secret") or die;
    print $fh "secret\n";
    close $fh;
    for my $b (["$dir/host-secret", 'absolute backing file name'], ['../../../host-secret', 'outside the allowed directories']) {
        my ($name, $why) = @$b;
        unlink $path;
        qimg('create', '-q', '-f', 'qcow2', '-b', $name, '-F', 'raw', $path, '1M');
        for my $m (['volume_snapshot_info', sub { $P->volume_snapshot_info($scfg, $sid, $vol) }],
                   ['volume_snapshot', sub { $P->volume_snapshot($scfg, $sid, $vol, 'p1') }]) {
            eval { $m->[1]->() };
            like("$@", qr/^'\Q$path\E': .*\Q$why\E.*\n\z/, "backing '$name': $m->[0] refused") or diag($@);
        }
        ok(!-e "$root/images/400/snap-p1-vm-400-disk-0.qcow2", '.. no snapshot taken');
    }
}

# ---- a linked clone's base is no snapshot ---------------------------------
{
    my $root = "$dir/clone";
    mkdir $root;
    my $scfg = scfg($root, 'external-snapshots' => 1);
    my $base = $P->alloc_image($sid, $scfg, 300, 'qcow2', 'base-300-disk-0.qcow2', 1024);
    my $clone = $P->clone_image($scfg, $sid, $base, 301);
    like($clone, qr{^300/base-300-disk-0\.qcow2/301/vm-301-disk-0\.qcow2$}, 'linked clone volname');
    $P->volume_snapshot($scfg, $sid, $clone, 'c1');
    my $si = $P->volume_snapshot_info($scfg, $sid, $clone);
    is_deeply([sort keys %$si], ['c1', 'current'], 'no bogus entry for the base image');
    ok(!exists $si->{c1}{parent}, "the oldest snapshot's parent is not the base");
    $P->volume_snapshot_delete($scfg, $sid, $clone, 'c1');
    my ($rc) = qimg_ok('check', scalar($P->path($scfg, $clone, $sid)));
    is($rc, 0, 'clone clean after deleting its snapshot');
}

done_testing();
