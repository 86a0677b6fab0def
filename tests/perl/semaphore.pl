#!/usr/bin/perl
# The Cache::Memcached::Semaphore protocol (CPAN 0.3), as memsem's users run it, over a real
# Cache::Memcached object: the interop tests (tests/it/interop.rs) and the benchmarks
# (benches/scenarios.rs) contend with it. The CPAN module itself is not packaged by Debian;
# this is its protocol exactly (see FACTS.md):
#   key      "__lock__" . NAME, given to Cache::Memcached (its namespace is prefixed on the
#            wire but not hashed for routing)
#   acquire  add(key, token) with NO expiry; token = 32 lowercase hex (MD5 of time, pid, rand)
#   release  get(key), compare with our token, delete(key) (no timeout argument)
#
# Usage: semaphore.pl MODE SERVERS NAMESPACE NAME [ARGS]
#   SERVERS  host:port:weight,...  (Cache::Memcached servers => [["host:port", weight], ...])
#   worker NAME ITERATIONS COUNTER [POLL_US]
#            ITERATIONS times: poll the add every POLL_US microseconds (default 2000) until
#            it succeeds, then in the critical section create COUNTER.inside with
#            create-new semantics (an existing file means somebody else is inside: an
#            overlap), increment the number in COUNTER, remove the marker, release.
#            Prints "perl worker: acquisitions N attempts A overlaps O lost L".
#   try      one add: prints "acquired" (and releases at once) or "busy".
#   hold RELEASE_FILE
#            polls the add for up to 30 s, prints "held TOKEN", waits (up to 120 s) until
#            RELEASE_FILE exists, releases and prints "released".
#   where    prints "server HOST:PORT value VALUE" (or "value -"): the server
#            Cache::Memcached picks for the key, and what get() returns there.
#   bench PAIRS
#            PAIRS uncontended acquire+release pairs, each timed; prints
#            "perl bench: pairs N median_us M" (the lock must be free).
# Exit codes: 0 ok, 2 usage, 3 a Perl module is missing (the message names the Debian
# package), 4 an overlap or a lost lock was seen, 5 a memcached error or a timeout.
use strict;
use warnings;

use Digest::MD5 qw(md5_hex);
use Fcntl qw(O_CREAT O_EXCL O_WRONLY);
use Socket qw(unpack_sockaddr_in inet_ntoa);
use Time::HiRes qw(usleep time);

unless ( eval { require Cache::Memcached; 1 } ) {
    print STDERR "Perl module Cache::Memcached is missing: install it with"
      . " 'apt-get install -y libcache-memcached-perl' ($@)\n";
    exit 3;
}

sub usage {
    print STDERR "usage: $0 worker|try|hold|where|bench host:port:weight,... NAMESPACE NAME"
      . " [ARGS]\n";
    exit 2;
}

@ARGV >= 4 or usage();
my ( $mode, $server_list, $namespace, $name, @rest ) = @ARGV;

my @servers;
for my $entry ( split /,/, $server_list ) {
    $entry =~ /^(.+:\d+):(\d+)$/ or usage();
    push @servers, [ $1, $2 + 0 ];
}
@servers or usage();
# Cache::Memcached 1.30 uses a lone server entry as is, without its bucket expansion: a
# [host, weight] pair there becomes "ARRAY(0x...)" and nothing connects. Users with one
# server write the plain "host:port" string.
@servers = ( $servers[0][0] ) if @servers == 1;

my $memd = Cache::Memcached->new(
    {
        servers   => \@servers,
        namespace => $namespace,
    }
);
my $key = '__lock__' . $name;

# Cache::Memcached::Semaphore's token: MD5 of time and pid (plus rand, as its users patch in).
sub new_token {
    return md5_hex( time() . $$ . rand() );
}

# One add, no expiry. 1 = taken, 0 = held by somebody, dies on a server error.
sub try_add {
    my ($token) = @_;
    my $added = $memd->add( $key, $token );
    defined $added or fail("add $key: no answer from memcached");
    return $added ? 1 : 0;
}

