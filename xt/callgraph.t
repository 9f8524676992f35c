# The files of the C core call each other one way: the file-level graph
# built from nm of src/*.o (who defines a symbol, who uses it) has no cycle,
# and every call goes to the same or a lower layer of src/README.md.
# Needs the build (make) first.
use strict;
use warnings;

use Test::More;

my @obj = sort glob('src/*.o');
plan skip_all => 'build first (make): no src/*.o' unless @obj;
for my $c (glob('src/*.c')) {
    (my $o = $c) =~ s/\.c$/.o/;
    plan skip_all => "$o is older than $c: run make" if !-f $o || -M $o > -M $c;
}

my (%def, %uses);
for my $o (@obj) {
    (my $f = $o) =~ s{^src/(.*)\.o$}{$1};
    for (`nm -P $o`) {
        my ($sym, $type) = split;
        next unless defined $type;
        if ($type eq 'U') { $uses{$f}{$sym} = 1 }
        elsif ($type =~ /^[A-TV-Z]$/) { $def{$sym} = $f }   # global: upper case
    }
    die "nm failed on $o\n" if $?;
}
my %edge;    # file -> file -> a symbol that makes the edge
for my $f (keys %uses) {
    for my $sym (sort keys %{ $uses{$f} }) {
        my $g = $def{$sym};
        next if !defined $g || $g eq $f;
        $edge{$f}{$g} //= $sym;
    }
}

# Tarjan's strongly connected components: every one of more than one file is a loop.
my ($index, @stack, %idx, %low, %on, @scc) = (0);
my $visit;
$visit = sub {
    my ($v) = @_;
    $idx{$v} = $low{$v} = $index++;
    push @stack, $v;
    $on{$v} = 1;
    for my $w (sort keys %{ $edge{$v} || {} }) {
        if (!defined $idx{$w}) { $visit->($w); $low{$v} = $low{$w} if $low{$w} < $low{$v} }
        elsif ($on{$w}) { $low{$v} = $idx{$w} if $idx{$w} < $low{$v} }
    }
    if ($low{$v} == $idx{$v}) {
        my @c;
        while (1) { my $w = pop @stack; delete $on{$w}; push @c, $w; last if $w eq $v }
        push @scc, [sort @c] if @c > 1;
    }
};
my @files = map { m{^src/(.*)\.o$} ? $1 : () } @obj;
$visit->($_) for grep { !defined $idx{$_} } @files;

# One cycle inside a component, as "a.c -sym-> b.c -sym-> ... a.c" (shortest back to the start).
sub cycle {
    my ($comp) = @_;
    my %in = map { $_ => 1 } @$comp;
    my $start = $comp->[0];
    my %prev = ($start => undef);
    my @queue = ($start);
    while (@queue) {
        my $v = shift @queue;
        for my $w (sort keys %{ $edge{$v} }) {
            next unless $in{$w};
            if ($w eq $start) {
                my @path = ($v);
                unshift @path, $prev{ $path[0] } while defined $prev{ $path[0] };
                push @path, $start;
                return join '', map { ($_ ? " -$edge{$path[$_-1]}{$path[$_]}-> " : '') . "$path[$_].c" } 0 .. $#path;
            }
            next if exists $prev{$w};
            $prev{$w} = $v;
            push @queue, $w;
        }
    }
}

is(scalar @scc, 0, 'no loop of calls between the files of src/')
    or diag(join "\n", map { report($_) } @scc);

# The loop, then every call between files of the component, to see where to cut.
sub report {
    my ($comp) = @_;
    my %in = map { $_ => 1 } @$comp;
    my @calls;
    for my $f (@$comp) {
        for my $g (grep { $in{$_} } sort keys %{ $edge{$f} }) {
            push @calls, "    $f.c -> $g.c: " . join(' ', grep { ($def{$_} // '') eq $g } sort keys %{ $uses{$f} });
        }
    }
    return join "\n", 'loop among ' . join(' ', map {"$_.c"} @$comp) . ':', '  ' . cycle($comp), @calls;
}

# src/README.md: numbered layers, lowest first, naming their files in backquotes.
my %layer;
open(my $fh, '<', 'src/README.md') or die "src/README.md: $!\n";
my $n;
while (<$fh>) {
    $n = $1 if /^(\d+)\. /;
    last if /^\S/ && !/^\d+\. / && $n;
    next unless $n;
    $layer{$1} //= $n while /`(\w+)\.c`/g;
}
close $fh;
my @unlisted = grep { !$layer{$_} } @files;
is("@unlisted", '', 'src/README.md places every file of src/ in a layer');
my @up;
for my $f (sort grep { $layer{$_} } keys %edge) {
    push @up, map {"$f.c (layer $layer{$f}) -$edge{$f}{$_}-> $_.c (layer $layer{$_})"}
        grep { $layer{$_} && $layer{$_} > $layer{$f} } sort keys %{ $edge{$f} };
}
is(scalar @up, 0, 'no file calls a higher layer of src/README.md') or diag(join "\n", @up);
done_testing();
