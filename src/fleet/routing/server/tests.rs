use super::*;

fn invalid_config_message(result: Result<impl fmt::Debug>) -> String {
    match result {
        Err(Error::InvalidConfig(message)) => message,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn server_spec_parses_good_entries() {
    let plain: ServerSpec = "127.0.0.1:11211".parse().unwrap();
    assert_eq!(
        (plain.host(), plain.port(), plain.weight()),
        ("127.0.0.1", 11211, 1)
    );
    let weighted: ServerSpec = "cache.example.com:11311:7".parse().unwrap();
    assert_eq!(
        (weighted.host(), weighted.port(), weighted.weight()),
        ("cache.example.com", 11311, 7)
    );
    let v6: ServerSpec = "[::1]:11211".parse().unwrap();
    assert_eq!((v6.host(), v6.port(), v6.weight()), ("::1", 11211, 1));
    assert_eq!(v6.address(), "[::1]:11211");
    let v6w: ServerSpec = "[fe80::1]:11311:3".parse().unwrap();
    assert_eq!(
        (v6w.host(), v6w.port(), v6w.weight()),
        ("fe80::1", 11311, 3)
    );
    let max: ServerSpec = "h:65535:4294967295".parse().unwrap();
    assert_eq!((max.port(), max.weight()), (65535, u32::MAX));
}

#[test]
fn server_spec_display_round_trips() {
    for text in ["127.0.0.1:11211", "h:1:5", "[::1]:11211", "[::1]:11211:3"] {
        let spec: ServerSpec = text.parse().unwrap();
        assert_eq!(spec.to_string(), text);
    }
    let weight_one: ServerSpec = "h:1:1".parse().unwrap();
    assert_eq!(weight_one.to_string(), "h:1");
}

#[test]
fn server_spec_rejects_bad_entries_naming_them() {
    for bad in [
        "",
        "localhost",
        "localhost:",
        ":11211",
        "localhost:0",
        "localhost:65536",
        "localhost:-1",
        "localhost:+80",
        "localhost: 80",
        "localhost:80:0",
        "localhost:80:-2",
        "localhost:80:1.5",
        "localhost:80:",
        "localhost:80:1:2",
        "localhost:port",
        "::1:11211",
        "[::1]",
        "[::1]11211",
        "[::1:11211",
        "[]:11211",
        "[not-v6]:11211",
        "[::1]:0",
        "[::1]:11211:0",
        "local host:11211",
        "a]:11211",
        "localhost:80:4294967296",
        "héllo\u{7}:1",
    ] {
        let message = invalid_config_message(bad.parse::<ServerSpec>());
        assert!(
            message.contains(&format!("{bad:?}")),
            "{bad:?}: message does not name the entry: {message}"
        );
    }
    let message = invalid_config_message("::1:11211".parse::<ServerSpec>());
    assert!(message.contains("brackets"), "{message}");
}

#[test]
fn unix_socket_entries_parse_with_and_without_weight() {
    let plain: ServerSpec = "/run/memcached/mc.sock".parse().unwrap();
    assert_eq!(plain, ServerSpec::unix("/run/memcached/mc.sock"));
    assert_eq!(
        plain.endpoint(),
        Endpoint::Unix(Path::new("/run/memcached/mc.sock"))
    );
    assert_eq!(
        (plain.host(), plain.port(), plain.weight()),
        ("/run/memcached/mc.sock", 0, 1)
    );
    let weighted: ServerSpec = "/tmp/a:b/mc.sock:3".parse().unwrap();
    assert_eq!(
        weighted,
        ServerSpec::unix("/tmp/a:b/mc.sock").with_weight(3)
    );
    assert_eq!(weighted.address(), "/tmp/a:b/mc.sock");
    for text in ["/tmp/mc.sock", "/tmp/mc.sock:7", "/tmp/a:b/c"] {
        assert_eq!(text.parse::<ServerSpec>().unwrap().to_string(), text);
    }
    let list = ServerSpec::parse_list("/tmp/a.sock, 10.0.0.1:11211, /tmp/b.sock:2").unwrap();
    assert_eq!(
        list,
        vec![
            ServerSpec::unix("/tmp/a.sock"),
            ServerSpec::new("10.0.0.1", 11211),
            ServerSpec::unix("/tmp/b.sock").with_weight(2),
        ]
    );
}

#[test]
fn unix_socket_entries_reject_bad_paths_and_weights() {
    let long = format!("/{}", "x".repeat(MAX_UNIX_PATH));
    for bad in [
        "/tmp/mc.sock:",
        "/tmp/mc.sock:0",
        "/tmp/mc.sock:x",
        "/tmp/mc.sock:-1",
        "/tmp/mc.sock:1:2",
        "/tmp/dir/",
        "/tmp/\u{1}mc.sock",
        long.as_str(),
    ] {
        let message = invalid_config_message(bad.parse::<ServerSpec>());
        assert!(message.contains(&format!("{bad:?}")), "{bad:?}: {message}");
    }
    let message = invalid_config_message(ServerSpec::parse_list("/tmp/a.sock,/tmp/a.sock:2"));
    assert!(message.contains("twice"), "{message}");
    for spec in [
        ServerSpec::unix("relative.sock"),
        ServerSpec::unix("/tmp/a,b.sock"),
        ServerSpec::unix(long.as_str()),
    ] {
        let message = invalid_config_message(Ring::new(Routing::Ketama, &[spec]));
        assert!(message.contains("server 1"), "{message}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::OsStr::from_bytes(b"/tmp/\xff.sock");
        let message = invalid_config_message(Ring::new(Routing::Ketama, &[ServerSpec::unix(path)]));
        assert!(message.contains("UTF-8"), "{message}");
    }
}

#[test]
fn parse_list_keeps_order_and_trims_spaces() {
    let servers = ServerSpec::parse_list(" a:1 ,b:2:3,[::1]:4:2 ").unwrap();
    assert_eq!(
        servers,
        vec![
            ServerSpec::new("a", 1),
            ServerSpec::new("b", 2).with_weight(3),
            ServerSpec::new("::1", 4).with_weight(2),
        ]
    );
}

#[test]
fn parse_list_rejects_empty_lists_entries_and_duplicates() {
    assert!(invalid_config_message(ServerSpec::parse_list("")).contains("empty"));
    assert!(invalid_config_message(ServerSpec::parse_list("  ")).contains("empty"));
    let message = invalid_config_message(ServerSpec::parse_list("a:1,,b:2"));
    assert!(message.contains("entry 2 is empty"), "{message}");
    let message = invalid_config_message(ServerSpec::parse_list("a:1,b:2,"));
    assert!(message.contains("entry 3 is empty"), "{message}");
    let message = invalid_config_message(ServerSpec::parse_list("a:1,b:x"));
    assert!(message.contains("\"b:x\""), "{message}");
    let message = invalid_config_message(ServerSpec::parse_list("a:1,b:2,a:1:5"));
    assert!(message.contains("a:1:5"), "{message}");
    assert!(message.contains("twice"), "{message}");
    // Same host on another port, or another host text for the same machine, is fine.
    assert!(ServerSpec::parse_list("a:1,a:2,127.0.0.1:1,localhost:1").is_ok());
}

#[test]
fn parse_list_rejects_weights_that_overflow_32_bits() {
    let message = invalid_config_message(ServerSpec::parse_list("a:1:4294967295,b:1:1"));
    assert!(message.contains("add up"), "{message}");
}