# get, compare, delete. Returns 1 when our token was there and is now deleted.
sub release {
    my ($token) = @_;
    my $value = $memd->get($key);
    if ( !defined $value || $value ne $token ) {
        warn "lock $key is not ours any more: " . ( defined $value ? $value : 'gone' ) . "\n";
        return 0;
    }
    $memd->delete($key) or fail("delete $key failed");
    return 1;
}

sub fail {
    print STDERR "semaphore.pl: @_\n";
    exit 5;
}

sub poll_acquire {
    my ( $token, $poll_us, $max_seconds ) = @_;
    my $deadline = time() + $max_seconds;
    my $attempts = 1;
    until ( try_add($token) ) {
        fail("no lock within $max_seconds s") if time() > $deadline;
        usleep($poll_us);    # microseconds
        $attempts++;
    }
    return $attempts;
}

$| = 1;

if ( $mode eq 'worker' ) {
    my ( $iterations, $counter, $poll_us ) = @rest;
    defined $counter or usage();
    $poll_us = 2000 unless defined $poll_us;
    my $inside = "$counter.inside";
    my ( $acquired, $attempts, $overlaps, $lost ) = ( 0, 0, 0, 0 );
    for ( 1 .. $iterations ) {
        my $token = new_token();
        $attempts += poll_acquire( $token, $poll_us, 120 );
        $acquired++;
        my $alone = sysopen( my $marker, $inside, O_WRONLY | O_CREAT | O_EXCL );
        $overlaps++ unless $alone;
        my $count = 0;
        if ( open my $in, '<', $counter ) {
            my $text = <$in>;
            $count = $1 if defined $text && $text =~ /(\d+)/;
            close $in;
        }
        open my $out, '>', $counter or fail("cannot write $counter: $!");
        print {$out} $count + 1;
        close $out or fail("cannot write $counter: $!");
        if ($alone) {
            close $marker;
            unlink $inside or fail("cannot remove $inside: $!");
        }
        $lost++ unless release($token);
    }
    print "perl worker: acquisitions $acquired attempts $attempts overlaps $overlaps"
      . " lost $lost\n";
    exit( $overlaps || $lost ? 4 : 0 );
}
elsif ( $mode eq 'try' ) {
    my $token = new_token();
    if ( try_add($token) ) {
        release($token) or exit 4;
        print "acquired\n";
    }
    else {
        print "busy\n";
    }
    exit 0;
}
elsif ( $mode eq 'hold' ) {
    my ($release_file) = @rest;
    defined $release_file or usage();
    my $token = new_token();
    poll_acquire( $token, 2000, 30 );
    print "held $token\n";
    my $deadline = time() + 120;
    until ( -e $release_file ) {
        fail("$release_file did not appear within 120 s") if time() > $deadline;
        usleep(5_000);
    }
    release($token) or exit 4;
    print "released\n";
    exit 0;
}
elsif ( $mode eq 'where' ) {
    my $sock = $memd->get_sock($key) or fail("no server for $key");
    my ( $port, $address ) = unpack_sockaddr_in( getpeername($sock) );
    my $value = $memd->get($key);
    print "server " . inet_ntoa($address) . ":$port value "
      . ( defined $value ? $value : '-' ) . "\n";
    exit 0;
}
elsif ( $mode eq 'bench' ) {
    my ($pairs) = @rest;
    defined $pairs or usage();
    my @times;
    for ( 1 .. $pairs ) {
        my $token   = new_token();
        my $started = time();
        try_add($token) or fail("$key is held: the bench needs a free lock");
        release($token) or exit 4;
        push @times, time() - $started;
    }
    @times = sort { $a <=> $b } @times;
    my $median = $times[ int( @times / 2 ) ] * 1e6;
    printf "perl bench: pairs %d median_us %.1f\n", scalar @times, $median;
    exit 0;
}
usage();
