# The command line keeps qemu-img's conventions: -q, -p, one-line errors,
# exit codes, qemu-io's pattern bytes; and `snapshot -l` draws each node of
# the tree once, with the date each snapshot was taken, which later
# operations on the tree do not change.
use strict;
use warnings;
no warnings "portable";

use FindBin;
use lib "$FindBin::Bin/lib";

use QcTest;
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep);

my $dir = scratch();
chdir $dir or die;

# ---- check -q: nothing printed, the exit status as qemu-img's ----------
qimg('create', '-q', '-f', 'qcow2', 'clean.qcow2', '4M');
qio('clean.qcow2', 'write -q -P 1 0 192k');
system('cp', 'clean.qcow2', 'leak.qcow2') == 0 or die;
# forget the first data cluster in the L2 table: its refcount leaks
my $l2 = unpack('Q>', peek('leak.qcow2', unpack('Q>', peek('leak.qcow2', 40, 8)), 8)) & 0x00fffffffffffe00;
patch('leak.qcow2', $l2, "\0" x 8);
for my $f ('clean.qcow2', 'leak.qcow2') {
    my ($qrc, $qo, $qe) = qimg_ok('check', '-q', $f);
    my ($rc, $o, $e) = our_cli('check', '-q', $f);
    is($rc, $qrc, "check -q $f: exit $qrc like qemu-img");
    is("$o$e", "$qo$qe", "check -q $f: prints what qemu-img prints (nothing)");
}

# ---- convert -p: accepted; no bar when the output is not a terminal ----
{
    my ($rc, $o, $e) = our_cli('convert', '-p', '-O', 'raw', 'clean.qcow2', 'ours.raw');
    is($rc, 0, 'convert -p works') or diag($e);
    is($o, '', '.. silent when stdout is not a terminal');
    qimg('convert', '-O', 'raw', 'clean.qcow2', 'theirs.raw');
    ok(same_file('ours.raw', 'theirs.raw'), '.. same bytes as qemu-img convert');
}

# ---- errors: one line, exit 1 ------------------------------------------
for my $c (['info', '--bogus', 'clean.qcow2'], ['check', '-x', 'clean.qcow2'], ['snapshot', '-l', '--output'],
           ['convert', '-O', 'vmdk', 'clean.qcow2', 'x'], ['info', 'missing.qcow2']) {
    my ($rc, $o, $e) = our_cli(@$c);
    is($rc, 1, "@$c: exit 1");
    like($e, qr/\Aqcow2-chain: [^\n]+\n\z/, "@$c: one line on stderr") or diag($e);
}

# ---- write -P: a byte, as qemu-io takes it ------------------------------
for my $p ('300', '0x1ff', 'abc', '-1') {
    my ($rc, $o, $e) = our_cli('write', '-P', $p, 'clean.qcow2', 0, 512);
    ok($rc == 1 && $e =~ /\A[^\n]*'\Q$p\E' is not a valid pattern byte\n\z/, "write -P $p refused") or diag($e);
}
{
    my ($rc, $o, $e) = our_cli('write', '-P', '0xff', 'clean.qcow2', 0, 512);
    is($rc, 0, 'write -P 0xff works') or diag($e);
    like(qio('clean.qcow2', 'read -P 0xff 0 512'), qr/read 512/, '.. and wrote 0xff (qemu-io reads it)');
    ($rc, $o, $e) = our_cli('write', '-P', '7', 'clean.qcow2', 512, 512);
    like(qio('clean.qcow2', 'read -P 7 512 512'), qr/read 512/, 'write -P 7 (decimal) wrote 7');
}

