# Every module and the command line have valid POD.
use strict;
use warnings;

use Test::More;
use Test::Pod 1.00;

all_pod_files_ok(all_pod_files(qw(lib bin)));
