//! Two BRs behind ECMP with BIRD 2 (issue 13, docs/anycast.md): each
//! gateway runs br-daemon (announce-table 6969) and BIRD, which learns the
//! daemon's announcements and sends them by BGP to a LAN router (the 6rd
//! prefix) and a VPC router (the anycast BR IPv4 address); both routers
//! run BIRD with `merge paths`, so the kernel holds one ECMP route over
//! both BRs. Checked: both BRs are next hops on both routers; 400 CEs
//! split across them within ±20 %; kill -9 of one daemon withdraws it and
//! costs only the flows it carried (the loss window is printed); it comes
//! back and takes traffic again losing nothing; drain then stop loses
//! nothing. Needs root and bird2. About 40 s.
//!
//! ```text
//!  lan ── lanrtr ─┬─ gw1 (br-daemon, BIRD) ─┬─ vpcrtr ── ce1 (ce-emulator, 400 raw CEs)
//!                 └─ gw2 (br-daemon, BIRD) ─┘
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use br_tests::*;

const BR_CONF: &str = include_str!("../../docs/examples/anycast/bird-br.conf");
const ROUTER_CONF: &str = include_str!("../../docs/examples/anycast/bird-router.conf");
const PREFIX: &str = "2001:db8:0:f096::/64";
const LAN_NET: &str = "2001:db8:0:100::/64";
/// Paced flows LAN → CE1 (one UDP socket each: its own flow label, so the
/// LAN router's ECMP hash spreads them), 200 packets per second each.
const FLOWS: usize = 16;
const FLOW_PORT: u16 = 5000;
const BACK_PORT: u16 = 5001;
const PACE: Duration = Duration::from_millis(5);

struct Gateway {
    // Before ns: dropped first.
    daemon: Mutex<Option<Proc>>,
    ns: Netns,
    index: u8,
    config: PathBuf,
}

struct Anycast {
    dir: PathBuf,
    /// The flows' sockets, made once: a flow is its 5-tuple, which the
    /// routers hash (with the flow label the kernel derives from it).
    senders: Arc<Vec<UdpSocket>>,
    back_sender: Arc<UdpSocket>,
    // Drop order: processes, then namespaces.
    birds: Vec<Proc>,
    ce_emulator: Option<Proc>,
    gws: Vec<Gateway>,
    lan: Netns,
    lanrtr: Netns,
    vpcrtr: Netns,
    ce1: Netns,
}

fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    run(
        "ip",
        &[
            "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", b_dev, "netns", &b.name,
        ],
    );
    a.sh(&format!("ip link set {a_dev} up"));
    b.sh(&format!("ip link set {b_dev} up"));
}

fn forwarding(ns: &Netns) {
    ns.sh("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
}

/// BIRD in `ns`, in the foreground (our child: it ends with the test).
fn bird(dir: &Path, ns: &Netns, name: &str, config: &str) -> Proc {
    let file = dir.join(format!("{name}.conf"));
    std::fs::write(&file, config).unwrap();
    let mut cmd = ns.command("bird");
    cmd.arg("-f")
        .arg("-c")
        .arg(&file)
        .arg("-s")
        .arg(dir.join(format!("{name}.ctl")));
    cmd.arg("-P").arg(dir.join(format!("{name}.pid")));
    spawn(cmd, dir.join(format!("{name}.log")))
}

fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in values {
        s = s.replace(&format!("@{k}@"), v);
    }
    let unfilled = s
        .split('@')
        .skip(1)
        .any(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()));
    assert!(!unfilled, "unfilled placeholder in\n{s}");
    s
}

