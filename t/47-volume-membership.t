# Which files are a volume's: a snapshot file belongs to a volume's tree
# (its backing links, or the record made when it was taken), not to every
# volume whose name pattern it fits; a symlink is never a snapshot file;
# images anywhere in the storage's image directory that are built on a
# snapshot keep it. Guest views are read with qemu-img.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Path qw(make_path);
use POSIX qw(mkfifo);
use QcTest;
use Test::More;
use PVE::Storage;
use PVE::Storage::DirPlugin;
use PVE::Storage::Custom::Qcow2ChainPlugin;
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;
my $SIZE = 4 << 20;

sub view { qimg('convert', '-O', 'raw', $_[0], "$dir/view.raw"); return slurp("$dir/view.raw") }
sub sf { PVE::Storage::Qcow2Chain::snapshot_file(@_) }
sub snaps {
    my ($vol, %o) = @_;
    my $l = PVE::Storage::Qcow2Chain::snapshot_list($vol, %o);
    return join(' ', sort map { $_->{name} } grep { $_->{kind} eq 'snapshot' } @{ $l->{nodes} });
}
sub kinds {
    my ($vol) = @_;
    my $l = PVE::Storage::Qcow2Chain::snapshot_list($vol);
    return { map { ($_->{name} // $_->{file}) => $_->{kind} } @{ $l->{nodes} } };
}
# A snapshot taken the way Proxmox's own plugin takes it (qemu-img; no record of ours).
sub pve_snapshot {
    my ($vol, $name) = @_;
    my $s = sf($vol, $name);
    rename($vol, $s) or die;
    my $b = $s =~ s{.*/}{}r;
    qimg('create', '-q', '-f', 'qcow2', '-b', $b, '-F', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', $vol);
}

# ---- two volumes whose snapshot names overlap -----------------------------
# vm-100-disk-0.qcow2 and vm-100-x-vm-100-disk-0.qcow2: the second's snapshot
# s1 is the file snap-s1-vm-100-x-vm-100-disk-0.qcow2, which also fits the
# pattern of snapshot 's1-vm-100-x' of the first.
for my $how ('ours', 'qemu-img') {
    my $d = "$dir/two-$how";
    make_path($d);
    my $V = "$d/vm-100-disk-0.qcow2";
    my $X = "$d/vm-100-x-vm-100-disk-0.qcow2";
    qimg('create', '-q', '-f', 'qcow2', $_, $SIZE) for $V, $X;
    qio($V, 'write -q -P 0x11 0 1M');
    qio($X, 'write -q -P 0x22 0 1M');
    PVE::Storage::Qcow2Chain::snapshot_create($V, 'a');
    if ($how eq 'ours') { PVE::Storage::Qcow2Chain::snapshot_create($X, 's1') } else { pve_snapshot($X, 's1') }
    qio($X, 'write -q -P 0x33 512k 64k');
    my $xs1 = view(sf($X, 's1'));
    my $xcur = view($X);
    my $vcur = view($V);
    ok(-e sf($V, 's1-vm-100-x'), "[$how] the other volume's snapshot fits this volume's pattern");

    is(snaps($V), 'a', "[$how] listing: only this volume's own snapshot");
    is(snaps($X), 's1', "[$how] the other volume lists its snapshot");
    eval { PVE::Storage::Qcow2Chain::snapshot_delete($V, 's1-vm-100-x') };
    like("$@", qr/snapshot 's1-vm-100-x' does not exist/, "[$how] delete through the wrong volume: no such snapshot");
    eval { PVE::Storage::Qcow2Chain::snapshot_rollback($V, 's1-vm-100-x') };
    like("$@", qr/snapshot 's1-vm-100-x' does not exist/, "[$how] rollback through the wrong volume: no such snapshot");
    eval { PVE::Storage::Qcow2Chain::snapshot_rename($V, 's1-vm-100-x', 'mine') };
    like("$@", qr/snapshot 's1-vm-100-x' does not exist/, "[$how] rename through the wrong volume: no such snapshot");
    ok(view($V) eq $vcur && view($X) eq $xcur && view(sf($X, 's1')) eq $xs1, "[$how] both volumes read as before");
    my ($rc) = qimg_ok('check', $X);
    is($rc, 0, "[$how] the other volume is clean");
}

# The same with the longer-named volume a linked clone of the first one's
# snapshot: the clone's snapshot is built on our snapshot 'a', yet it is the
# clone's, and it keeps 'a' alive.
{
    my $d = "$dir/clone-same-dir";
    make_path($d);
    my $V = "$d/vm-100-disk-0.qcow2";
    my $X = "$d/vm-100-x-vm-100-disk-0.qcow2";
    qimg('create', '-q', '-f', 'qcow2', $V, $SIZE);
    qio($V, 'write -q -P 0x11 0 1M');
    PVE::Storage::Qcow2Chain::snapshot_create($V, 'a');
    qimg('create', '-q', '-f', 'qcow2', '-b', 'snap-a-vm-100-disk-0.qcow2', '-F', 'qcow2', $X);
    pve_snapshot($X, 's1');
    my $xv = view($X);
    is(snaps($V), 'a', 'clone in the same directory: its snapshot is not listed as ours');
    is(kinds($X)->{s1}, 'snapshot', '.. the clone lists it');
    eval { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'a') };
    like("$@", qr/snapshot 'a' is the backing file of '\Q$d\E\/snap-s1-vm-100-x-vm-100-disk-0\.qcow2'/,
        '.. and our snapshot it is built on is not deleted');
    is(view($X), $xv, '.. the clone reads as before');
}

# ---- a snapshot file that is a symlink is no snapshot ---------------------
{
    my $d = "$dir/symlink";
    make_path("$d/images/100", "$dir/outside");
    my $V = "$d/images/100/vm-100-disk-0.qcow2";
    qimg('create', '-q', '-f', 'qcow2', $V, $SIZE);
    qio($V, 'write -q -P 0x11 0 1M');
    PVE::Storage::Qcow2Chain::snapshot_create($V, 'a');
    qimg('create', '-q', '-f', 'qcow2', "$dir/outside/host.qcow2", $SIZE);
    qio("$dir/outside/host.qcow2", 'write -q -P 0x66 0 1M');
    symlink("$dir/outside/host.qcow2", sf($V, 'evil')) or die;
    my $cur = view($V);
    for my $pol ([], [allowed_dirs => ["$d/images"]]) {
        my $t = @$pol ? 'policy' : 'no policy';
        is(snaps($V, @$pol), 'a', "[$t] a symlinked snapshot file is not listed");
        eval { PVE::Storage::Qcow2Chain::snapshot_rollback($V, 'evil', @$pol) };
        like("$@", qr/snapshot 'evil' does not exist/, "[$t] rollback to it refused");
        eval { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'evil', @$pol) };
        like("$@", qr/snapshot 'evil' does not exist/, "[$t] delete of it refused");
        is(view($V), $cur, "[$t] the live disk is unchanged");
        is(qimg_json('info', '--output=json', $V)->{'backing-filename'}, 'snap-a-vm-100-disk-0.qcow2',
            "[$t] .. and still built on its own snapshot");
    }
    ok(-e "$dir/outside/host.qcow2" && -l sf($V, 'evil'), 'the link and its target are left alone');
}

# ---- images built on a snapshot, outside the volume's directory ------------
# images/101/vm-101-disk-0.qcow2 is built on ../100/snap-a-vm-100-disk-0.qcow2
{
    my $img = "$dir/store/images";
    make_path("$img/100", "$img/101", "$img/102");
    my $V = "$img/100/vm-100-disk-0.qcow2";
    qimg('create', '-q', '-f', 'qcow2', $V, $SIZE);
    qio($V, 'write -q -P 0x11 0 1M');
    PVE::Storage::Qcow2Chain::snapshot_create($V, 'a');
    qio($V, 'write -q -P 0x12 0 64k');
    my $C = "$img/101/vm-101-disk-0.qcow2";
    qimg('create', '-q', '-f', 'qcow2', '-b', '../100/snap-a-vm-100-disk-0.qcow2', '-F', 'qcow2', $C);
    qio($C, 'write -q -P 0x21 2M 64k');
    mkfifo("$img/$_/a-fifo", 0600) or die for 100, 102; # never opened: the scan must not hang on them
    symlink("$img/101", "$img/102/loop") or die; # never followed
    my $cv = view($C);
    for my $op (['delete', sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'a', @_) }],
                ['rename', sub { PVE::Storage::Qcow2Chain::snapshot_rename($V, 'a', 'b', @_) }]) {
        my $pid = fork() // die;
        if (!$pid) { # a hang would show as a timeout, not stop the test
            eval { $op->[1]->(images_dir => $img) };
            POSIX::_exit($@ =~ /snapshot 'a' is the backing file of '\Q$C\E'; not (deleted|renamed)/ ? 0 : 1);
        }
        my $waited = 0;
        while (waitpid($pid, POSIX::WNOHANG()) == 0 && $waited++ < 600) { select(undef, undef, undef, 0.1) }
        if ($waited > 600) { kill 'KILL', $pid; waitpid($pid, 0) }
        is($?, 0, "$op->[0] with the image directory named: refused, the clone in images/101 uses the snapshot");
        ok(-e sf($V, 'a') && !-e sf($V, 'b'), "$op->[0]: the snapshot file is still there");
        is(view($C), $cv, "$op->[0]: the clone reads as before");
    }
    # the plugin names the storage's image directory itself
    my $P = 'PVE::Storage::Custom::Qcow2ChainPlugin';
    PVE::Storage::DirPlugin->register();
    PVE::Storage::check_custom_plugin($P);
    PVE::Storage::Plugin->init();
    my $scfg = { type => 'qcow2chain', path => "$dir/store", content => { images => 1 }, 'external-snapshots' => 1 };
    eval { $P->volume_snapshot_delete($scfg, 'st', '100/vm-100-disk-0.qcow2', 'a') };
    like("$@", qr/^snapshot 'a' is the backing file of '\Q$C\E'; not deleted\n\z/, 'plugin: delete refused');
    eval { $P->rename_snapshot($scfg, 'st', '100/vm-100-disk-0.qcow2', 'a', 'b') };
    like("$@", qr/^snapshot 'a' is the backing file of '\Q$C\E'; not renamed\n\z/, 'plugin: rename refused');
    eval { $P->free_image('st', $scfg, '100/vm-100-disk-0.qcow2', 0, 'qcow2') };
    like("$@", qr/^'\Q$img\E\/100\/snap-a-vm-100-disk-0\.qcow2' of volume '100\/vm-100-disk-0\.qcow2' is the backing file of '\Q$C\E'; not removed\n\z/,
        'plugin: free_image refused');
    ok(-e $V && -e sf($V, 'a'), '.. the volume and its snapshot are still there');
    is(view($C), $cv, 'plugin: the clone reads as before');
    is_deeply([PVE::Storage::Qcow2Chain::volume_dependent($V, images_dir => $img)], [$C, sf($V, 'a')],
        'volume_dependent names the clone and the file it is built on');

    # once the clone is gone the same delete goes through
    unlink $C;
    is_deeply([PVE::Storage::Qcow2Chain::volume_dependent($V, images_dir => $img)], [], 'volume_dependent: none left');
    my $cur = view($V);
    PVE::Storage::Qcow2Chain::snapshot_delete($V, 'a', images_dir => $img);
    ok(!-e sf($V, 'a'), 'with nothing built on it the snapshot is deleted');
    is(view($V), $cur, '.. and the live disk reads as before');
}

