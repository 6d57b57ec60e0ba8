//! The operator commands as an operator runs them: SCENARIO.md's Cisco
//! configuration imported, then mapped and turned into CE configuration.

use std::path::PathBuf;
use std::process::{Command, Output};

/// SCENARIO.md's Cisco configuration.
const CISCO: &str = include_str!("../../docs/examples/cisco-scenario.txt");

fn br(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_br-daemon"))
        .args(args)
        .output()
        .expect("run br-daemon")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("br-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn import_check_map_and_ce_config_from_the_cisco_configuration() {
    let dir = temp_dir("import");
    let cisco = dir.join("cisco.txt");
    std::fs::write(&cisco, CISCO).unwrap();
    let imported = br(&["import-cisco", cisco.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(
        stderr(&imported).contains("cisco.txt:4: warning: not used"),
        "{}",
        stderr(&imported)
    );
    let toml = dir.join("br.toml");
    std::fs::write(&toml, stdout(&imported)).unwrap();
    let t = toml.to_str().unwrap();
    // Straight from the import, the interface placeholders are refused.
    let check = br(&["check-config", t]);
    assert_eq!(check.status.code(), Some(78), "{}", stderr(&check));
    assert!(
        stderr(&check).contains("CHANGE-ME-lan\": a placeholder"),
        "{}",
        stderr(&check)
    );
    std::fs::write(&toml, stdout(&imported).replace("CHANGE-ME-", "eth-")).unwrap();

    let check = br(&["check-config", t]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(
        stderr(&check).contains("RFC 5969 §4"),
        "the /96 departure is explained: {}",
        stderr(&check)
    );

    assert_eq!(
        stdout(&br(&["map", "10.96.1.100", "--config", t])),
        "2001:db8:0:f096:a60:164::/96\n"
    );
    assert_eq!(
        stdout(&br(&["map", "2001:db8:0:f096:a60:164::1", "--config", t])),
        "10.96.1.100\n"
    );
    assert_eq!(
        stdout(&br(&[
            "map",
            "2001:db8:0:f096:a60:164::1",
            "--prefix",
            "2001:db8:0:f096::/64"
        ])),
        "10.96.1.100\n"
    );

    let ce = br(&["ce-config", "10.96.1.100", "--config", t]);
    assert!(ce.status.success(), "{}", stderr(&ce));
    let text = stdout(&ce);
    for line in [
        "ip tunnel 6rd dev sit1 6rd-prefix 2001:db8:0:f096::/64 6rd-relay_prefix 10.96.1.100/32",
        "ip -6 route add default via ::10.255.255.222 dev sit1 metric 1",
        "IPV6TUNNELIPV4LOCAL=10.96.1.100",
        "IPV6_DEFAULTGW=::10.255.255.222",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?}:\n{text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_config_reports_file_line_and_reason_and_fails() {
    let dir = temp_dir("bad");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[relay]\ninterfaces = [\"eth0\"]\nqueues = 0\n\n[[domain]]\nprefix = \"2001:db8::/100\"\nbr-ipv4 = \"10.0.0.1\"\n").unwrap();
    let out = br(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG, not a usage error");
    // A usage error is 2 (clap), a bad file given to map 78 too.
    assert_eq!(br(&["check-config"]).status.code(), Some(2));
    let map = br(&["map", "10.96.1.100", "--config", bad.to_str().unwrap()]);
    assert_eq!(map.status.code(), Some(78), "{}", stderr(&map));
    assert!(stderr(&map).contains("bad.toml:3:"), "{}", stderr(&map));
    let err = stderr(&out);
    assert!(
        err.contains("bad.toml:3: queues = 0 is out of range (1..=64)"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:6: domain \"domain1\": 6rd prefix /100 plus 32 embedded IPv4 bits"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_lists_every_command() {
    let help = stdout(&br(&["--help"]));
    for cmd in [
        "run",
        "map",
        "ce-config",
        "import-cisco",
        "check-config",
        "counters",
        "trace",
    ] {
        assert!(help.contains(cmd), "{help}");
    }
}

#[test]
fn trace_says_when_no_daemon_answers_and_takes_one_filter() {
    // Port 1 on loopback: nothing listens.
    let o = br(&["trace", "--live", "127.0.0.1:1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no br-daemon answers on 127.0.0.1:1"),
        "{}",
        stderr(&o)
    );
    let o = br(&["trace", "--ce", "10.96.1.100", "--ipv6", "::1"]);
    assert_eq!(o.status.code(), Some(2), "a usage error");
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

#[test]
fn every_counter_is_documented() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/counters.md"))
        .unwrap();
    let names = stdout(&br(&["counters"]));
    for line in names.lines() {
        let name = line.split_whitespace().next().unwrap();
        let name = name
            .trim_start_matches("drop:")
            .trim_start_matches("xdp:")
            .trim_start_matches("declined:")
            .trim_start_matches("tcp-mss:");
        assert!(
            doc.contains(&format!("`{name}`")),
            "docs/counters.md does not explain {name}"
        );
    }
}

/// Issue 10: without --br-ipv4 there is no BR, and no answer may invent one.
#[test]
fn map_and_ce_config_without_a_br_never_mention_one() {
    const P: &[&str] = &["--prefix", "2001:db8:0:f096::/64"];
    let run = |args: &[&str]| br(&[args, P].concat());
    let o = run(&["map", "10.96.1.100"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "2001:db8:0:f096:a60:164::/96");
    // 192.0.2.1 is a CE like any other here.
    let o = run(&["map", "2001:db8:0:f096:c000:201::1"]);
    assert_eq!(stdout(&o).trim(), "192.0.2.1", "{}", stderr(&o));
    // A multicast address is no CE, whether or not a BR is named.
    let o = run(&["map", "224.0.0.1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("the relay drops it, martian-ipv4"),
        "{}",
        stdout(&o)
    );
    assert!(!stderr(&o).contains("BR"), "{}", stderr(&o));
    // A CE configuration needs the BR's address.
    let o = run(&["ce-config", "10.96.1.100"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("give --br-ipv4"), "{}", stderr(&o));
    // ...and a unicast CE.
    for ce in ["224.0.0.1", "0.0.0.0", "127.0.0.1"] {
        let o = run(&["ce-config", ce, "--br-ipv4", "10.255.255.222"]);
        assert!(!o.status.success(), "{ce}: {}", stdout(&o));
        assert!(
            stderr(&o).contains("cannot be a CE"),
            "{ce}: {}",
            stderr(&o)
        );
    }
    // A prefix covering the whole domain covers every CE.
    let o = br(&[
        "map",
        "2001:db8:0:f096::/60",
        "--prefix",
        "2001:db8:0:f096::/64",
    ]);
    assert_eq!(stdout(&o).trim(), "0.0.0.0/0", "{}", stderr(&o));
}

/// A server that is not br-daemon, answering every request with `reply`.
fn impostor(reply: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in listener.incoming().flatten().take(2) {
            // The whole request, as an HTTP server reads it.
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    addr
}

#[test]
fn counters_live_says_when_the_server_is_not_br_daemon() {
    let not_found = impostor("HTTP/1.0 404 Not Found\r\n\r\nnope");
    let o = br(&["counters", "--live", &not_found]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "is not br-daemon's metrics endpoint: GET /metrics answered \"HTTP/1.0 404 Not Found\""
        ),
        "{}",
        stderr(&o)
    );
    let other = impostor("HTTP/1.0 200 OK\r\n\r\nsome_other_metric 1\n");
    let o = br(&["counters", "--live", &other]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("without br-daemon's counters"),
        "{}",
        stderr(&o)
    );
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn map_ce_config_and_check_config_speak_json_for_scripts() {
    let flags = [
        "--prefix",
        "2001:db8:0:f096::/64",
        "--br-ipv4",
        "10.255.255.222",
    ];
    fn with<'a>(head: &[&'a str], flags: &[&'a str]) -> Vec<&'a str> {
        [head, flags, &["--json"]].concat()
    }
    let m = json(&br(&with(&["map", "10.96.1.100"], &flags)));
    assert_eq!(m[0]["answer"], "2001:db8:0:f096:a60:164::/96", "{m}");
    assert_eq!(m[0]["relayed"], true, "{m}");
    let m = json(&br(&with(&["map", "2001:db8:0:f096::1"], &flags)));
    assert_eq!(m[0]["answer"], "0.0.0.0", "{m}");
    assert_eq!(m[0]["relayed"], false, "{m}");
    assert_eq!(m[0]["drop-reason"], "martian-ipv4", "{m}");

    let c = json(&br(&with(&["ce-config", "10.96.1.100"], &flags)));
    assert_eq!(c["relay-prefix"], "10.96.1.100/32", "{c}");
    assert_eq!(c["address"], "2001:db8:0:f096:a60:164:0:1/96", "{c}");
    assert_eq!(c["gateway"], "::10.255.255.222", "{c}");
    assert_eq!(
        c["ip-commands"][0], "ip tunnel add sit1 mode sit local 10.96.1.100 ttl 64",
        "{c}"
    );
    // Refusals stay errors on stderr, with nothing on stdout to parse.
    let refused = br(&with(&["ce-config", "224.0.0.1"], &flags));
    assert!(
        !refused.status.success() && refused.stdout.is_empty(),
        "{}",
        stdout(&refused)
    );

    let dir = temp_dir("json");
    let good = dir.join("good.toml");
    std::fs::write(&good, include_str!("../../docs/br-daemon.example.toml")).unwrap();
    let out = br(&["check-config", good.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["valid"], true, "{v}");
    assert!(v["warnings"][0]["line"].as_u64() > Some(0), "{v}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[relay]\ninterfaces = [\"eth0\"]\nfoo = 0\nbar = 1\n").unwrap();
    let out = br(&["check-config", bad.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(78));
    let v = json(&out);
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["errors"][0]["line"], 3, "{v}");
    assert_eq!(v["errors"][1]["line"], 4, "{v}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn drain_says_when_no_daemon_takes_it() {
    let o = br(&["drain", "--live", "127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no br-daemon answers on 127.0.0.1:1"),
        "{}",
        stderr(&o)
    );
    let refused =
        impostor("HTTP/1.0 403 Forbidden\r\n\r\ndrain and resume are taken from this host only\n");
    let o = br(&["drain", "--live", &refused]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("answered POST /drain with \"HTTP/1.0 403 Forbidden\": drain and resume are taken from this host only"),
        "{}",
        stderr(&o)
    );
}
