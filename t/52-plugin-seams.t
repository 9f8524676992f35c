# Where the plugin meets Proxmox's own code paths (qm destroy, qm
# delsnapshot of a running VM, storage migration and export, linked clones,
# pvesm list), over the stand-ins of pve-storage 9.1.7 and qemu-server 9.2.6
# in t/lib: templates can be destroyed, a running VM's snapshot is not
# resized under QEMU, the option qemu-server reads is set whichever switch
# was written, volumes with snapshots are not shipped as one layer, a base
# still needed through a clone's snapshots is kept, every chain is opened
# under the storage's policy, a running VM is found without locks, the live
# file keeps its owner and mode, and nothing hidden stays behind.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX ();
use QcHooks qw(with_fault);
use QcTest;
use Test::More;
use Time::HiRes qw(sleep);

my $dir;
BEGIN {
    $dir = scratch();
    mkdir "$dir/run";
    $ENV{PVE_STANDIN_QEMU_RUN_DIR} = "$dir/run"; # qemu-server's pid files
    $ENV{PVE_STANDIN_LOCKDIR} = "$dir/locks";
}

# create_base makes base volumes immutable: a failing run must not leave an
# undeletable scratch directory behind
END { local $?; system('chattr', '-R', '-f', '-i', $dir) if $dir && -d $dir }

use PVE::Storage;
use PVE::Storage::DirPlugin;
use PVE::Storage::Custom::Qcow2ChainPlugin;
use PVE::Storage::Qcow2Chain;

my $P = 'PVE::Storage::Custom::Qcow2ChainPlugin';
PVE::Storage::DirPlugin->register();
PVE::Storage::check_custom_plugin($P);
PVE::Storage::Plugin->init();

# /etc/pve/storage.cfg with two storages of our type, parsed as Proxmox parses it
sub config {
    my ($tag, @opt) = @_;
    my $raw = '';
    for my $sid ('st', 'st2') {
        my $root = "$dir/$tag-$sid";
        mkdir $root;
        $raw .= "qcow2chain: $sid\n\tpath $root\n\tcontent images\n" . join('', map { "\t$_ 1\n" } @opt) . "\n";
    }
    return PVE::Storage::Plugin->parse_config('storage.cfg', $raw);
}
sub path_of { my ($cfg, $volid, $snap) = @_; return scalar(PVE::Storage::path($cfg, $volid, $snap)) }
sub attrs { my ($f) = @_; my ($rc, $o) = run_cmd('lsattr', '-d', $f); return $rc ? '' : (split(' ', $o))[0] }
sub view { my ($f) = @_; qimg('convert', '-O', 'raw', $f, "$dir/view.raw"); return slurp("$dir/view.raw") }