# ---- snapshot -l: a linked clone's base, each node drawn once ----------
mkdir 'base';
qimg('create', '-q', '-f', 'qcow2', 'base/base-300-disk-0.qcow2', '1M');
mkdir 'vm';
qimg('create', '-q', '-f', 'qcow2', '-b', '../base/base-300-disk-0.qcow2', '-F', 'qcow2', 'vm/vm-301-disk-0.qcow2');
my $V = 'vm/vm-301-disk-0.qcow2';
my $t0 = time;
for my $s ('s1', 's2') {
    my ($rc, $o, $e) = our_cli('snapshot', '-c', $s, $V);
    is($rc, 0, "snapshot -c $s") or diag($e);
}
my $t1 = time;
my ($rc, $tree, $err) = our_cli('snapshot', '-l', $V);
is($rc, 0, 'snapshot -l') or diag($err);
is(scalar(() = $tree =~ /-> s1\b/g), 1, 's1 drawn once') or diag($tree);
is(scalar(() = $tree =~ /-> s2\b/g), 1, 's2 drawn once') or diag($tree);
is(scalar(() = $tree =~ /-> current\b/g), 1, 'current drawn once') or diag($tree);
like($tree, qr/base-300-disk-0\.qcow2 \(backing file outside/, "the clone's base is shown as such") or diag($tree);

# ---- dates: when taken, kept through deletes of either kind ------------
sub dates {
    my ($vol) = @_;
    my ($rc, $o, $e) = our_cli('snapshot', '-l', '--output=json', $vol);
    die "snapshot -l: $e" if $rc;
    return { map { defined $_->{name} && $_->{kind} eq 'snapshot' ? ($_->{name} => $_->{'date-sec'}) : () }
        @{ decode_json($o)->{nodes} } };
}
my $d = dates($V);
ok($d->{s1} >= $t0 && $d->{s1} <= $t1 && $d->{s2} >= $t0 && $d->{s2} <= $t1, 'dates are the times the snapshots were taken')
    or diag(explain($d), " $t0..$t1");
qimg('create', '-q', '-f', 'qcow2', 'w.qcow2', '1M');
qio('w.qcow2', 'write -q -P 1 0 512k');
for my $s ('a1', 'a2') {
    our_cli('snapshot', '-c', $s, 'w.qcow2');
    qio('w.qcow2', 'write -q -P 2 0 64k'); # the commit of a2 into a1 then writes
}
my $w = dates('w.qcow2');
sleep 1.2; # a changed mtime would show now
for my $c ([$V, 's1', 'stream', 's2', $d->{s2}], ['w.qcow2', 'a1', 'commit', 'a2', $w->{a2}]) {
    my ($vol, $del, $method, $kept, $date) = @$c;
    my ($rc, $o, $e) = our_cli('snapshot', '-d', $del, "--method=$method", $vol);
    is($rc, 0, "delete $del ($method)") or diag($e);
    is(dates($vol)->{$kept}, $date, "$kept keeps its date after the $method delete");
    is((qimg_ok('check', $method eq 'commit' ? "snap-$kept-$vol" : "vm/snap-$kept-vm-301-disk-0.qcow2"))[0], 0,
        "$kept clean for qemu-img check");
}

# ---- --allowed-dir: the API's directory policy on the command line -----
# An image whose backing name leads out of the directory: commit would
# write into that file (as qemu-img commit does). With --allowed-dir every
# command that opens the chain refuses, and the outside file is untouched.
{
    mkdir 'policy';
    qimg('create', '-q', '-f', 'qcow2', 'host-file.qcow2', '1M');
    qio('host-file.qcow2', 'write -q -P 0x33 0 1M');
    system('cp', 'host-file.qcow2', 'host-file.orig') == 0 or die;
    qimg('create', '-q', '-f', 'qcow2', '-b', '../host-file.qcow2', '-F', 'qcow2', 'policy/evil.qcow2');
    qio('policy/evil.qcow2', 'write -q -P 0x66 0 1M');
    my @pol = ('--allowed-dir', "$dir/policy");
    for my $c (['info', '--backing-chain'], ['map'], ['check'], ['commit'], ['rebase', '-b', ''],
               ['convert', '-O', 'raw', 'policy/evil.qcow2', 'policy/x.raw'], ['write', '-P', '1', 'policy/evil.qcow2', 0, 512],
               ['snapshot', '-c', 's1']) {
        my @args = @$c;
        push @args, 'policy/evil.qcow2' if $args[0] !~ /^(convert|write)$/;
        splice(@args, 1, 0, @pol);
        my ($rc, $o, $e) = our_cli(@args);
        ok($rc == 1 && $e =~ /\A[^\n]*resolves to '\Q$dir\E\/host-file\.qcow2', outside the allowed directories\n\z/,
            "@$c --allowed-dir: refused, one line") or diag("rc $rc: $e");
    }
    ok(same_file('host-file.qcow2', 'host-file.orig'), '.. the host file is untouched');
    my ($rc, $o, $e) = our_cli('info', '--backing-chain', '--allowed-dir', "$dir/policy", '--allowed-dir', $dir,
        'policy/evil.qcow2');
    is($rc, 0, 'a second --allowed-dir admits the directory it names') or diag($e);
    ($rc, $o, $e) = our_cli('commit', 'policy/evil.qcow2');
    ok($rc == 0 && !same_file('host-file.qcow2', 'host-file.orig'), 'without it commit writes into the host file, as qemu-img does');
    ($rc, $o) = our_cli('--help');
    like($o, qr/commit\s+writes\s+into it.*--allowed-dir DIR/s, '--help says that commit writes into backing files and how to confine them');
    ($rc, $o) = our_cli('commit', '--help');
    like($o, qr/writes into the file FILE's backing name names.*--allowed-dir DIR/s, 'commit --help says it too');
    ($rc, $o) = our_cli('rebase', '--help');
    like($o, qr/reads its old backing chain and the new one.*--allowed-dir DIR/s, 'rebase --help says what it reads and writes');
    my $pod = slurp(BIN);
    like($pod, qr/=head1 UNTRUSTED IMAGES\n.*commit\S* writes into the backing file.*--allowed-dir DIR/s,
        'the man page has it');
    like($pod, qr/=item B<commit>\n[^=]*B<writes into the backing file>/, '.. under commit too');
}

# ---- check: a backing file that cannot be opened fails as in qemu-img --
{
    qimg('create', '-q', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', 'orphan.qcow2', '1M');
    my ($qrc, $qo, $qe) = qimg_ok('check', 'orphan.qcow2');
    my ($rc, $o, $e) = our_cli('check', 'orphan.qcow2');
    is($rc, $qrc, "check with a missing backing file: exit $qrc like qemu-img");
    is($e =~ s/^qcow2-chain: //r, $qe =~ s/^qemu-img: //r, '.. with its message');
}

done_testing();
