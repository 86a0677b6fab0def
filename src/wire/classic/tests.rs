use super::*;

fn encoded(write: impl FnOnce(&mut Vec<u8>) -> Result<(), BadKey>) -> String {
    let mut out = Vec::new();
    write(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn parsed(expect: Expect, bytes: &[u8]) -> (Reply<'_>, usize) {
    parse(expect, bytes).unwrap().unwrap()
}

#[test]
fn requests_are_encoded_with_length_prefixed_values() {
    assert_eq!(
        encoded(|o| add(o, b"__lock__a", b"tok\nmeta", 60)),
        "add __lock__a 0 60 8\r\ntok\nmeta\r\n"
    );
    assert_eq!(encoded(|o| set(o, b"k", b"", 0)), "set k 0 0 0\r\n\r\n");
    assert_eq!(
        encoded(|o| cas(o, b"k", b"v", EXPIRED, u64::MAX)),
        "cas k 0 2592001 1 18446744073709551615\r\nv\r\n"
    );
    assert_eq!(encoded(|o| gets(o, &[b"a", b"b", b"a"])), "gets a b\r\n");
    assert_eq!(encoded(|o| incr(o, b"f", 1)), "incr f 1\r\n");
    let mut out = Vec::new();
    version(&mut out);
    assert_eq!(out, b"version\r\n");
}

#[test]
fn keys_that_could_split_a_command_are_refused_before_anything_is_written() {
    for key in [
        &b""[..],
        b"a b",
        b"a\r\nflush_all",
        b"a\nb",
        b"a\rb",
        b"a\tb",
        b"a\0",
        b"\x7f",
        &[b'k'; 251],
    ] {
        let mut out = Vec::new();
        assert!(add(&mut out, key, b"v", 1).is_err(), "{key:?}");
        assert!(set(&mut out, key, b"v", 1).is_err(), "{key:?}");
        assert!(cas(&mut out, key, b"v", 1, 1).is_err(), "{key:?}");
        assert!(gets(&mut out, &[b"ok", key]).is_err(), "{key:?}");
        assert!(incr(&mut out, key, 1).is_err(), "{key:?}");
        assert!(out.is_empty(), "{key:?} wrote {out:?}");
    }
    let mut out = Vec::new();
    assert!(gets(&mut out, &[]).is_err());
    assert!(add(&mut out, b"k", &vec![0; MAX_VALUE + 1], 1).is_err());
    assert!(out.is_empty());
}

#[test]
fn a_value_holding_command_lines_is_data_both_ways() {
    let value = b"x\r\ndelete victim\r\nflush_all\r\nEND\r\nVALUE k 0 1 1\r\n";
    let mut out = Vec::new();
    add(&mut out, b"k", value, 10).unwrap();
    assert!(out.starts_with(format!("add k 0 10 {}\r\n", value.len()).as_bytes()));
    assert_eq!(&out[out.len() - value.len() - 2..out.len() - 2], value);
    let mut reply = format!("VALUE k 0 {} 7\r\n", value.len()).into_bytes();
    reply.extend_from_slice(value);
    reply.extend_from_slice(b"\r\nEND\r\nSTORED\r\n");
    let (Reply::Values(items), used) = parsed(Expect::Values, &reply) else {
        panic!("not values")
    };
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].data, value);
    assert_eq!(items[0].cas, 7);
    assert_eq!(parsed(Expect::Store, &reply[used..]).0, Reply::Stored);
}

