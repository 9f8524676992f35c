# Hostile and broken images: each gives a clear one-line error naming the
# file (or is read exactly as qemu-img reads it), never a crash. The same
# files go through the AddressSanitizer/UBSan build of the core.
use strict;
use warnings;
no warnings "portable";

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX ();
use QcTest;
use Test::More;
use PVE::Storage::Qcow2Chain;
use PVE::Storage::Qcow2Chain::Image;

my $dir = scratch();
chdir $dir or die;

sub fresh {
    my ($name, @cmds) = @_;
    qimg('create', '-q', '-f', 'qcow2', $name, '4M');
    qio($name, @cmds ? @cmds : ('write -P 0x5a 0 128k', 'write -P 0x5b 1M 64k'));
    return $name;
}

sub l1_entry { unpack('Q>', peek($_[0], unpack('Q>', peek($_[0], 40, 8)) + 8 * ($_[1] // 0), 8)) }

# name => [file, what the error must mention]
my %bad;

# Truncated files.
fresh('full.qcow2');
for my $len (0, 50, 100, 0x10000, 0x30000) {
    my $f = "trunc-$len.qcow2";
    system('cp', 'full.qcow2', $f) == 0 or die;
    truncate($f, $len) or die;
    $bad{$f} = qr/\Q$f\E/;
}

# Garbage after a valid magic.
{
    open(my $fh, '>:raw', 'garbage.qcow2') or die;
    srand(7);
    print $fh "QFI\xfb", join('', map { chr(int(rand(256))) } 1 .. 70000);
    close $fh;
    $bad{'garbage.qcow2'} = qr/garbage\.qcow2/;
}

# Tables past the end of the file, unaligned, or absurdly large.
my %hdr = (
    'l1-past-eof' => [40, pack('Q>', 1 << 40)],
    'l1-unaligned' => [40, pack('Q>', 0x30008)],
    'l1-huge' => [36, pack('N', 0x7fffffff)],
    'l1-too-small' => [36, pack('N', 0)],
    'rt-past-eof' => [48, pack('Q>', 1 << 40)],
    'rt-huge' => [56, pack('N', 0xffffffff)],
    'snap-count-huge' => [60, pack('N', 0xffffffff)],
    'snap-past-eof' => [60, pack('N', 1) . pack('Q>', 1 << 40)],
    'size-huge' => [24, pack('Q>', 1 << 62)],
    'unknown-incompat' => [72, pack('Q>', 1 << 5)],
    'refcount-order-7' => [96, pack('N', 7)],
    'cluster-bits-30' => [20, pack('N', 30)],
    'version-4' => [4, pack('N', 4)],
    'header-len-huge' => [100, pack('N', 0x100000)],
    'backing-off-outside' => [8, pack('Q>', 0x20000) . pack('N', 10)],
    'encrypted-aes' => [32, pack('N', 1)],
);
for my $n (sort keys %hdr) {
    my $f = "$n.qcow2";
    fresh($f);
    patch($f, @{ $hdr{$n} });
    $bad{$f} = qr/\Q$f\E/;
}

# Bad L1/L2 contents: found when reading the guest view.
{
    my $f = fresh('l2-past-eof.qcow2');
    patch($f, unpack('Q>', peek($f, 40, 8)), pack('Q>', (1 << 40) | (1 << 63)));
    $bad{$f} = qr/\Q$f\E/;

    $f = fresh('l2-unaligned.qcow2');
    patch($f, unpack('Q>', peek($f, 40, 8)), pack('Q>', (l1_entry($f) & ~(1 << 63)) + 512));
    $bad{$f} = qr/\Q$f\E/;

    $f = fresh('data-unaligned.qcow2');
    my $l2 = l1_entry($f) & 0x00fffffffffffe00;
    patch($f, $l2, pack('Q>', (unpack('Q>', peek($f, $l2, 8)) & 0x00fffffffffffe00) + 4096 | (1 << 63)));
    $bad{$f} = qr/\Q$f\E/;

    $f = fresh('compressed-past-eof.qcow2');
    $l2 = l1_entry($f) & 0x00fffffffffffe00;
    patch($f, $l2, pack('Q>', (1 << 62) | (1 << 40)));
    $bad{$f} = qr/\Q$f\E/;

    $f = fresh('compressed-garbage.qcow2');
    $l2 = l1_entry($f) & 0x00fffffffffffe00;
    my $data = unpack('Q>', peek($f, $l2, 8)) & 0x00fffffffffffe00;
    patch($f, $l2, pack('Q>', (1 << 62) | $data | (3 << 54)));
    $bad{$f} = qr/\Q$f\E/;

    qimg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', 'xl2-bad.qcow2', '4M');
    qio('xl2-bad.qcow2', 'write -P 1 0 64k');
    $l2 = l1_entry('xl2-bad.qcow2') & 0x00fffffffffffe00;
    patch('xl2-bad.qcow2', $l2 + 8, pack('Q>', 0x00000001_00000001));
    $bad{'xl2-bad.qcow2'} = qr/xl2-bad\.qcow2/;
}

# Backing chains: loops, too deep, missing, unrecorded format, bad names.
{
    qimg('create', '-q', '-f', 'qcow2', 'loop-a.qcow2', '4M');
    qimg('create', '-q', '-f', 'qcow2', '-u', '-b', 'loop-a.qcow2', '-F', 'qcow2', 'loop-b.qcow2', '4M');
    qimg('rebase', '-u', '-b', 'loop-b.qcow2', '-F', 'qcow2', 'loop-a.qcow2');
    $bad{'loop-a.qcow2'} = qr/infinite loop/;

    qimg('create', '-q', '-f', 'qcow2', 'self.qcow2', '4M');
    qimg('rebase', '-u', '-b', 'self.qcow2', '-F', 'qcow2', 'self.qcow2');
    $bad{'self.qcow2'} = qr/infinite loop/;

    # 300 overlays, each on the one before: qemu-img makes the first ones,
    # the rest are its d001 with the backing name (as long) written over,
    # byte for byte what qemu-img makes (checked on d002)
    mkdir 'deep';
    my $d = sub { sprintf('d%03d.qcow2', $_[0]) };
    qimg('create', '-q', '-f', 'qcow2', 'deep/' . $d->(0), '1M');
    qimg('create', '-q', '-f', 'qcow2', '-u', '-b', $d->($_ - 1), '-F', 'qcow2', 'deep/' . $d->($_), '1M') for 1, 2;
    my $layer = slurp('deep/' . $d->(1));
    my ($off, $len) = unpack('x8 Q> N', $layer);
    for my $i (2 .. 300) {
        substr($layer, $off, $len) = $d->($i - 1);
        if ($i == 2) { die "deep/d002.qcow2 is not d001 with another name\n" if slurp('deep/' . $d->(2)) ne $layer; next }
        open(my $fh, '>:raw', 'deep/' . $d->($i)) or die;
        print $fh $layer;
        close $fh or die;
    }
    $bad{'deep/d300.qcow2'} = qr/deeper than 256/;

    qimg('create', '-q', '-f', 'qcow2', '-u', '-b', 'nonexistent.qcow2', '-F', 'qcow2', 'missing.qcow2', '4M');
    $bad{'missing.qcow2'} = qr/missing\.qcow2.*nonexistent\.qcow2.*No such file/;

    qimg('create', '-q', '-f', 'qcow2', '-b', 'full.qcow2', '-F', 'qcow2', 'nofmt.qcow2');
    # turn the backing-format extension into an unknown one
    patch('nofmt.qcow2', 112, pack('N', 0x7e7e7e7e));
    $bad{'nofmt.qcow2'} = qr/does not record the format/;

    qimg('create', '-q', '-f', 'qcow2', '-u', '-b', 'json:{"file":{"driver":"file","filename":"/etc/passwd"}}',
        '-F', 'raw', 'json.qcow2', '4M');
    $bad{'json.qcow2'} = qr/json\.qcow2.*json: or protocol/;

    qimg('create', '-q', '-f', 'qcow2', '-u', '-b', 'nbd://localhost:10809/x', '-F', 'raw', 'proto.qcow2', '4M');
    $bad{'proto.qcow2'} = qr/proto\.qcow2.*json: or protocol/;

    qimg('create', '-q', '-f', 'qcow2', 'longname.qcow2', '4M');
    my $hl = unpack('N', peek('longname.qcow2', 100, 4));
    patch('longname.qcow2', 8, pack('Q>', 4096) . pack('N', 1024));
    patch('longname.qcow2', 4096, 'a' x 1024);
    $bad{'longname.qcow2'} = qr/longname\.qcow2.*too long/;

    qimg('create', '-q', '-f', 'qcow2', '-o', 'data_file=ext.data', 'datafile.qcow2', '4M');
    $bad{'datafile.qcow2'} = qr/datafile\.qcow2.*external data file/;

    # qemu-img's LUKS creation times PBKDF on the CPU and fails at random
    # here; the method field is what we refuse on, so set it directly.
    fresh('luks.qcow2');
    patch('luks.qcow2', 32, pack('N', 2));
    $bad{'luks.qcow2'} = qr/luks\.qcow2.*encrypted \(LUKS\)/;
}

my $asan = asan_driver();
local $ENV{ASAN_OPTIONS} = 'exitcode=99:detect_leaks=1';
local $ENV{UBSAN_OPTIONS} = 'exitcode=99:print_stacktrace=1';

for my $f (sort keys %bad) {
    my @fails;
    for my $cmd (['info', '--backing-chain', '--output=json'], ['map', '--output=json'], ['convert', '-O', 'raw']) {
        my ($rc, $out, $err) = our_cli(@$cmd, '-f', 'qcow2', $f, ($cmd->[0] eq 'convert' ? ('out.raw') : ()));
        next if $rc == 0;
        push @fails, [$cmd->[0], $rc, $err];
    }
    ok(@fails, "$f: refused") or next;
    my ($cmd, $rc, $err) = @{ $fails[0] };
    like($err, qr/\A[^\n]+\n\z/, "$f: $cmd error is one line");
    like($err, $bad{$f}, "$f: $cmd error says what and where") or diag($err);
    unlike($err, qr/\b(at .* line \d+|Segmentation|Aborted)\b/, "$f: no Perl or crash noise");

    my ($arc, $aout, $aerr) = run_cmd($asan, '-f', 'qcow2', $f);
    ok($arc != 99 && $aerr !~ /Sanitizer|runtime error/, "$f: no memory error under ASan/UBSan") or diag($aerr);
}

# The import check ("untrusted" images) calls every one of them unsafe, or
# cannot read it; never "safe".
for my $f (sort keys %bad) {
    next if $f eq 'compressed-garbage.qcow2'; # bad data, not bad metadata: QEMU reads it as an I/O error
    my $r = eval { PVE::Storage::Qcow2Chain::import_check($f, format => 'qcow2') };
    ok(!$r || !$r->{safe}, "$f: import check says not safe") or diag(explain($r));
}
{
    my $r = PVE::Storage::Qcow2Chain::import_check('full.qcow2');
    ok($r->{safe}, 'a clean self-contained image is safe to import') or diag(explain($r));
    is_deeply($r->{problems}, [], '.. with no problems');
    symlink('full.qcow2', 'link.qcow2') or die;
    $r = eval { PVE::Storage::Qcow2Chain::import_check('link.qcow2') };
    ok($r && !$r->{safe} && "@{ $r->{problems} }" =~ /link\.qcow2.*symbolic link/, 'a symlink is not followed')
        or diag(explain($r), $@);
    my ($rc, $out) = our_cli('import-check', 'missing.qcow2');
    is($rc, 4, 'import-check exit status 4 for an unsafe image');
    like($out, qr/backing file/, '.. saying why');
}

# The exception object carries code, file and operation.
eval { PVE::Storage::Qcow2Chain::info('missing.qcow2', backing_chain => 1) };
my $e = $@;
isa_ok($e, 'PVE::Storage::Qcow2Chain::Error');
is($e->code, 'notfound', 'error code');
is($e->file, 'missing.qcow2', 'error file');
is($e->op, 'open', 'error operation');
like("$e", qr/\A[^\n]+\n\z/, 'stringifies as one line ending in a newline');

# Data clusters past the end of the file read as zeros, as in QEMU.
{
    my $f = fresh('data-past-eof.qcow2');
    my $l2 = l1_entry($f) & 0x00fffffffffffe00;
    patch($f, $l2, pack('Q>', (1 << 63) | (1 << 30)));
    qimg('convert', '-f', 'qcow2', '-O', 'raw', $f, 'theirs.raw');
    my ($rc, $out, $err) = our_cli('convert', '-f', 'qcow2', '-O', 'raw', $f, 'ours.raw');
    ok($rc == 0 && same_file('ours.raw', 'theirs.raw'), 'data past EOF reads as zeros, like qemu-img') or diag($err);
}

# A zero refcount on the header cluster: a write must not allocate over the
# header; check -r all repairs it and writing works again.
{
    my $f = fresh('hdr-refcount0.qcow2');
    my $rb = unpack('Q>', peek($f, unpack('Q>', peek($f, 48, 8)), 8));
    patch($f, $rb, "\0\0");
    my ($rc, $o, $err) = our_cli('write', '-P', '0x77', $f, 3 * 1024 * 1024, 65536);
    ok($rc != 0 && $err =~ /\Q$f\E.*would overwrite its header/ && $err !~ /\n./, 'write refused, one line naming the file')
        or diag($err);
    ($rc) = qimg_ok('check', $f);
    is($rc, 2, '.. and the image is not made worse (qemu-img check still sees only the refcount error)');
    ($rc, $o, $err) = our_cli('check', '-r', 'all', $f);
    ($rc) = qimg_ok('check', $f);
    is($rc, 0, 'check -r all repairs it for qemu-img') or diag($err);
    ($rc, $o, $err) = our_cli('write', '-P', '0x77', $f, 3 * 1024 * 1024, 65536);
    is($rc, 0, '.. and writing works again') or diag($err);
    like(qio($f, 'read -P 0x77 3M 64k', 'read -P 0x5a 0 128k'), qr/read 65536/, '.. with the data in place');
}

# No refcount block for the range holding the header: a new block must not
# be put over it.
{
    my $f = fresh('no-refblock.qcow2');
    patch($f, unpack('Q>', peek($f, 48, 8)), "\0" x 8);
    my ($rc, $o, $err) = our_cli('write', '-P', '0x77', $f, 3 * 1024 * 1024, 65536);
    ok($rc != 0 && $err =~ /\Q$f\E.*would overwrite its header/, 'write refused') or diag($err);
    is((qimg_ok('check', $f))[0], 2, '.. leaving the image as it was for qemu-img check');
}

# L2 entries that point guest data at metadata (marked as owned): a write
# would overwrite the refcount table or an L2 table. Refused before any
# byte changes, as QEMU refuses it (qemu-io sees the same invalid write).
for my $case (['refcount table', sub { unpack('Q>', peek($_[0], 48, 8)) }],
              ['L2 table', sub { l1_entry($_[0]) & 0x00fffffffffffe00 }]) {
    my ($what, $target) = @$case;
    (my $f = "points-at-$what.qcow2") =~ s/ /-/g;
    fresh($f);
    my $l2 = l1_entry($f) & 0x00fffffffffffe00;
    patch($f, $l2, pack('Q>', (1 << 63) | $target->($f)));
    system('cp', $f, "$f.orig") == 0 or die;
    my ($rc, $o, $err) = our_cli('write', '-P', '0x77', $f, 0, 4096);
    ok($rc != 0 && $err =~ /\Q$f\E.*would overwrite its (\Q$what\E|L2 table or refcount block)/, "data over the $what refused")
        or diag($err);
    ok(same_file($f, "$f.orig"), '.. the file is unchanged');
    my ($qrc, $qo, $qe) = run_cmd('qemu-io', '-c', 'write -P 0x77 0 4096', $f);
    like("$qo$qe", qr/Preventing invalid write on metadata/, '.. and QEMU refuses the same write');
}

# An L1 entry that makes the refcount table an L2 table, and an L1 table
# placed over the refcount table: writes refused, nothing made worse than
# the allocation a refused write may leak (qemu-img check sees the same
# errors before and after).
{
    my $errors = sub { scalar(() = (qimg_ok('check', $_[0]))[1] =~ /^ERROR/mg) };
    my $f = fresh('l1-at-reftable.qcow2');
    patch($f, unpack('Q>', peek($f, 40, 8)), pack('Q>', (1 << 63) | unpack('Q>', peek($f, 48, 8))));
    my $before = $errors->($f);
    my ($rc, $o, $err) = our_cli('write', '-P', '0x77', $f, 1024 * 1024, 4096);
    ok($rc != 0 && $err =~ /\Q$f\E.*would overwrite its refcount table/, 'an L2 table over the refcount table: refused')
        or diag($err);
    is($errors->($f), $before, '.. no new corruption for qemu-img check');

    $f = fresh('l1-over-reftable.qcow2');
    patch($f, 40, peek($f, 48, 8));
    system('cp', $f, "$f.orig") == 0 or die;
    ($rc, $o, $err) = our_cli('write', '-P', '0x77', $f, 1024 * 1024, 4096);
    ok($rc != 0 && $err =~ /\Q$f\E.*its L1 table overlaps its refcount table/, 'an L1 table over the refcount table: refused')
        or diag($err);
    ok(same_file($f, "$f.orig"), '.. the file is unchanged');
}

# Probing the backing format only when allowed.
{
    my $info = PVE::Storage::Qcow2Chain::info('nofmt.qcow2', backing_chain => 1, probe_backing_format => 1);
    is($info->[1]{format}, 'qcow2', 'probe_backing_format => 1 opens an unrecorded qcow2 backing');
}

# The allowed-directories policy.
{
    mkdir 'store';
    qimg('create', '-q', '-f', 'qcow2', '-b', '../full.qcow2', '-F', 'qcow2', 'store/escape.qcow2');
    eval { PVE::Storage::Qcow2Chain::info('store/escape.qcow2', backing_chain => 1, allowed_dirs => ["$dir/store"]) };
    like("$@", qr/outside the allowed directories/, '.. escape out of the storage refused');
    symlink("$dir/full.qcow2", 'store/link.qcow2') or die;
    qimg('create', '-q', '-f', 'qcow2', '-b', 'link.qcow2', '-F', 'qcow2', 'store/vialink.qcow2');
    eval { PVE::Storage::Qcow2Chain::info('store/vialink.qcow2', backing_chain => 1, allowed_dirs => ["$dir/store"]) };
    like("$@", qr/outside the allowed directories/, 'symlink escape refused');
    qimg('create', '-q', '-f', 'qcow2', 'store/base.qcow2', '1M');
    qimg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'store/ok.qcow2');
    my $i = eval { PVE::Storage::Qcow2Chain::info('store/ok.qcow2', backing_chain => 1, allowed_dirs => ["$dir/store"]) };
    is(scalar(@{ $i // [] }), 2, 'backing inside the storage accepted') or diag($@);
}

# Frees and hole punches are checked like writes: an L2 entry that names
# metadata (a compressed descriptor in the header, a plain entry on the L1
# or refcount table) or an unaligned data offset stops every guest write,
# write-zeroes (with and without unmap) and discard through it before any
# byte changes (these once punched the header out, zeroed the tables, or
# wrote across the neighbouring cluster).
{
    my $M = 0x00fffffffffffe00;
    my %case = (
        'compressed-in-header' => [sub { (1 << 62) | 0x100 }, qr/its header/],
        'plain-on-l1' => [sub { unpack('Q>', peek($_[0], 40, 8)) }, qr/its L1 table/],
        'plain-on-reftable' => [sub { unpack('Q>', peek($_[0], 48, 8)) }, qr/its refcount table/],
        'owned-on-l1' => [sub { (1 << 63) | unpack('Q>', peek($_[0], 40, 8)) }, qr/its L1 table/],
        'unaligned-data' => [sub { (1 << 63) | ((unpack('Q>', peek($_[0], $_[1], 8)) & $M) + 4096) },
            qr/not cluster aligned \(guest offset 0,/],
    );
    for my $name (sort keys %case) {
        my ($entry, $why) = @{ $case{$name} };
        my $f = fresh("free-$name.qcow2");
        my $l2 = l1_entry($f) & $M;
        patch($f, $l2, pack('Q>', $entry->($f, $l2)));
        system('cp', $f, "$f.orig") == 0 or die;
        my ($qrc) = qimg_ok('check', $f);
        for my $op (['-P', '0x77'], ['-z'], ['-z', '-u'], ['--discard']) {
            my ($rc, $o, $err) = our_cli('write', @$op, $f, 0, 65536);
            ok($rc == 1 && $err =~ /\A[^\n]*'\Q$f\E': corrupt image: [^\n]*$why[^\n]*refused[^\n]*\n\z/,
                "$name: write @$op refused, one line saying why") or diag($err);
            ok(same_file($f, "$f.orig"), '.. not a byte changed');
            is((qimg_ok('check', $f))[0], $qrc, '.. qemu-img check as before');
        }
    }
    # QEMU stops the same write on the unaligned entry (and marks the image corrupt).
    my ($rc, $o, $e) = run_cmd('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x77 0 64k', 'free-unaligned-data.qcow2');
    like("$o$e", qr/Data cluster offset 0x[0-9a-f]+ unaligned/, 'qemu-io refuses the unaligned write too');
}

# A backing file reached through a symlink that another process keeps
# pointing inside and outside the allowed directory, while reads run under
# the policy: whatever the timing, none returns the outside file's data (the
# real path is opened beneath the allowed directory following no symlink,
# not checked first and opened after). The inside file lies deep, so
# resolving the link takes long and a check-then-open leaves a wide window.
{
    mkdir 'race';
    mkdir 'race/store';
    my $deep = join('/', ('d') x 60);
    system('mkdir', '-p', "race/store/$deep") == 0 or die;
    qimg('create', '-q', '-f', 'qcow2', "race/store/$deep/inside.qcow2", '64k');
    qio("race/store/$deep/inside.qcow2", 'write -q -P 0x11 0 64k');
    qimg('create', '-q', '-f', 'qcow2', 'race/outside.qcow2', '64k');
    qio('race/outside.qcow2', 'write -q -P 0x99 0 64k');
    symlink("$deep/inside.qcow2", 'race/store/link.qcow2') or die;
    qimg('create', '-q', '-f', 'qcow2', '-b', 'link.qcow2', '-F', 'qcow2', 'race/store/top.qcow2');
    my $pid = fork() // die "fork: $!";
    if (!$pid) {
        for (;;) {
            for my $t ("$deep/inside.qcow2", "$dir/race/outside.qcow2") {
                symlink($t, 'race/store/link.tmp') or POSIX::_exit(1);
                rename('race/store/link.tmp', 'race/store/link.qcow2') or POSIX::_exit(1);
                select(undef, undef, undef, 0.0001);
            }
        }
    }
    my %seen = (inside => 0, outside => 0, refused => 0, other => 0);
    for my $i (1 .. 1000) {
        unlink 'race/out.raw';
        my $ok = eval {
            PVE::Storage::Qcow2Chain::convert_raw('race/store/top.qcow2', 'race/out.raw', allowed_dirs => ["$dir/race/store"]);
            1;
        };
        my $b = $ok ? substr(slurp('race/out.raw'), 0, 1) : '';
        $seen{ !$ok ? 'refused' : $b eq "\x99" ? 'outside' : $b eq "\x11" ? 'inside' : 'other' }++;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    is($seen{outside} + $seen{other}, 0, "1000 reads while a symlink swaps: none returned the outside file's data")
        or diag(explain(\%seen));
    ok($seen{refused} > 0, '.. the link did point outside meanwhile (those reads were refused)') or diag(explain(\%seen));
}

# FIFOs: nothing waits on one. A FIFO as backing file (with and without the
# directory policy) or as the image is refused at once, one line; a FIFO
# next to a volume does not stop a delete (its scan for other users of the
# snapshot opens every file there).
{
    mkdir 'fifo';
    POSIX::mkfifo('fifo/pipe', 0600) or die "mkfifo: $!";
    qimg('create', '-q', '-f', 'qcow2', '-u', '-b', 'pipe', '-F', 'qcow2', 'fifo/ov.qcow2', '1M');
    my @cli = ('timeout', '60', $^X, '-Mblib=' . (BIN =~ s{/bin/[^/]+$}{}r), BIN);
    for my $policy ([], ['--allowed-dir', "$dir/fifo"]) {
        for my $c (['info', '--backing-chain'], ['map'], ['check'], ['commit'], ['rebase', '-b', ''],
                   ['convert', '-O', 'raw', 'fifo/ov.qcow2', 'fifo/x.raw'], ['write', '-P', '1', 'fifo/ov.qcow2', 0, 512]) {
            my @args = @$c;
            push @args, 'fifo/ov.qcow2' if $args[0] !~ /^(convert|write)$/;
            splice(@args, 1, 0, @$policy);
            my ($rc, $o, $e) = run_cmd(@cli, @args);
            ok($rc == 1 && $e =~ /\A[^\n]*'fifo\/pipe' is not a regular file or a block device\n\z/,
                "FIFO as backing file: @$c @$policy refused at once, one line") or diag("rc $rc: $e");
        }
    }
    my ($rc, $o, $e) = run_cmd(@cli, 'info', 'fifo/pipe');
    ok($rc == 1 && $e =~ /'fifo\/pipe' is not a regular file or a block device/, 'FIFO as the image: refused at once')
        or diag("rc $rc: $e");
    mkdir 'fifo/vol';
    qimg('create', '-q', '-f', 'qcow2', 'fifo/vol/vm-1-disk-0.qcow2', '1M');
    PVE::Storage::Qcow2Chain::snapshot_create('fifo/vol/vm-1-disk-0.qcow2', $_) for ('a', 'b');
    POSIX::mkfifo('fifo/vol/zz-pipe', 0600) or die "mkfifo: $!";
    POSIX::mkfifo('fifo/vol/snap-c-vm-1-disk-0.qcow2', 0600) or die "mkfifo: $!";
    ($rc, $o, $e) = run_cmd(@cli, 'snapshot', '-d', 'a', 'fifo/vol/vm-1-disk-0.qcow2');
    is($rc, 0, 'snapshot -d with FIFOs next to the volume finishes') or diag("rc $rc: $e");
    ok(!-e 'fifo/vol/snap-a-vm-1-disk-0.qcow2', '.. and deleted the snapshot');
}

# Names and paths with a NUL byte: the C core would read "a\0b" as "a".
{
    qimg('create', '-q', '-f', 'qcow2', 'nul.qcow2', '1M');
    PVE::Storage::Qcow2Chain::snapshot_create('nul.qcow2', 'a');
    for my $c (['snapshot_create', sub { PVE::Storage::Qcow2Chain::snapshot_create('nul.qcow2', "a\0b") }],
               ['snapshot_delete', sub { PVE::Storage::Qcow2Chain::snapshot_delete('nul.qcow2', "a\0b") }],
               ['snapshot_rollback', sub { PVE::Storage::Qcow2Chain::snapshot_rollback('nul.qcow2', "a\0b") }],
               ['snapshot_rename', sub { PVE::Storage::Qcow2Chain::snapshot_rename('nul.qcow2', 'a', "c\0d") }],
               ['info', sub { PVE::Storage::Qcow2Chain::info("nul.qcow2\0.x") }],
               ['convert_raw', sub { PVE::Storage::Qcow2Chain::convert_raw('nul.qcow2', "nul-out.raw\0x") }],
               ['rebase', sub { PVE::Storage::Qcow2Chain::rebase('nul.qcow2', backing_file => "x\0y", backing_fmt => 'qcow2') }],
               ['allowed_dirs', sub { PVE::Storage::Qcow2Chain::info('nul.qcow2', allowed_dirs => ["$dir\0/etc"]) }],
               ['Image->open', sub { PVE::Storage::Qcow2Chain::Image->open("nul.qcow2\0x") }]) {
        my ($what, $call) = @$c;
        eval { $call->() };
        my $e = $@;
        ok(ref($e) && $e->code eq 'invalid' && "$e" =~ /\A[^\n]*'[^'\n]*\\0[^'\n]*' contains a NUL byte; refused\n\z/,
            "$what: a NUL byte is refused") or diag("$e");
    }
    ok(-e 'snap-a-nul.qcow2' && !-e 'nul-out.raw', '.. nothing was done in place of the cut name');
    is(PVE::Storage::Qcow2Chain::snapshot_list('nul.qcow2')->{nodes}->@*, 2, '.. the volume still has snapshot a and current');
}

done_testing();
