#!/usr/bin/perl
# The Lock::Server 1.75 client protocol, as Lock::Server::Client speaks it (the CPAN module
# is not packaged by Debian; this is its protocol exactly, see FACTS.md): every call opens a
# fresh TCP connection, sends "GET /VERB/KEY/NAME\n\n" and reads one reply line.
# The gateway tests (tests/it/gateways.rs) and the benchmarks (benches/scenarios.rs) run it.
#
# Usage: lock_server.pl MODE HOST:PORT [ARGS]
#   call VERB [KEY [NAME]]   one request; prints the reply line.
#   work KEY NAME N LOG      N times: LOCK until granted (non-zero), append "enter PID" and
#                            "exit PID" lines to LOG around a short critical section,
#                            UNLOCK. Prints "granted N refused R unlock_failures U".
#   bench KEY NAME N         N uncontended LOCK+UNLOCK pairs; prints
#                            "lock-server bench: pairs N median_us M".
# Exit codes: 0 ok, 2 usage, 5 connection error or no reply.
use strict;
use warnings;
use IO::Socket::INET;
use Time::HiRes qw(time);

$| = 1;
my ($mode, $address, @args) = @ARGV;
defined $address or do { print STDERR "usage: lock_server.pl MODE HOST:PORT [ARGS]\n"; exit 2 };

sub call {
    my $path = join('/', @_);
    my $sock = IO::Socket::INET->new(PeerAddr => $address, Proto => 'tcp')
        or do { print STDERR "lock_server.pl: cannot connect to $address: $!\n"; exit 5 };
    $sock->autoflush(1);
    print $sock "GET /$path\n\n";
    my $line = <$sock>;
    defined $line or do { print STDERR "lock_server.pl: no reply to $path\n"; exit 5 };
    chomp $line;
    close $sock;
    return $line;
}

if ($mode eq 'call') {
    print call(@args), "\n";
} elsif ($mode eq 'work') {
    my ($key, $name, $n, $log) = @args;
    my ($granted, $refused, $failures) = (0, 0, 0);
    while ($granted < $n) {
        if (call('LOCK', $key, $name) eq '0') {
            $refused++;
            next;
        }
        $granted++;
        open(my $fh, '>>', $log) or die "open $log: $!";
        $fh->autoflush(1);
        print $fh "enter $$\n";
        my $spin = time + 0.001;
        1 while time < $spin;
        print $fh "exit $$\n";
        close $fh;
        $failures++ if call('UNLOCK', $key, $name) ne '1';
    }
    print "granted $granted refused $refused unlock_failures $failures\n";
} elsif ($mode eq 'bench') {
    my ($key, $name, $n) = @args;
    my @times;
    for (1 .. $n) {
        my $start = time;
        call('LOCK', $key, $name) ne '0' or do { print STDERR "not granted\n"; exit 5 };
        call('UNLOCK', $key, $name) eq '1' or do { print STDERR "not unlocked\n"; exit 5 };
        push @times, time - $start;
    }
    @times = sort { $a <=> $b } @times;
    printf "lock-server bench: pairs %d median_us %.1f\n", $n, $times[int(@times / 2)] * 1e6;
} else {
    print STDERR "lock_server.pl: unknown mode $mode\n";
    exit 2;
}