#[test]
fn replies_are_parsed_by_the_kind_of_request() {
    for (text, reply) in [
        ("STORED", Reply::Stored),
        ("NOT_STORED", Reply::NotStored),
        ("EXISTS", Reply::Exists),
        ("NOT_FOUND", Reply::NotFound),
    ] {
        assert_eq!(
            parsed(Expect::Store, format!("{text}\r\n").as_bytes()).0,
            reply
        );
    }
    assert_eq!(parsed(Expect::Counter, b"42\r\n").0, Reply::Counter(42));
    assert_eq!(parsed(Expect::Counter, b"NOT_FOUND\r\n").0, Reply::NotFound);
    assert_eq!(
        parsed(Expect::Version, b"VERSION 1.4.25\r\n").0,
        Reply::Version("1.4.25")
    );
    assert_eq!(parsed(Expect::Values, b"END\r\nx").0, Reply::Values(vec![]));
    let (reply, used) = parsed(
        Expect::Values,
        b"VALUE a 0 3 11\r\nabc\r\nVALUE b 5 0 12\r\n\r\nEND\r\nrest",
    );
    assert_eq!(used, 44);
    assert_eq!(
        reply,
        Reply::Values(vec![
            Value {
                key: b"a",
                flags: 0,
                cas: 11,
                data: b"abc"
            },
            Value {
                key: b"b",
                flags: 5,
                cas: 12,
                data: b""
            },
        ])
    );
    for expect in [
        Expect::Store,
        Expect::Values,
        Expect::Counter,
        Expect::Version,
    ] {
        assert_eq!(parsed(expect, b"ERROR\r\n").0, Reply::Unknown);
        assert_eq!(
            parsed(expect, b"CLIENT_ERROR bad data chunk\r\n").0,
            Reply::ClientError("bad data chunk")
        );
        assert_eq!(
            parsed(expect, b"SERVER_ERROR out of memory\r\n").0,
            Reply::ServerError("out of memory")
        );
    }
}

#[test]
fn a_utf8_key_comes_back_as_its_bytes() {
    let reply = "VALUE __lock__ロック 0 1 3\r\nx\r\nEND\r\n";
    let (Reply::Values(items), used) = parsed(Expect::Values, reply.as_bytes()) else {
        panic!("not values")
    };
    assert_eq!(used, reply.len());
    assert_eq!(items[0].key, "__lock__ロック".as_bytes());
    assert_eq!(items[0].data, b"x");
}

#[test]
fn an_error_can_answer_a_gets_but_not_follow_a_value() {
    assert_eq!(
        parsed(Expect::Values, b"SERVER_ERROR busy\r\n").0,
        Reply::ServerError("busy")
    );
    assert!(parse(Expect::Values, b"VALUE k 0 1 1\r\nx\r\nERROR\r\n").is_err());
}