# ---- the plugin's free_image takes only its own volume's files ------------
{
    my $root = "$dir/pve";
    my $P = 'PVE::Storage::Custom::Qcow2ChainPlugin';
    my $scfg = { type => 'qcow2chain', path => $root, content => { images => 1 }, 'external-snapshots' => 1 };
    my $v1 = $P->alloc_image('st', $scfg, 100, 'qcow2', 'vm-100-disk-0.qcow2', 4096);
    my $v2 = $P->alloc_image('st', $scfg, 100, 'qcow2', 'vm-100-x-vm-100-disk-0.qcow2', 4096);
    my ($p1, $p2) = map { scalar($P->path($scfg, $_, 'st')) } $v1, $v2;
    qio($p2, 'write -q -P 0x44 0 1M');
    $P->volume_snapshot($scfg, 'st', $v1, 'one');
    $P->volume_snapshot($scfg, 'st', $v2, 's1');
    qio($p2, 'write -q -P 0x45 64k 64k');
    my $want = view($p2);
    is_deeply([sort keys %{ $P->volume_snapshot_info($scfg, 'st', $v1) }], ['current', 'one'],
        'volume_snapshot_info: the other volume\'s snapshot is not listed');
    $P->free_image('st', $scfg, $v1, 0, 'qcow2');
    ok(!-e $p1 && !-e sf($p1, 'one'), 'free_image removed the volume and its snapshot');
    ok(-e sf($p2, 's1'), "free_image left the other volume's snapshot");
    is(view($p2), $want, 'the other volume reads as before');
    my ($rc) = qimg_ok('check', $p2);
    is($rc, 0, 'the other volume is clean');
}

done_testing();
