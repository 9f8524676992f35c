# Recovery that does not depend on how the volume's path is spelled, no
# half-written journal left behind, and no snapshot that would make the
# backing chain too deep to open. Interrupted operations are made with the
# I/O seam's power cuts; guest views are read with qemu-img (compared by
# digest, once per content of a chain: QcTest::view_md5).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Cwd qw(getcwd);
use File::Copy qw(copy);
use File::Path qw(make_path);
use POSIX qw(EIO);
use QcHooks qw(with_fault);
use QcTest;
use Test::More;
use PVE::Storage;
use PVE::Storage::DirPlugin;
use PVE::Storage::Custom::Qcow2ChainPlugin;
use PVE::Storage::Qcow2Chain;

my $dir = scratch();
chdir $dir or die;
$dir = getcwd();
my $SIZE = 4 << 20;
my $V = 'vm-100-disk-0.qcow2';
my $ABS = "$dir/$V";

sub sf { PVE::Storage::Qcow2Chain::snapshot_file($V, $_[0]) }

# a -> b -> current, a -> c
sub setup {
    unlink glob('*.qcow2'), glob('.*.qcow2.*');
    branched_volume($V, $SIZE);
}

# ---- 9. an operation interrupted through one spelling, recovered through the other
setup();
my %content = (current => view_md5($V), map { $_ => view_md5(sf($_)) } qw(a b c));
mkdir 'orig';
copy($_, "orig/$_") or die for glob('*.qcow2');
my @ops = (
    ['delete b by commit', sub { PVE::Storage::Qcow2Chain::snapshot_delete($_[0], 'b', delete_method => 'commit', @_[1 .. $#_]) }],
    ['delete b by stream', sub { PVE::Storage::Qcow2Chain::snapshot_delete($_[0], 'b', delete_method => 'stream', @_[1 .. $#_]) }],
    ['delete a (two children)', sub { PVE::Storage::Qcow2Chain::snapshot_delete($_[0], 'a', @_[1 .. $#_]) }],
    ['rename b', sub { PVE::Storage::Qcow2Chain::snapshot_rename($_[0], 'b', 'bee', @_[1 .. $#_]) }],
);
for my $op (@ops) {
    my ($name, $run) = @$op;
    unlink glob('*.qcow2'), glob('.*.qcow2.*');
    copy($_, s{^orig/}{}r) or die for glob('orig/*.qcow2');
    my $stats = with_fault(['none'], sub { $run->($V) });
    my (@fails, $journaled);
    for my $k (1 .. $stats->{count}) {
        for my $spell ([$V, $ABS], [$ABS, $V]) {
            my ($by, $then) = @$spell;
            unlink glob('*.qcow2'), glob('.*.qcow2.*');
            copy($_, s{^orig/}{}r) or die for glob('orig/*.qcow2');
            eval { with_fault(['crash', $k, EIO, 0], sub { $run->($by) }) };
            next if !-e ".$V.journal";
            $journaled++;
            my $label = "crash at $k through " . ($by eq $V ? 'relative' : 'absolute') . ' path';
            eval { PVE::Storage::Qcow2Chain::volume_recover($then) };
            push @fails, "$label: recovery: $@" if $@;
            push @fails, "$label: journal left" if -e ".$V.journal";
            my $l = eval { PVE::Storage::Qcow2Chain::snapshot_list($by) };
            push @fails, "$label: list through the first spelling: $@" if !$l;
            for my $s ('current', map { $_->{name} } grep { $_->{kind} eq 'snapshot' } @{ $l->{nodes} // [] }) {
                my $v = view_md5($s eq 'current' ? $V : sf($s));
                push @fails, "$label: $s reads wrong" if $s ne 'bee' && $v ne $content{$s};
                push @fails, "$label: bee reads wrong" if $s eq 'bee' && $v ne $content{b};
            }
        }
    }
    ok($journaled, "$name: some power cuts leave a journal");
    is_deeply(\@fails, [], "$name: interrupted through either spelling of the path, completed through the other");
}

# A journal of the earlier format (paths as the caller spelled them) is still
# completed: a rename interrupted after its new name was linked.
{
    setup();
    make_path('elsewhere');
    symlink($dir, 'elsewhere/link') or die;
    link(sf('b'), sf('bee')) or die;
    my $sp = "$dir/elsewhere/link";
    open(my $fh, '>', ".$V.journal") or die;
    print $fh qq({"op":"rename","snap":"b","file":"$sp/snap-b-$V","to":"$sp/snap-bee-$V","to_name":"snap-bee-$V",)
        . qq("fmt":"qcow2","children":["$sp/$V"]});
    close $fh;
    my $cur = view_md5($V);
    eval { PVE::Storage::Qcow2Chain::volume_recover($V) };
    is("$@", '', 'an earlier-format journal naming paths through a symlinked directory is completed');
    ok(!-e ".$V.journal" && !-e sf('b') && -e sf('bee'), '.. the rename is done');
    is(qimg_json('info', '--output=json', $V)->{'backing-filename'}, "snap-bee-$V", '.. the child refers to the new name');
    is(view_md5($V), $cur, '.. and reads as before');
}

# ---- 10. a half-written journal is removed --------------------------------
{
    setup();
    # a power cut just before the journal's rename can leave it: when the
    # file system had made its creation durable on its own (a power cut that
    # undoes only part of what no fsync covered: seeds other than 0)
    my $tmp = ".$V.journal.tmp";
    my $left;
    my $stats = with_fault(['none'], sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'c') });
    SEARCH: for my $seed (1 .. 16) {
        for my $k (1 .. $stats->{count}) {
            setup();
            eval { with_fault(['crash', $k, EIO, $seed], sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'c') }) };
            if (-e $tmp && !-e ".$V.journal") { $left = $k; last SEARCH }
        }
    }
    ok($left, "a power cut at the journal's rename leaves $tmp");
    my %snaps = (a => view_md5(sf('a')), b => view_md5(sf('b')), c => view_md5(sf('c')));
    for my $op (['volume_recover', sub { PVE::Storage::Qcow2Chain::volume_recover($V) }],
                ['snapshot_list', sub { PVE::Storage::Qcow2Chain::snapshot_list($V) }],
                ['snapshot_create', sub { PVE::Storage::Qcow2Chain::snapshot_create($V, 'n') }],
                ['snapshot_rename', sub { PVE::Storage::Qcow2Chain::snapshot_rename($V, 'n', 'm') }],
                ['snapshot_rollback', sub { PVE::Storage::Qcow2Chain::snapshot_rollback($V, 'b') }],
                ['snapshot_delete', sub { PVE::Storage::Qcow2Chain::snapshot_delete($V, 'm') }]) {
        if (!-e $tmp) { open(my $fh, '>', $tmp) or die; print $fh '{"op":"del'; close $fh }
        eval { $op->[1]->() };
        is("$@", '', "$op->[0] with a half-written journal: works");
        ok(!-e $tmp, "$op->[0] removes it");
    }
    is_deeply({ map { $_ => view_md5(sf($_)) } qw(a b c) }, \%snaps, 'the snapshots read as before');

    # the plugin's free_image too
    my $P = 'PVE::Storage::Custom::Qcow2ChainPlugin';
    PVE::Storage::DirPlugin->register();
    PVE::Storage::check_custom_plugin($P);
    PVE::Storage::Plugin->init();
    my $scfg = { type => 'qcow2chain', path => "$dir/pve", content => { images => 1 }, 'external-snapshots' => 1 };
    my $vol = $P->alloc_image('st', $scfg, 100, 'qcow2', undef, 1024);
    my $path = scalar($P->path($scfg, $vol, 'st'));
    $P->volume_snapshot($scfg, 'st', $vol, 's1');
    my $ptmp = "$dir/pve/images/100/.vm-100-disk-0.qcow2.journal.tmp";
    open(my $fh, '>', $ptmp) or die;
    close $fh;
    $P->free_image('st', $scfg, $vol, 0, 'qcow2');
    ok(!-e $ptmp && !-e $path, 'free_image removes a half-written journal with the volume');
    ok(!-d "$dir/pve/images/100", '.. and the directory it emptied');
}

# ---- 15. no snapshot makes the chain deeper than any operation accepts ----
{
    make_path('deep');
    my $D = 'deep/vm-500-disk-0.qcow2';
    qimg('create', '-q', '-f', 'qcow2', $D, '1M');
    qio($D, 'write -q -P 0x50 0 64k');
    PVE::Storage::Qcow2Chain::snapshot_create($D, "s$_") for 1 .. 256;
    my $chain = qimg_json('info', '--output=json', '--backing-chain', $D);
    is(scalar(@$chain), 257, 'a volume 256 backing files deep');
    eval { PVE::Storage::Qcow2Chain::snapshot_create($D, 'one-more') };
    like("$@", qr/snapshot 'one-more' not taken: .* backing chain deeper than 256 images/, 'one more snapshot is refused');
    ok(!-e 'deep/snap-one-more-vm-500-disk-0.qcow2', '.. no file made');
    eval { PVE::Storage::Qcow2Chain::snapshot_rename($D, 'current', 'one-more') };
    like("$@", qr/deeper than 256 images/, '.. also as a rename of current');
    eval { PVE::Storage::Qcow2Chain::snapshot_create($D, 'tight', max_depth => 300) };
    is("$@", '', 'with a larger max_depth it is taken');
    eval { PVE::Storage::Qcow2Chain::snapshot_delete($D, 'tight', max_depth => 300) };
    is("$@", '', '.. and deleted again');
    for my $op (['list', sub { PVE::Storage::Qcow2Chain::snapshot_list($D) }],
                ['delete of the newest snapshot', sub { PVE::Storage::Qcow2Chain::snapshot_delete($D, 's256') }],
                ['a snapshot now', sub { PVE::Storage::Qcow2Chain::snapshot_create($D, 'fits') }],
                ['its delete', sub { PVE::Storage::Qcow2Chain::snapshot_delete($D, 'fits') }]) {
        eval { $op->[1]->() };
        is("$@", '', "at the limit, $op->[0] works");
    }
    qimg('convert', '-O', 'raw', $D, 'deep.raw');
    is(substr(slurp('deep.raw'), 0, 65536), "\x50" x 65536, 'the live disk reads as written');
}

done_testing();