impl Anycast {
    fn new() -> Anycast {
        let id = std::process::id();
        let ns = |n: &str| Netns::new(format!("bra{id}-{n}"));
        let dir = std::env::temp_dir().join(format!("br6rd-anycast-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (lan, lanrtr, vpcrtr, ce1) = (ns("lan"), ns("lanrtr"), ns("vpcrtr"), ns("ce1"));
        let gws: Vec<Gateway> = (1..=2)
            .map(|i| Gateway {
                daemon: Mutex::new(None),
                ns: ns(&format!("gw{i}")),
                index: i,
                config: dir.join(format!("gw{i}.toml")),
            })
            .collect();
        veth(&lan, "eth0", &lanrtr, "lan0");
        // veth leaves checksums to offload, and an AF_XDP copy would carry
        // the partial one on: the senders compute theirs (as in the lab).
        lan.sh("ethtool -K eth0 tx off >/dev/null");
        lan.sh(&format!("ip -6 addr add {LAN_SERVER}/64 dev eth0 nodad"));
        lan.sh("ip -6 route add default via 2001:db8:0:100::1");
        lanrtr.sh("ip -6 addr add 2001:db8:0:100::1/64 dev lan0 nodad");
        veth(&ce1, "eth0", &vpcrtr, "ce0");
        ce1.sh("ethtool -K eth0 tx off >/dev/null");
        ce1.sh(&format!("ip addr add {CE1_V4}/16 dev eth0"));
        ce1.sh("ip route add default via 10.96.0.254");
        vpcrtr.sh("ip addr add 10.96.0.254/16 dev ce0");
        for r in [&lanrtr, &vpcrtr] {
            forwarding(r);
        }
        for g in &gws {
            let i = g.index;
            veth(&lanrtr, &format!("gw{i}"), &g.ns, "gw-lan");
            veth(&vpcrtr, &format!("gw{i}"), &g.ns, "gw-wan");
            lanrtr.sh(&format!(
                "ip -6 addr add 2001:db8:a{i}::fe/64 dev gw{i} nodad"
            ));
            vpcrtr.sh(&format!("ip addr add 10.0.{i}.254/24 dev gw{i}"));
            g.ns.sh(&format!(
                "ip -6 addr add 2001:db8:a{i}::1/64 dev gw-lan nodad"
            ));
            g.ns.sh(&format!("ip addr add 10.0.{i}.1/24 dev gw-wan"));
            g.ns.sh(&format!("ip -6 route add {LAN_NET} via 2001:db8:a{i}::fe"));
            g.ns.sh(&format!("ip route add 10.96.0.0/16 via 10.0.{i}.254"));
            forwarding(&g.ns);
            std::fs::write(&g.config, daemon_config()).unwrap();
        }
        let senders = Arc::new(lan.enter(|| {
            let to = SocketAddrV6::new(CE1_V6.parse().unwrap(), FLOW_PORT, 0, 0);
            (0..FLOWS)
                .map(|_| {
                    let s = UdpSocket::bind("[::]:0").unwrap();
                    s.connect(to).unwrap();
                    s
                })
                .collect::<Vec<_>>()
        }));
        let back_sender = Arc::new(ce1.enter(|| UdpSocket::bind("[::]:0").unwrap()));
        let mut any = Anycast {
            dir,
            senders,
            back_sender,
            birds: Vec::new(),
            ce_emulator: None,
            gws,
            lan,
            lanrtr,
            vpcrtr,
            ce1,
        };
        any.start_birds();
        any
    }

    fn start_birds(&mut self) {
        for g in &self.gws {
            let i = g.index;
            let conf = fill(
                BR_CONF,
                &[
                    ("ROUTER_ID", format!("192.0.2.{i}")),
                    ("WAN_LOCAL", format!("10.0.{i}.1")),
                    ("WAN_PEER", format!("10.0.{i}.254")),
                    ("LAN_LOCAL", format!("2001:db8:a{i}::1")),
                    ("LAN_PEER", format!("2001:db8:a{i}::fe")),
                    ("BR_AS", "65001".into()),
                    ("ROUTER_AS", "65000".into()),
                ],
            );
            self.birds
                .push(bird(&self.dir, &g.ns, &format!("gw{i}"), &conf));
        }
        for (ns, name, family, peer) in [
            (&self.lanrtr, "lanrtr", "ipv6", "2001:db8:a{i}::1"),
            (&self.vpcrtr, "vpcrtr", "ipv4", "10.0.{i}.1"),
        ] {
            let peers: String = (1..=2)
                .map(|i| {
                    let addr = peer.replace("{i}", &i.to_string());
                    format!("protocol bgp br{i} from brs {{ neighbor {addr} as 65001; }}\n")
                })
                .collect();
            let id = if name == "lanrtr" {
                "192.0.2.101"
            } else {
                "192.0.2.102"
            };
            let conf = fill(
                ROUTER_CONF,
                &[
                    ("ROUTER_ID", id.into()),
                    ("FAMILY", family.into()),
                    ("ROUTER_AS", "65000".into()),
                    ("PEERS", peers),
                ],
            );
            self.birds.push(bird(&self.dir, ns, name, &conf));
        }
    }

    fn start_daemon(&self, gw: usize) {
        let g = &self.gws[gw];
        let mut cmd = g.ns.command(daemon_binary().to_str().unwrap());
        cmd.args(["run", "--config", g.config.to_str().unwrap()]);
        let log = self
            .dir
            .join(format!("daemon-gw{}-{}.log", g.index, now_ms()));
        let daemon = spawn(cmd, log);
        let ns = &g.ns;
        assert!(
            eventually(Duration::from_secs(20), || try_metrics(ns).is_some()),
            "br-daemon on gw{} did not come up:\n{}",
            g.index,
            daemon.output()
        );
        *g.daemon.lock().unwrap() = Some(daemon);
    }

    fn start_ce(&mut self) {
        let mut cmd = self.ce1.command(env!("CARGO_BIN_EXE_ce-emulator"));
        cmd.args(["sit1", CE1_V4, BR_V4, &format!("{CE1_V6}/96")]);
        self.ce_emulator = Some(spawn(cmd, self.dir.join("ce-emulator.log")));
        let ce1 = &self.ce1;
        assert!(eventually(Duration::from_secs(10), || ce1
            .try_sh("ip -6 route show default | grep -q sit1")
            .status
            .success()));
    }

    /// How many next hops `ns`'s kernel has for `route`.
    fn next_hops(ns: &Netns, family: &str, route: &str) -> usize {
        let out = ns.try_sh(&format!("ip {family} route show {route}"));
        let text = String::from_utf8_lossy(&out.stdout);
        let nexthops = text.matches("nexthop").count();
        if nexthops > 0 {
            nexthops
        } else {
            usize::from(text.contains(" via "))
        }
    }

    /// Waits until both routers route to `want` BRs.
    fn wait_for_next_hops(&self, want: usize, limit: Duration) -> Duration {
        let start = Instant::now();
        let ok = eventually(limit, || {
            Self::next_hops(&self.lanrtr, "-6", PREFIX) == want
                && Self::next_hops(&self.vpcrtr, "-4", BR_V4) == want
        });
        assert!(
            ok,
            "routers do not see {want} BR(s):\nlanrtr: {}\nvpcrtr: {}\n{}",
            self.lanrtr.sh(&format!("ip -6 route show {PREFIX}")),
            self.vpcrtr.sh(&format!("ip route show {BR_V4}")),
            self.logs()
        );
        start.elapsed()
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for p in &self.birds {
            s += &format!("--- {}\n{}\n", p.log.display(), p.output());
        }
        for g in &self.gws {
            if let Some(p) = g.daemon.lock().unwrap().as_ref() {
                s += &format!("--- {}\n{}\n", p.log.display(), p.output());
            }
        }
        s
    }

    fn counter(&self, gw: usize, kind: &str, name: &str) -> u64 {
        try_metrics(&self.gws[gw].ns).map_or(0, |m| counter_in(&m, kind, name))
    }

    /// Packets gateway `gw` relayed (encapsulated + decapsulated).
    fn relayed(&self, gw: usize) -> u64 {
        self.counter(gw, "path", "encapsulated") + self.counter(gw, "path", "decapsulated")
    }
}

/// The health check's self-check on gateway `gw`: its probes (two a
/// second) are relayed and counted as `self-check`, never as `to-host`.
fn assert_probes_relayed(any: &Anycast, gw: usize) {
    let before = any.counter(gw, "path", "self-check");
    std::thread::sleep(Duration::from_millis(1600));
    let after = any.counter(gw, "path", "self-check");
    assert!(
        (2..=5).contains(&(after - before)),
        "gw{}: {before} -> {after} probes relayed in 1.6 s\n{}",
        gw + 1,
        any.logs()
    );
    assert_eq!(any.counter(gw, "path", "to-host"), 0, "gw{}", gw + 1);
    eprintln!(
        "anycast: gw{} relayed {} self-check probes in 1.6 s",
        gw + 1,
        after - before
    );
}

fn daemon_config() -> String {
    format!(
        "[relay]\ninterfaces = [\"gw-lan\", \"gw-wan\"]\nce-interfaces = [\"gw-wan\"]\n\
         announce-table = 6969\nmetrics = \"127.0.0.1:9641\"\n\n[[domain]]\nname = \"vpc\"\n\
         prefix = \"{PREFIX}\"\nbr-ipv4 = \"{BR_V4}\"\nce-ipv4-allow = [\"10.96.0.0/16\"]\n"
    )
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn try_metrics(ns: &Netns) -> Option<String> {
    use std::io::{Read, Write};
    ns.enter(|| {
        let mut s = std::net::TcpStream::connect_timeout(
            &"127.0.0.1:9641".parse().ok()?,
            Duration::from_secs(1),
        )
        .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.contains("br6rd_io_packets_total").then_some(body)
    })
}

/// The 6rd address CE `v4` numbers itself with (SCENARIO: /64 + 32 bits, ::1).
fn ce_v6(v4: Ipv4Addr) -> Ipv6Addr {
    let p: Ipv6Addr = "2001:db8:0:f096::".parse().unwrap();
    Ipv6Addr::from(u128::from(p) | (u128::from(u32::from(v4)) << 32) | 1)
}

/// Protocol 41 from `count` CEs (10.96.2.0 + i) to the BR, one ping-less
/// UDP packet each to the LAN server, sent from ns ce1 with IP_HDRINCL.
fn send_from_many_ces(ce1: &Netns, count: u32) {
    ce1.enter(move || {
        // SAFETY: a plain socket(2), checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket");
        let lan: Ipv6Addr = LAN_SERVER.parse().unwrap();
        let br: Ipv4Addr = BR_V4.parse().unwrap();
        for i in 0..count {
            let ce = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 2, 0)) + i);
            let inner =
                etherparse::PacketBuilder::ipv6(ce_v6(ce).octets(), lan.octets(), 64).udp(4000, 9);
            let mut ipv6 = Vec::new();
            inner.write(&mut ipv6, b"from a CE").unwrap();
            let mut outer = etherparse::Ipv4Header::new(
                ipv6.len() as u16,
                64,
                etherparse::IpNumber::IPV6,
                ce.octets(),
                br.octets(),
            )
            .unwrap();
            outer.header_checksum = outer.calc_header_checksum();
            let mut packet = outer.to_bytes().to_vec();
            packet.extend_from_slice(&ipv6);
            let to = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(br).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sendto with a live buffer and sockaddr of the given sizes.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            assert_eq!(sent, packet.len() as isize, "sendto");
            std::thread::sleep(Duration::from_micros(500));
        }
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
    });
}

