#!/usr/bin/perl
# Stores keys through a real memcached client library, so that a test can ask each server
# which keys it received and compare with memsem's routing (tests/it/routing.rs).
#
# Usage: agree.pl LIBRARY SERVERS KEYFILE
#   LIBRARY  cache-memcached | cache-memcached-fast | libmemcached
#   SERVERS  host:port:weight,...   (IPv4 or host names; order matters), or
#            /path/to.sock:weight   for a unix-socket server
#   KEYFILE  one hex-encoded key per line (raw bytes)
#
# Each key is stored with the value "1", without namespace. The libraries are configured as
# their users do:
#   cache-memcached       Cache::Memcached, servers => [[ "h:p", w ], ...]
#   cache-memcached-fast  Cache::Memcached::Fast, servers => [{ address => "h:p", weight => w }]
#                         (default mode, ketama_points => 0)
#   libmemcached          Memcached::libmemcached (libmemcached 1.1.4) with
#                         MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED = 1 and
#                         memcached_server_add_with_weight, in list order
# Prints "LIBRARY stored N keys" and exits 0 when every key was stored. Exit codes: 2 usage,
# 3 a Perl module is missing (the message names the Debian package), 4 a store failed.
use strict;
use warnings;

my %package = (
    'cache-memcached'      => [ 'Cache::Memcached',       'libcache-memcached-perl' ],
    'cache-memcached-fast' => [ 'Cache::Memcached::Fast', 'libcache-memcached-fast-perl' ],
    'libmemcached'         => [ 'Memcached::libmemcached', 'libmemcached-libmemcached-perl' ],
);

sub usage {
    print STDERR "usage: $0 cache-memcached|cache-memcached-fast|libmemcached"
      . " host:port:weight,... KEYFILE\n";
    exit 2;
}

@ARGV == 3 or usage();
my ( $library, $server_list, $key_file ) = @ARGV;
my $wanted = $package{$library} or usage();
my ( $module, $apt ) = @$wanted;
unless ( eval "require $module; 1" ) {
    print STDERR "Perl module $module is missing: install it with"
      . " 'apt-get install -y $apt' ($@)\n";
    exit 3;
}

my @servers;
for my $entry ( split /,/, $server_list ) {
    if ( $entry =~ m{^(/.+):(\d+)$} ) {
        push @servers, { socket => $1, weight => $2 + 0 };
        next;
    }
    $entry =~ /^(.+):(\d+):(\d+)$/ or usage();
    push @servers, { host => $1, port => $2 + 0, weight => $3 + 0 };
}
@servers or usage();

my @keys;
open my $fh, '<', $key_file or die "cannot read $key_file: $!\n";
while ( my $line = <$fh> ) {
    $line =~ s/\s+\z//;
    next if $line eq '';
    $line =~ /^(?:[0-9a-fA-F]{2})+\z/ or die "not a hex key: $line\n";
    # pack gives a byte string (no UTF8 flag): the libraries hash and send these bytes.
    my $key = pack 'H*', $line;
    utf8::downgrade($key);
    push @keys, $key;
}
close $fh;

# The address as the Perl clients take it: "host:port", or the socket path.
sub address { $_[0]{socket} // "$_[0]{host}:$_[0]{port}" }

my $store;
if ( $library eq 'cache-memcached' ) {
    my $memd = Cache::Memcached->new(
        {
            servers   => [ map { [ address($_), $_->{weight} ] } @servers ],
            no_rehash => 1,
        }
    );
    $store = sub { $memd->set( $_[0], '1' ) };
}
elsif ( $library eq 'cache-memcached-fast' ) {
    my $memd = Cache::Memcached::Fast->new(
        {
            servers => [
                map { { address => address($_), weight => $_->{weight} } } @servers
            ],
        }
    );
    $store = sub { $memd->set( $_[0], '1' ) };
}
else {
    my $memc = Memcached::libmemcached::memcached_create();
    Memcached::libmemcached::memcached_behavior_set( $memc,
        Memcached::libmemcached::MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED(), 1 );
    for my $s (@servers) {
        my $added =
          defined $s->{socket}
          ? Memcached::libmemcached::memcached_server_add_unix_socket_with_weight( $memc,
            $s->{socket}, $s->{weight} )
          : Memcached::libmemcached::memcached_server_add_with_weight( $memc, $s->{host},
            $s->{port}, $s->{weight} );
        $added or die 'adding server ' . address($s) . ': ' . $memc->errstr . "\n";
    }
    my $distribution = Memcached::libmemcached::memcached_behavior_get( $memc,
        Memcached::libmemcached::MEMCACHED_BEHAVIOR_DISTRIBUTION() );
    $distribution == Memcached::libmemcached::MEMCACHED_DISTRIBUTION_CONSISTENT_WEIGHTED()
      or die "KETAMA_WEIGHTED did not select the weighted consistent distribution"
      . " (distribution = $distribution)\n";
    $store = sub {
        Memcached::libmemcached::memcached_set( $memc, $_[0], '1' )
          or die 'memcached_set ' . unpack( 'H*', $_[0] ) . ': ' . $memc->errstr . "\n";
    };
}

my $stored = 0;
for my $key (@keys) {
    unless ( $store->($key) ) {
        print STDERR "$library could not store key " . unpack( 'H*', $key ) . "\n";
        exit 4;
    }
    $stored++;
}
print "$library stored $stored keys\n";
exit 0;
