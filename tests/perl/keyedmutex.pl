#!/usr/bin/perl
# The KeyedMutex 0.06 client protocol, as its users run it against keyedmutexd (the CPAN
# module is not packaged by Debian; this is its protocol exactly, see FACTS.md): one
# connection; per lock, send the 16 raw bytes of the key's MD5 digest and read one byte,
# "O" (this client owns the lock) or "R" (another client held it and released it); the
# owner sends "R" to release (no reply), or closes the connection.
# The gateway tests (tests/it/gateways.rs) and the benchmarks (benches/scenarios.rs) run it.
#
# Usage: keyedmutex.pl MODE ADDRESS KEY [ARGS]      ADDRESS: host:port, or a socket path
#   hold         lock once, print "O" or "R"; when owned, wait for a line (or EOF) on
#                stdin, then release and print "released".
#   die          lock once, print "O" or "R"; when owned, wait for a line on stdin, then
#                exit without releasing (the connection closes with the process).
#   work N LOG   until owned N times: lock; when owned, append "enter PID" and "exit PID"
#                lines to LOG around a short critical section, release. Prints
#                "owned N released R".
#   bench N      N uncontended lock+release pairs on one connection; prints
#                "keyedmutex bench: pairs N median_us M".
# Exit codes: 0 ok, 2 usage, 5 connection error or an unexpected reply.
use strict;
use warnings;
use Digest::MD5 qw(md5);
use IO::Socket::INET;
use IO::Socket::UNIX;
use Time::HiRes qw(time);

$| = 1;
my ($mode, $address, $key, @args) = @ARGV;
defined $key or do { print STDERR "usage: keyedmutex.pl MODE ADDRESS KEY [ARGS]\n"; exit 2 };

my $sock = $address =~ m{/}
    ? IO::Socket::UNIX->new(Peer => $address, Type => SOCK_STREAM)
    : IO::Socket::INET->new(PeerAddr => $address, Proto => 'tcp');
$sock or do { print STDERR "keyedmutex.pl: cannot connect to $address: $!\n"; exit 5 };
$sock->autoflush(1);

# Sends the digest, reads the one-byte answer.
sub lock_key {
    my ($name) = @_;
    syswrite($sock, md5($name), 16) == 16 or do { print STDERR "write failed: $!\n"; exit 5 };
    my $got = sysread($sock, my $answer, 1);
    unless ($got && ($answer eq 'O' || $answer eq 'R')) {
        print STDERR "keyedmutex.pl: no answer (connection closed)\n";
        exit 5;
    }
    return $answer;
}

sub release { syswrite($sock, 'R', 1) == 1 or do { print STDERR "release failed: $!\n"; exit 5 } }

if ($mode eq 'hold' || $mode eq 'die') {
    my $answer = lock_key($key);
    print "$answer\n";
    exit 0 if $answer ne 'O';
    my $line = <STDIN>;
    exit 0 if $mode eq 'die';
    release();
    # A release has no reply: wait for the gateway to read it before closing, by asking
    # for a lock that nobody else uses and giving it back.
    lock_key("$key/after-release/$$") eq 'O' or exit 5;
    release();
    print "released\n";
} elsif ($mode eq 'work') {
    my ($n, $log) = @args;
    my ($owned, $released) = (0, 0);
    while ($owned < $n) {
        if (lock_key($key) eq 'O') {
            $owned++;
            open(my $fh, '>>', $log) or die "open $log: $!";
            $fh->autoflush(1);
            print $fh "enter $$\n";
            my $spin = time + 0.001;
            1 while time < $spin;
            print $fh "exit $$\n";
            close $fh;
            release();
        } else {
            $released++;
        }
    }
    print "owned $owned released $released\n";
} elsif ($mode eq 'bench') {
    my ($n) = @args;
    my @times;
    for (1 .. $n) {
        my $start = time;
        lock_key($key) eq 'O' or do { print STDERR "contended\n"; exit 5 };
        release();
        push @times, time - $start;
    }
    @times = sort { $a <=> $b } @times;
    printf "keyedmutex bench: pairs %d median_us %.1f\n", $n, $times[int(@times / 2)] * 1e6;
} else {
    print STDERR "keyedmutex.pl: unknown mode $mode\n";
    exit 2;
}