#[test]
fn truncated_replies_ask_for_more_bytes() {
    let full = b"VALUE k 0 3 9\r\nabc\r\nVALUE j 0 1 10\r\nz\r\nEND\r\n";
    for cut in 0..full.len() {
        assert_eq!(
            parse(Expect::Values, &full[..cut]),
            Ok(None),
            "cut at {cut}"
        );
    }
    assert!(parse(Expect::Values, full).unwrap().is_some());
    for (expect, full) in [
        (Expect::Store, &b"NOT_STORED\r\n"[..]),
        (Expect::Counter, b"123\r\n"),
        (Expect::Version, b"VERSION 1.6.18\r\n"),
    ] {
        for cut in 0..full.len() {
            assert_eq!(
                parse(expect, &full[..cut]),
                Ok(None),
                "{expect:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn garbage_and_out_of_step_replies_are_errors() {
    let cases: [(Expect, &[u8]); 24] = [
        (Expect::Store, b"HTTP/1.1 400 Bad Request\r\n"),
        (Expect::Store, b"SSH-2.0-OpenSSH_9.2\r\n"),
        (Expect::Store, b"\x15\x03\x01\x00\x02\x02\x46\r\n"),
        (Expect::Store, b"STORED\n"),
        (Expect::Store, b"\n"),
        (Expect::Store, b"END\r\n"),
        (Expect::Store, b"HD\r\n"),
        (Expect::Store, b"stored\r\n"),
        (Expect::Store, b"42\r\n"),
        (Expect::Counter, b"STORED\r\n"),
        (Expect::Counter, b"-1\r\n"),
        (Expect::Counter, b"99999999999999999999999\r\n"),
        (Expect::Counter, b"+7\r\n"),
        (Expect::Version, b"VERSION\r\n"),
        (Expect::Version, b"STORED\r\n"),
        (Expect::Values, b"STORED\r\n"),
        (Expect::Values, b"VALUE k 0 2\r\nab\r\nEND\r\n"),
        (Expect::Values, b"VALUE k 0 2 1 x\r\nab\r\nEND\r\n"),
        (Expect::Values, b"VALUE k 0 2 1\r\nabcd\r\nEND\r\n"),
        (Expect::Values, b"VALUE k x 2 1\r\nab\r\nEND\r\n"),
        (Expect::Values, b"VALUE k 0 99999999999 1\r\n"),
        (Expect::Values, &[b'V'; 2000]),
        (Expect::Values, b"VALUE k\x01 0 1 1\r\nx\r\nEND\r\n"),
        (Expect::Store, "STÖRED\r\n".as_bytes()),
    ];
    for (expect, bad) in cases {
        assert!(parse(expect, bad).is_err(), "{expect:?} {bad:?}");
    }
}

fn exchange_bytes(exchange: Exchange<'_>) -> String {
    let mut out = Vec::new();
    exchange.encode(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn folded<'b>(exchange: Exchange<'_>, reply: &'b [u8]) -> meta::Reply<'b> {
    let (folded, used) = exchange.parse(reply).unwrap().unwrap();
    assert_eq!(used, reply.len(), "{exchange:?} left bytes unread");
    folded
}

fn meta_status(reply: meta::Reply<'_>) -> (Status, Option<u64>) {
    match reply {
        meta::Reply::Meta { status, cas, .. } => (status, cas),
        other => panic!("not a meta reply: {other:?}"),
    }
}

const ADD: Exchange<'static> = Exchange::Store {
    mode: Store::Add,
    key: b"__lock__a",
    value: b"tok",
    ttl: 60,
};

#[test]
fn an_acquire_is_an_add_and_a_gets_in_one_write() {
    assert_eq!(
        exchange_bytes(ADD),
        "add __lock__a 0 60 3\r\ntok\r\ngets __lock__a\r\n"
    );
    let ours = b"STORED\r\nVALUE __lock__a 0 3 77\r\ntok\r\nEND\r\n";
    assert_eq!(meta_status(folded(ADD, ours)), (Status::Done, Some(77)));
    let taken = b"NOT_STORED\r\nVALUE __lock__a 0 5 76\r\nother\r\nEND\r\n";
    assert_eq!(meta_status(folded(ADD, taken)), (Status::NotStored, None));
    // Stored, then replaced or removed before the read: reported as not ours.
    let changed = b"STORED\r\nVALUE __lock__a 0 5 78\r\nother\r\nEND\r\n";
    assert_eq!(meta_status(folded(ADD, changed)), (Status::Exists, None));
    let gone = b"STORED\r\nEND\r\n";
    assert_eq!(meta_status(folded(ADD, gone)), (Status::Exists, None));
    // Every cut of the reply asks for more bytes.
    for cut in 0..ours.len() {
        assert_eq!(ADD.parse(&ours[..cut]), Ok(None), "cut at {cut}");
    }
    // A gets answering another key is out of step.
    let wrong = b"STORED\r\nVALUE __lock__b 0 3 77\r\ntok\r\nEND\r\n";
    assert!(ADD.parse(wrong).is_err());
    // An error stops the exchange at once.
    let (reply, used) = ADD
        .parse(b"SERVER_ERROR out of memory\r\nEND\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(reply, meta::Reply::ServerError("out of memory"));
    assert_eq!(used, 28);
}

#[test]
fn refresh_release_read_counter_and_ping_map_to_meta_answers() {
    let refresh = Exchange::Store {
        mode: Store::IfCas(77),
        key: b"k",
        value: b"tok",
        ttl: 30,
    };
    assert_eq!(
        exchange_bytes(refresh),
        "cas k 0 30 3 77\r\ntok\r\ngets k\r\n"
    );
    assert_eq!(
        meta_status(folded(
            refresh,
            b"STORED\r\nVALUE k 0 3 80\r\ntok\r\nEND\r\n"
        )),
        (Status::Done, Some(80))
    );
    assert_eq!(
        meta_status(folded(refresh, b"EXISTS\r\nVALUE k 0 1 79\r\nx\r\nEND\r\n")),
        (Status::Exists, None)
    );
    assert_eq!(
        meta_status(folded(refresh, b"NOT_FOUND\r\nEND\r\n")),
        (Status::NotFound, None)
    );

    let release = Exchange::DeleteIf { key: b"k", cas: 80 };
    assert_eq!(exchange_bytes(release), "cas k 0 2592001 0 80\r\n\r\n");
    for (text, status) in [
        ("STORED", Status::Done),
        ("EXISTS", Status::Exists),
        ("NOT_FOUND", Status::NotFound),
    ] {
        let reply = format!("{text}\r\n");
        assert_eq!(
            meta_status(folded(release, reply.as_bytes())),
            (status, None)
        );
    }

    let read = Exchange::Read { key: b"k" };
    assert_eq!(exchange_bytes(read), "gets k\r\n");
    assert_eq!(
        folded(read, b"VALUE k 0 4 9\r\na\r\nb\r\nEND\r\n"),
        meta::Reply::Meta {
            status: Status::Value,
            cas: Some(9),
            ttl: None,
            opaque: None,
            data: b"a\r\nb"
        }
    );
    assert_eq!(meta_status(folded(read, b"END\r\n")), (Status::Miss, None));

    let fence = Exchange::Increment {
        key: b"f",
        initial: 1000,
        ttl: 2_592_000,
    };
    assert_eq!(
        exchange_bytes(fence),
        "add f 0 2592000 3\r\n999\r\nincr f 1\r\n"
    );
    for first in ["STORED", "NOT_STORED"] {
        let reply = format!("{first}\r\n1000\r\n");
        let meta::Reply::Meta { status, data, .. } = folded(fence, reply.as_bytes()) else {
            panic!("not a meta reply")
        };
        assert_eq!((status, data), (Status::Value, &b"1000"[..]));
    }

    let bump = Exchange::Bump {
        key: b"q",
        delta: 4_294_967_296,
    };
    assert_eq!(exchange_bytes(bump), "incr q 4294967296\r\n");
    let meta::Reply::Meta { status, data, .. } = folded(bump, b"8589934592\r\n") else {
        panic!("not a meta reply")
    };
    assert_eq!((status, data), (Status::Value, &b"8589934592"[..]));
    assert_eq!(
        meta_status(folded(bump, b"NOT_FOUND\r\n")),
        (Status::NotFound, None)
    );
    assert_eq!(bump.parse(b"85899"), Ok(None));

    assert_eq!(exchange_bytes(Exchange::Noop), "version\r\n");
    assert_eq!(
        meta_status(folded(Exchange::Noop, b"VERSION 0.5.0\r\n")),
        (Status::Noop, None)
    );
}

#[cfg(feature = "tokio")]
#[test]
fn owned_exchanges_round_trip() {
    for exchange in [
        ADD,
        Exchange::Read { key: b"k" },
        Exchange::DeleteIf { key: b"k", cas: 3 },
        Exchange::Increment {
            key: b"f",
            initial: 9,
            ttl: 5,
        },
        Exchange::Bump {
            key: b"q",
            delta: 2,
        },
        Exchange::Noop,
    ] {
        assert_eq!(exchange.to_owned().exchange(), exchange);
    }
}

#[test]
fn an_exchange_with_a_bad_key_writes_nothing() {
    let mut out = b"earlier".to_vec();
    let bad = Exchange::Store {
        mode: Store::Add,
        key: b"a b",
        value: b"v",
        ttl: 1,
    };
    assert!(bad.encode(&mut out).is_err());
    assert_eq!(out, b"earlier");
}
