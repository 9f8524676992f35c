# Shipping: the Debian package builds from a clean copy of the tree with
# Debian's build tools, installs here, and runs the demo and --version from
# the installed files (the plugin lands where Proxmox VE loads custom
# plugins); `make dist` and `make distcheck` give a clean CPAN-style tarball.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp qw(tempdir);
use QcTest;
use Test::More;

my $root = "$FindBin::Bin/..";
my $tmp = tempdir('qc-pkg-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $src = "$tmp/src";
mkdir $src;
die "not a git checkout\n" if !-e "$root/.git";
system("cd '$root' && git ls-files -z | xargs -0 tar -cf - | (cd '$src' && tar -xf -)") == 0 or die "copy failed\n";

# ---- Debian package ----
my ($rc, $out, $err) = run_cmd('sh', '-c', "cd '$src' && dpkg-buildpackage -us -uc -b");
is($rc, 0, 'dpkg-buildpackage -us -uc -b builds the package') or diag(substr("$out$err", -3000));
my ($deb) = grep { !/dbgsym/ } glob("$tmp/libpve-storage-qcow2chain-perl_*.deb");
ok($deb, 'a binary package came out');
($rc, $out, $err) = run_cmd('dpkg', '-i', $deb);
is($rc, 0, 'the package installs') or diag("$out$err");
my $guard = bless {}, 'Remover';
sub Remover::DESTROY { system('dpkg', '-r', 'libpve-storage-qcow2chain-perl') }

{
    local $ENV{PERL5LIB}; # the installed files only
    ($rc, $out, $err) = run_cmd('/usr/bin/qcow2-chain', '--version');
    is($rc, 0, 'qcow2-chain --version runs from the installed files') or diag($err);
    like($out, qr/^qcow2-chain version \d+\.\d+\.\d+ \(core \d+\.\d+\.\d+\)$/m, '.. and names the version');
    my $d = tempdir('qc-pkg-demo-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    ($rc, $out, $err) = run_cmd('/usr/bin/qcow2-chain', 'demo', $d);
    is($rc, 0, 'the demo runs from the installed files') or diag("$out$err");
    like($out, qr/^verified:/m, '.. and verifies itself');
    ($rc, $out, $err) = run_cmd('perl', '-e', 'require PVE::Storage::Qcow2Chain; print $INC{"PVE/Storage/Qcow2Chain.pm"}, "\n"');
    like($out, qr{^/usr/lib/}, 'the Perl API loads from the installed files');
}
ok(-f '/usr/share/perl5/PVE/Storage/Custom/Qcow2ChainPlugin.pm', "the plugin is in Proxmox VE's custom-plugin directory");
ok(-f '/usr/share/perl5/PVE/Storage/Custom/Qcow2ChainLVMPlugin.pm', '.. and so is the LVM one');
ok(-f '/usr/share/man/man1/qcow2-chain.1p.gz', 'the qcow2-chain(1) man page is installed');
ok(-f '/usr/share/bash-completion/completions/qcow2-chain', 'bash completion is installed');
undef $guard;
ok(!-e '/usr/bin/qcow2-chain', 'the package removes cleanly');

# ---- CPAN-style tarball ----
my $d2 = "$tmp/dist";
mkdir $d2;
system("cd '$root' && git ls-files -z | xargs -0 tar -cf - | (cd '$d2' && tar -xf -)") == 0 or die;
($rc, $out, $err) = run_cmd('sh', '-c', "cd '$d2' && perl Makefile.PL >/dev/null && make dist && make distcheck");
is($rc, 0, 'make dist and make distcheck run') or diag("$out$err");
unlike($out, qr/^Not in MANIFEST|^No such file/m, 'MANIFEST matches the tree');
my ($tgz) = glob("$d2/PVE-Storage-Qcow2Chain-*.tar.gz");
ok($tgz, 'the tarball is there');
my @inside = map { s{^[^/]+/}{}r } grep { !m{/$} } split /\n/, `tar -tzf '$tgz'`;
open(my $fh, '<', "$root/MANIFEST") or die;
my @man = grep { length } map { chomp; s/\s.*//r } <$fh>;
close $fh;
is_deeply([sort @inside], [sort(@man, 'META.yml', 'META.json')], 'the tarball holds exactly MANIFEST (and META)');
done_testing();