for my $switch ('external-snapshots', 'snapshot-as-volume-chain', undef) {
    my $t = '[' . ($switch // 'off') . ']';
    my $cfg = config($switch // 'off', $switch // ());
    my $scfg = $cfg->{ids}{st};

    # ---- item 3: qemu-server sees a volume-chain storage --------------------
    if ($switch) {
        is($scfg->{'snapshot-as-volume-chain'}, 1, "$t the parsed section carries 'snapshot-as-volume-chain', which qemu-server reads");
        is($scfg->{$switch}, 1, "$t .. and the switch as written");
    } else {
        ok(!$scfg->{'snapshot-as-volume-chain'}, "$t neither switch: no volume chains");
    }

    # ---- item 1: qm destroy of a template ------------------------------------
    my $vol = $P->alloc_image('st', $scfg, 200, 'qcow2', undef, 1024);
    my $base = $P->create_base('st', $scfg, $vol);
    is($base, '200/base-200-disk-0.qcow2', "$t create_base");
    my $bpath = path_of($cfg, "st:$base");
    like(attrs($bpath), qr/i/, "$t .. made the base immutable (chattr +i), as Proxmox does");
    my $clone = $P->clone_image($scfg, 'st', $base, 201);
    eval { PVE::Storage::vdisk_free($cfg, "st:$base") };
    is("$@", "base volume '$base' is still in use by linked clones\n", "$t a base with a linked clone is kept");
    PVE::Storage::vdisk_free($cfg, "st:$clone");
    eval { PVE::Storage::vdisk_free($cfg, "st:$base") };
    is("$@", '', "$t qm destroy's vdisk_free of the template's base volume works");
    ok(!-e $bpath, "$t .. the base volume is gone");
    ok(!-e dirname_of($bpath), "$t .. and its directory");
}

sub dirname_of { my ($p) = @_; $p =~ s!/[^/]+$!!; return $p }

# The rest with the switch as PVE 9 writes it and as we document it.
for my $switch ('external-snapshots', 'snapshot-as-volume-chain') {
    my $t = "[$switch]";
    my $cfg = config("x-$switch", $switch);
    my $scfg = $cfg->{ids}{st};
    my $root = $scfg->{path};

    # ---- item 3: export and migration of a volume with snapshots ------------
    my $vol = $P->alloc_image('st', $scfg, 120, 'qcow2', undef, 4096);
    my $volid = "st:$vol";
    qio(path_of($cfg, $volid), 'write -q -P 0x12 0 1M');
    PVE::Storage::volume_snapshot($cfg, $volid, 's1');
    qio(path_of($cfg, $volid), 'write -q -P 0x13 512k 1M');
    my $want = view(path_of($cfg, $volid));
    open(my $fh, '>', "$dir/export.bin") or die;
    eval { PVE::Storage::volume_export($cfg, $fh, $volid, 'qcow2+size', undef, undef, 1) };
    close $fh;
    is("$@", "cannot export volumes together with their snapshots in $P\n", "$t export with snapshots: Proxmox's refusal");
    is(-s "$dir/export.bin", 0, "$t .. nothing written");
    eval { PVE::Storage::storage_migrate($cfg, $volid, undef, 'st2', { with_snapshots => 1 }) };
    is("$@", "cannot export volumes together with their snapshots in $P\n", "$t storage_migrate with snapshots refused");
    ok(!-e "$cfg->{ids}{st2}{path}/images/120/vm-120-disk-0.qcow2", "$t .. no half volume on the target");
    is(view(path_of($cfg, $volid)), $want, "$t .. the source reads as before");
    # a section made by hand, without the Proxmox key: refused all the same
    my %only = (type => 'qcow2chain', path => $root, content => { images => 1 }, 'external-snapshots' => 1);
    eval { $P->volume_export(\%only, 'st', \*STDOUT, $vol, 'qcow2+size', undef, undef, 1) };
    is("$@", "cannot export volumes together with their snapshots in $P\n", "$t export refused with only 'external-snapshots' set");

    # ---- item 2: qemu-server's delete of a running VM's first snapshot -------
    # it grows the snapshot to the live disk's size with running = 1 before
    # QEMU's block-commit (which grows it itself): the file is not touched
    PVE::Storage::volume_resize($cfg, $volid, 8 << 20, 0);
    my $s1 = path_of($cfg, $volid, 's1');
    my $bytes = slurp($s1);
    my $g = qio_holder(path_of($cfg, $volid), "$dir/holder.out");
    my $si = PVE::Storage::volume_snapshot_info($cfg, $volid);
    ok($si->{current}{'virtual-size'} > $si->{s1}{'virtual-size'}, "$t the live disk is larger than s1");
    is(PVE::Storage::volume_resize($cfg, $volid, $si->{current}{'virtual-size'}, 1, 's1'), 1,
        "$t volume_resize(running, snapshot) returns 1, as Proxmox's");
    is(slurp($s1), $bytes, "$t .. the snapshot file is untouched, byte for byte");
    holder_stop($g);
    PVE::Storage::volume_resize($cfg, $volid, 8 << 20, 0, 's1');
    is(qimg_json('info', '--output=json', $s1)->{'virtual-size'}, 8 << 20, "$t offline, the snapshot is grown");

    # ---- item 4: a linked clone with snapshots keeps its base ---------------
    my $b = $P->create_base('st', $scfg, $P->alloc_image('st', $scfg, 300, 'qcow2', undef, 2048));
    my $clone = $P->clone_image($scfg, 'st', $b, 301);
    my $cid = "st:$clone";
    qio(path_of($cfg, $cid), 'write -q -P 0x31 0 64k');
    PVE::Storage::volume_snapshot($cfg, $cid, 'c1');
    PVE::Storage::volume_snapshot($cfg, $cid, 'c2');
    my $listed = PVE::Storage::vdisk_list($cfg, 'st', 301)->{st};
    is_deeply([map { $_->{volid} } @$listed], ["st:300/base-300-disk-0.qcow2/301/vm-301-disk-0.qcow2"],
        "$t list_images names the clone after its base, through its snapshots, as Proxmox names clones");
    is(PVE::Storage::volume_is_base_and_used($cfg, "st:$b"), 1, "$t volume_is_base_and_used sees the base used");
    eval { PVE::Storage::vdisk_free($cfg, "st:$b") };
    is("$@", "base volume '$b' is still in use by linked clones\n", "$t qm destroy of the template refused");
    # the clone's live disk no longer needs the base, its snapshots still do
    PVE::Storage::Qcow2Chain::rebase(path_of($cfg, $cid), backing_file => '');
    is_deeply([map { $_->{volid} } @{ PVE::Storage::vdisk_list($cfg, 'st', 301)->{st} }],
        ["st:300/base-300-disk-0.qcow2/301/vm-301-disk-0.qcow2"], "$t .. also once its live disk stands alone");
    eval { $P->free_image('st', $scfg, $b, 1, 'qcow2') };
    is("$@", "base volume '$b' is still in use by linked clones\n", "$t free_image itself keeps a base a snapshot needs");
    ok(-e path_of($cfg, "st:$b"), "$t .. the base is there");
    PVE::Storage::vdisk_free($cfg, $cid);
    PVE::Storage::vdisk_free($cfg, "st:$b");
    ok(!-e path_of($cfg, "st:$b"), "$t with the clone gone the template goes");

    # ---- item 5 and issue 13 item 7: every chain is opened under the policy --
    open(my $sec, '>', "$dir/host-secret") or die;
    print $sec "secret\n";
    close $sec;
    unlink "$dir/host-fifo";
    POSIX::mkfifo("$dir/host-fifo", 0600) or die;
    my $v4 = $P->alloc_image('st', $scfg, 400, 'qcow2', undef, 1024);
    my $p4 = path_of($cfg, "st:$v4");
    for my $bk (["$dir/host-secret", 'raw', 'absolute backing file name'], ['../../../host-fifo', 'raw', 'outside the allowed directories']) {
        my ($name, $fmt, $why) = @$bk;
        unlink $p4;
        qimg('create', '-q', '-f', 'qcow2', '-u', '-b', $name, '-F', $fmt, $p4, '1M');
        my $r = in_child(sub { PVE::Storage::volume_resize($cfg, "st:$v4", 2 << 20, 0) });
        like($r, qr/^died: '\Q$p4\E': .*\Q$why\E/, "$t volume_resize of a volume backed by '$name': refused by the policy") or diag($r);
    }
    my @warned;
    my $r = in_child(sub { local $SIG{__WARN__} = sub { }; PVE::Storage::vdisk_free($cfg, "st:$v4") });
    is($r, 'ok', "$t free_image of a volume whose backing the policy refuses still removes it") or diag($r);
    ok(!-e $p4, "$t .. it is gone");
    is(slurp("$dir/host-secret"), "secret\n", "$t .. the host file is untouched");
    # another VM's volume as backing (not a template's base): an untrusted chain
    my $v100 = $P->alloc_image('st', $scfg, 100, 'qcow2', undef, 1024);
    my $v102 = $P->alloc_image('st', $scfg, 102, 'qcow2', undef, 1024);
    my $p102 = path_of($cfg, "st:$v102");
    unlink $p102;
    qimg('create', '-q', '-f', 'qcow2', '-b', '../100/vm-100-disk-0.qcow2', '-F', 'qcow2', $p102);
    for my $m (['volume_snapshot_info', sub { PVE::Storage::volume_snapshot_info($cfg, "st:$v102") }],
               ['volume_snapshot', sub { PVE::Storage::volume_snapshot($cfg, "st:$v102", 'x1') }],
               ['volume_resize', sub { PVE::Storage::volume_resize($cfg, "st:$v102", 2 << 20, 0) }]) {
        eval { $m->[1]->() };
        like("$@", qr/^'\Q$p102\E': backing file '\S+vm-100-disk-0\.qcow2' is in another directory and not a 'base-\*' image; untrusted chain refused\n\z/,
            "$t VM 102 backed by VM 100's disk: $m->[0] refused") or diag($@);
    }
    ok(!-e "$root/images/102/snap-x1-vm-102-disk-0.qcow2", "$t .. no snapshot taken");
    {
        local $SIG{__WARN__} = sub { push @warned, @_ };
        $P->free_image('st', $scfg, $v102, 0, 'qcow2');
    }
    like("@warned", qr/^not looking for snapshot files of '\Q$v102\E': .*untrusted chain refused\n\z/,
        "$t free_image of it says why it does not follow the chain");
    ok(!-e $p102, "$t .. and removes it");
    $P->free_image('st', $scfg, $v100, 0, 'qcow2');

    # ---- item 8 / issue 13 item 3: a running VM found without locks ----------
    my $v5 = $P->alloc_image('st', $scfg, 500, 'qcow2', undef, 1024);
    my $vid5 = "st:$v5";
    my $p5 = path_of($cfg, $vid5);
    PVE::Storage::volume_snapshot($cfg, $vid5, 'r1');
    # stopped VM, but something else writes the disk: no snapshot
    $g = qio_holder($p5, "$dir/holder.out");
    eval { PVE::Storage::volume_snapshot($cfg, $vid5, 'r2') };
    like("$@", qr/^'\Q$p5\E' is in use by process $g->{pid} \(qemu-io\); not changing it while another process has it open\n\z/,
        "$t VM not running, the disk held: volume_snapshot refused naming the process");
    ok(!-e path_of($cfg, $vid5, 'r2'), "$t .. nothing taken");
    holder_stop($g);
    # VM 500 runs (qemu-server's pid file names its QEMU): qemu-server's running snapshot and delete flows
    my $vm = vm_start($p5, "$dir/run/500.pid");
    PVE::Storage::volume_snapshot($cfg, $vid5, 'r2');
    ok(-e path_of($cfg, $vid5, 'r2'), "$t VM running: volume_snapshot works next to it (QEMU switches itself, blockdev-snapshot)");
    vm_stop($vm);
    $vm = vm_start($p5, "$dir/run/500.pid"); # QEMU on the new overlay, as after blockdev-snapshot
    PVE::Storage::rename_snapshot($cfg, $vid5, 'r2', 'r3');
    ok(-e path_of($cfg, $vid5, 'r3') && -e path_of($cfg, $vid5, 'r2'),
        "$t VM running: rename_snapshot keeps the name QEMU still uses until QEMU has switched");
    vm_stop($vm);
    eval { PVE::Storage::rename_snapshot($cfg, $vid5, 'r1', 'r0') };
    is("$@", '', "$t VM stopped: the next operation finishes the rename offline");
    ok(!-e path_of($cfg, $vid5, 'r2'), "$t .. the old name is gone");
    is(qimg_json('info', '--output=json', $p5)->{'backing-filename'}, "snap-r3-vm-500-disk-0.qcow2", "$t .. the live disk names the new one");

    # ---- item 9: the live file keeps its owner, group and mode ---------------
    chown(1234, 5678, $p5) or die;
    chmod(0640, $p5) or die;
    PVE::Storage::volume_snapshot($cfg, $vid5, 'o1');
    my @st = stat($p5);
    is(sprintf('%d:%d %04o', @st[4, 5], $st[2] & 07777), '1234:5678 0640', "$t after volume_snapshot the live disk keeps 1234:5678 0640");
    PVE::Storage::volume_snapshot_rollback($cfg, $vid5, 'o1');
    @st = stat($p5);
    is(sprintf('%d:%d %04o', @st[4, 5], $st[2] & 07777), '1234:5678 0640', "$t after rollback too");
    # a power cut at each step of it (owner and mode changes are steps):
    # afterwards the live disk reads as before and keeps its owner and mode
    if ($switch eq 'external-snapshots') {
        my $live = view($p5);
        my $stats = with_fault(['none'], sub { PVE::Storage::Qcow2Chain::snapshot_create($p5, 'o2') });
        PVE::Storage::Qcow2Chain::snapshot_delete($p5, 'o2');
        my @bad;
        for my $n (1 .. $stats->{count}) {
            eval { with_fault(['crash', $n], sub { PVE::Storage::Qcow2Chain::snapshot_create($p5, 'o2') }) };
            PVE::Storage::Qcow2Chain::volume_recover($p5);
            my @s = stat($p5);
            push @bad, "$n: " . sprintf('%d:%d %04o', @s[4, 5], $s[2] & 07777)
                if sprintf('%d:%d %04o', @s[4, 5], $s[2] & 07777) ne '1234:5678 0640' || view($p5) ne $live;
            PVE::Storage::Qcow2Chain::snapshot_delete($p5, 'o2') if -e path_of($cfg, $vid5, 'o2');
        }
        ok($stats->{count} > 5, "$t a snapshot of it takes $stats->{count} steps");
        is_deeply(\@bad, [], "$t a power cut at any of them keeps the live disk's data, owner and mode");
    }
    {
        my $old = umask(027);
        my $v6 = $P->alloc_image('st', $scfg, 600, 'qcow2', undef, 1024);
        qimg('create', '-q', '-f', 'qcow2', "$dir/umask-qemu.qcow2", '1M');
        umask($old);
        is(sprintf('%04o', (stat path_of($cfg, "st:$v6"))[2] & 07777), sprintf('%04o', (stat "$dir/umask-qemu.qcow2")[2] & 07777),
            "$t a new volume follows the umask as qemu-img create does");
        unlink "$dir/umask-qemu.qcow2";
        $P->free_image('st', $scfg, $v6, 0, 'qcow2');
    }

    # ---- item 10: nothing hidden stays behind --------------------------------
    my $d5 = dirname_of($p5);
    open(my $tmp, '>', "$d5/.vm-500-disk-0.qcow2.journal.tmp") or die; # as a kill before the journal's rename leaves it
    close $tmp;
    PVE::Storage::vdisk_free($cfg, $vid5);
    ok(!-e $d5, "$t free_image: the volume's directory is gone, no lock, journal or temporary file kept it");
    my $v7 = $P->alloc_image('st', $scfg, 700, 'qcow2', undef, 1024);
    my $p7 = path_of($cfg, "st:$v7");
    $P->volume_snapshot_info($scfg, 'st', $v7); # takes the volume's lock
    my $new = $P->rename_volume($scfg, 'st', $v7, 701, undef);
    is($new, 'st:701/vm-701-disk-0.qcow2', "$t rename_volume");
    is_deeply([glob(dirname_of($p7) . '/.vm-700*')], [], "$t .. no lock or journal of the old name stays");
}

# A running VM as qemu-server sees one: a QEMU (here qemu-storage-daemon)
# started with -pidfile RUNDIR/VMID.pid, holding the volume's chain as
# qemu-server attaches it (QcTest::qsd_holder, locking off).
sub vm_start {
    my ($file, $pidfile) = @_;
    my $sock = "$dir/vm.sock";
    unlink $pidfile;
    my $pid = qsd_holder($file, $sock, '--chardev', "socket,id=m,path=$sock,server=on,wait=off",
        '--monitor', 'chardev=m', '--pidfile', $pidfile);
    sleep 0.05 until -s $pidfile;
    return $pid;
}

sub vm_stop {
    my ($pid) = @_;
    kill 'TERM', $pid;
    waitpid($pid, 0);
}

# Run code in a child that must not hang (a FIFO opened by mistake would).
sub in_child {
    my ($code) = @_;
    pipe(my $r, my $w) or die;
    my $pid = fork() // die;
    if (!$pid) {
        close $r;
        alarm 20;
        my $res = eval { $code->(); 1 } ? 'ok' : "died: $@";
        print $w $res;
        close $w;
        POSIX::_exit(0);
    }
    close $w;
    local $/;
    my $res = <$r> // '';
    waitpid($pid, 0);
    return $? & 127 ? "killed by signal " . ($? & 127) . " (hung)" : $res;
}

done_testing();