/// What the receivers saw: per flow, the sequence numbers received.
struct Received {
    flows: Vec<Vec<u32>>,
    back: Vec<u32>,
    sent: Vec<u32>,
    back_sent: u32,
}

impl Received {
    /// Lost packets of flow `f`, and the longest run of them (the window).
    fn lost(got: &[u32], sent: u32) -> (u32, u32) {
        let mut seen = vec![false; sent as usize];
        for &s in got {
            if let Some(x) = seen.get_mut(s as usize) {
                *x = true;
            }
        }
        let (mut lost, mut run, mut longest) = (0, 0, 0);
        for s in seen {
            if s {
                run = 0;
            } else {
                lost += 1;
                run += 1;
                longest = longest.max(run);
            }
        }
        (lost, longest)
    }
}

/// Runs the flows for `duration`, calling `during` after `at`.
fn flows(any: &Anycast, duration: Duration, at: Duration, during: impl FnOnce()) -> Received {
    let stop = Arc::new(AtomicBool::new(false));
    let recv_flows = {
        let stop = Arc::clone(&stop);
        any.ce1.spawn_in(move || {
            let sock = UdpSocket::bind(("::", FLOW_PORT)).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut got = vec![Vec::new(); FLOWS];
            let mut buf = [0u8; 64];
            let mut quiet_since = None;
            loop {
                if let Ok(n) = sock.recv(&mut buf) {
                    if n == 8 {
                        let f = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                        let s = u32::from_be_bytes(buf[4..8].try_into().unwrap());
                        if let Some(g) = got.get_mut(f) {
                            g.push(s);
                        }
                    }
                    quiet_since = None;
                } else if stop.load(Ordering::Relaxed) {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() > Duration::from_millis(300) {
                        return got;
                    }
                }
            }
        })
    };
    let recv_back = {
        let stop = Arc::clone(&stop);
        any.lan.spawn_in(move || {
            let sock = UdpSocket::bind(("::", BACK_PORT)).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                match sock.recv(&mut buf) {
                    Ok(4) => got.push(u32::from_be_bytes(buf[..4].try_into().unwrap())),
                    Ok(_) => {}
                    Err(_) if stop.load(Ordering::Relaxed) => return got,
                    Err(_) => {}
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let socks = Arc::clone(&any.senders);
    let send_flows = std::thread::spawn(move || {
        // The probes' ICMPv6 port unreachables are pending on the connected
        // sockets: a send would report one instead of sending.
        for s in socks.iter() {
            let _ = s.take_error();
        }
        let start = Instant::now();
        let mut seq = 0u32;
        while start.elapsed() < duration {
            for (f, s) in socks.iter().enumerate() {
                let mut msg = (f as u32).to_be_bytes().to_vec();
                msg.extend_from_slice(&seq.to_be_bytes());
                // An ICMPv6 error (the killed BR's kernel has no route)
                // is reported by the next send, which then sends nothing.
                if s.send(&msg).is_err() {
                    s.send(&msg).expect("send");
                }
            }
            seq += 1;
            std::thread::sleep(PACE);
        }
        seq
    });
    let back = Arc::clone(&any.back_sender);
    let send_back = std::thread::spawn(move || {
        let to = SocketAddrV6::new(LAN_SERVER.parse().unwrap(), BACK_PORT, 0, 0);
        let start = Instant::now();
        let mut seq = 0u32;
        while start.elapsed() < duration {
            let _ = back.send_to(&seq.to_be_bytes(), to);
            seq += 1;
            std::thread::sleep(PACE);
        }
        seq
    });
    std::thread::sleep(at);
    during();
    let sent = send_flows.join().unwrap();
    let back_sent = send_back.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    Received {
        flows: recv_flows.join().unwrap(),
        back: recv_back.join().unwrap(),
        sent: vec![sent; FLOWS],
        back_sent,
    }
}

/// Which gateway carries each LAN → CE1 flow now, and the CE1 → LAN one:
/// each flow alone, its packets counted where they were encapsulated.
fn flow_map(any: &Anycast) -> (Vec<usize>, usize) {
    let which = |f: &dyn Fn()| -> usize {
        let before: Vec<u64> = (0..2).map(|g| any.relayed(g)).collect();
        f();
        let mut grew = Vec::new();
        assert!(eventually(Duration::from_secs(3), || {
            grew = (0..2).map(|g| any.relayed(g) - before[g]).collect();
            grew.iter().any(|&n| n >= 20)
        }));
        usize::from(grew[1] > grew[0])
    };
    // To an unused port of the receivers: CE1 answers with ICMPv6 (rate
    // limited, fewer than 20), so the probe's 20 decide.
    let map = any
        .senders
        .iter()
        .map(|s| {
            which(&|| {
                // Each ICMPv6 error fails one send: 20 that went out.
                let mut sent = 0;
                for _ in 0..100 {
                    sent += usize::from(s.send(&[0xff; 3]).is_ok());
                    if sent == 20 {
                        break;
                    }
                }
                assert_eq!(sent, 20);
            })
        })
        .collect();
    let to = SocketAddrV6::new(LAN_SERVER.parse().unwrap(), BACK_PORT, 0, 0);
    let back = which(&|| {
        for _ in 0..20 {
            any.back_sender.send_to(&[0xff; 3], to).unwrap();
        }
    });
    (map, back)
}

/// Loss per flow, printed; returns (lost, window in packets) per flow and
/// for the CE1 → LAN flow.
fn report(
    what: &str,
    r: &Received,
    map: &[usize],
    back_gw: usize,
) -> (Vec<(u32, u32)>, (u32, u32)) {
    let per: Vec<(u32, u32)> = r
        .flows
        .iter()
        .zip(&r.sent)
        .map(|(got, &sent)| Received::lost(got, sent))
        .collect();
    let back = Received::lost(&r.back, r.back_sent);
    let ms = |n: u32| n as u128 * PACE.as_millis();
    let mut by_gw: BTreeMap<usize, (u32, u32)> = BTreeMap::new();
    for (f, (lost, window)) in per.iter().enumerate() {
        let e = by_gw.entry(map[f] + 1).or_default();
        e.0 += lost;
        e.1 = e.1.max(*window);
    }
    eprintln!(
        "anycast: {what}: LAN -> CE flows by gateway (lost, longest gap): {:?}; \
         CE -> LAN (via gw{}): lost {}, gap {} ms; {} packets per flow",
        by_gw
            .iter()
            .map(|(g, (l, w))| format!("gw{g}: {l} lost, {} ms", ms(*w)))
            .collect::<Vec<_>>(),
        back_gw + 1,
        back.0,
        ms(back.1),
        r.sent[0]
    );
    (per, back)
}

#[test]
fn two_brs_share_the_traffic_fail_over_come_back_and_drain_without_loss() {
    let mut any = Anycast::new();
    any.start_daemon(0);
    any.start_daemon(1);
    any.start_ce();
    let up = any.wait_for_next_hops(2, Duration::from_secs(30));
    eprintln!("anycast: both BRs are next hops on both routers after {up:?}");
    for g in 0..2 {
        assert_probes_relayed(&any, g);
    }

    // 400 CEs: the VPC router's ECMP spreads them over both BRs.
    let before: Vec<u64> = (0..2)
        .map(|g| any.counter(g, "path", "decapsulated"))
        .collect();
    send_from_many_ces(&any.ce1, 400);
    let mut split = vec![0u64; 2];
    eventually(Duration::from_secs(3), || {
        split = (0..2)
            .map(|g| any.counter(g, "path", "decapsulated") - before[g])
            .collect();
        split.iter().sum::<u64>() >= 400
    });
    eprintln!("anycast: 400 CEs split {} / {}", split[0], split[1]);
    assert_eq!(
        split.iter().sum::<u64>(),
        400,
        "every CE's packet relayed\n{}",
        any.logs()
    );
    assert!(
        split.iter().all(|&n| (160..=240).contains(&n)),
        "within ±20 %: {split:?}"
    );

    // kill -9 of the BR that carries CE1 -> LAN: only its flows lose.
    let (map, back_gw) = flow_map(&any);
    assert!(
        map.contains(&0) && map.contains(&1),
        "flows on both BRs: {map:?}"
    );
    let victim = back_gw;
    let r = flows(
        &any,
        Duration::from_secs(4),
        Duration::from_millis(1500),
        || {
            let daemon = any.gws[victim].daemon.lock().unwrap();
            daemon.as_ref().unwrap().signal(libc::SIGKILL);
        },
    );
    let (per, back) = report(&format!("kill -9 of gw{}", victim + 1), &r, &map, back_gw);
    for (f, (lost, _)) in per.iter().enumerate() {
        if map[f] != victim {
            let mut got = r.flows[f].clone();
            got.sort();
            let missing: Vec<u32> = (0..r.sent[f])
                .filter(|s| got.binary_search(s).is_err())
                .collect();
            assert_eq!(*lost, 0, "flow {f} on the surviving BR lost {missing:?}");
        }
    }
    let window = per.iter().map(|p| p.1).max().unwrap().max(back.1);
    assert!(window > 0, "the killed BR's flows lost something: {per:?}");
    assert!(
        u128::from(window) * PACE.as_millis() < 2000,
        "withdrawn within 2 s: {window} packets"
    );
    any.wait_for_next_hops(1, Duration::from_secs(5));

    // It comes back: traffic returns to it, nothing is lost.
    let r = flows(
        &any,
        Duration::from_secs(4),
        Duration::from_millis(500),
        || {
            any.start_daemon(victim);
            any.wait_for_next_hops(2, Duration::from_secs(10));
        },
    );
    let (map_after, back_after) = flow_map(&any);
    let what = format!("gw{} back", victim + 1);
    assert_nothing_lost(&what, &r, &map_after, back_after);
    assert!(
        map_after.contains(&victim),
        "traffic returned: {map_after:?}"
    );

    // Drain, then stop: nothing is lost.
    let drained = 1 - victim;
    let r = flows(
        &any,
        Duration::from_secs(5),
        Duration::from_millis(500),
        || {
            let g = &any.gws[drained];
            let out = g.ns.sh(&format!("{} drain", daemon_binary().display()));
            assert!(out.contains("\"draining\":true"), "{out}");
            any.wait_for_next_hops(1, Duration::from_secs(5));
            // Stop once its counters stand still: traffic has moved.
            let mut last = any.relayed(drained);
            assert!(eventually(Duration::from_secs(5), || {
                std::thread::sleep(Duration::from_millis(300));
                let now = any.relayed(drained);
                std::mem::replace(&mut last, now) == now
            }));
            let mut d = any.gws[drained].daemon.lock().unwrap().take().unwrap();
            d.signal(libc::SIGTERM);
            assert!(d
                .wait_for_exit(Duration::from_secs(10))
                .is_some_and(|s| s.success()));
        },
    );
    let what = format!("drain then stop of gw{}", drained + 1);
    assert_nothing_lost(&what, &r, &map_after, back_after);
}

/// Reports the flows and asserts that none lost a packet.
fn assert_nothing_lost(what: &str, r: &Received, map: &[usize], back_gw: usize) {
    let (per, back) = report(what, r, map, back_gw);
    let lost = per.iter().map(|p| p.0).sum::<u32>() + back.0;
    assert_eq!(lost, 0, "{what}: {per:?} {back:?}");
}
