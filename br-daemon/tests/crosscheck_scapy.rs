//! Packets the relay builds, parsed by an implementation we did not
//! write: scapy (Debian's python3-scapy, installed by `cargo xtask test`).
//! scapy recomputes every checksum; they must equal ours.

use std::io::Write;
use std::net::Ipv6Addr;
use std::process::{Command, Stdio};

use br_daemon::relay::{Domain, DomainSpec, Domains, Frame, IcmpRate, Relay, Verdict};

const SCRIPT: &str = r#"
import sys
from scapy.all import IP, IPv6, raw
for line in sys.stdin:
    kind, hexdata = line.split()
    data = bytes.fromhex(hexdata)
    p = IP(data) if kind == "4" else IPv6(data)
    fields = []
    if kind == "4":
        again = p.copy(); del again[IP].chksum
        fields += ["ip", p.src, p.dst, str(p.proto), str(p.ttl), str(p.tos), "df=" + str(int(p.flags.DF)),
                   "ipsum-ok" if IP(raw(again)).chksum == p.chksum else "ipsum-BAD"]
        p = p[IPv6]
    fields += ["ip6", p.src, p.dst, str(p.hlim), str(p.tc)]
    if p.nh == 58:
        icmp = p.payload
        again = p.copy(); del again.payload.cksum
        ok = IPv6(raw(again)).payload.cksum == icmp.cksum
        fields += ["icmp6", str(icmp.type), str(icmp.code), "sum-ok" if ok else "sum-BAD"]
        if icmp.type == 2:
            fields.append("mtu=" + str(icmp.mtu))
    print(" ".join(fields))
"#;

fn relay() -> Relay {
    let spec = DomainSpec::new(
        "vpc",
        "2001:db8:0:f096::/64".parse().unwrap(),
        0,
        "10.255.255.222".parse().unwrap(),
    );
    Relay::new(
        Domains::new(vec![Domain::new(&spec).unwrap().0]).unwrap(),
        IcmpRate::default(),
    )
}

fn echo(src: &str, dst: &str, hop: u8, tc: u8, len: usize) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv6(
        src.parse::<Ipv6Addr>().unwrap().octets(),
        dst.parse::<Ipv6Addr>().unwrap().octets(),
        hop,
    )
    .icmpv6_echo_request(1, 2);
    let payload = vec![7u8; len];
    let mut p = Vec::new();
    builder.write(&mut p, &payload).unwrap();
    p[0] = 0x60 | (tc >> 4);
    p[1] = (p[1] & 0x0f) | (tc << 4);
    p
}

fn run(relay: &Relay, packet: &[u8], ipv4: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 128 + packet.len()];
    buf[128..].copy_from_slice(packet);
    let mut f = Frame::new(&mut buf, 128, packet.len()).unwrap();
    let mut st = relay.worker_state(0);
    let v = if ipv4 {
        relay.from_ipv4(&mut st, &mut f, 0)
    } else {
        relay.from_ipv6(&mut st, &mut f, 0)
    };
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    f.data().to_vec()
}

#[test]
fn scapy_agrees_with_what_we_build() {
    let r = relay();
    let lan = "2001:db8:0:100:5054:1cff:fe93:3ea8";
    let ce = "2001:db8:0:f096:a60:164::1";
    let encapsulated = run(&r, &echo(lan, ce, 64, 0xb8, 56), false);
    let too_big = run(&r, &echo(lan, ce, 64, 0, 1400), false);
    let expired = run(&r, &echo(lan, ce, 1, 0, 8), false);
    // Time Exceeded for a CE goes back through the tunnel.
    let mut from_ce = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 41, 0, 0, 10, 96, 1, 100, 10, 255, 255, 222,
    ];
    from_ce.extend(echo(ce, lan, 1, 0, 8));
    let total = from_ce.len() as u16;
    from_ce[2..4].copy_from_slice(&total.to_be_bytes());
    let sum = br_daemon::relay::wire::checksum(&from_ce[..20]);
    from_ce[10..12].copy_from_slice(&sum.to_be_bytes());
    let expired_to_ce = run(&r, &from_ce, true);

    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (cargo xtask test installs python3-scapy)");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let input = format!(
        "4 {}\n6 {}\n6 {}\n4 {}\n",
        hex(&encapsulated),
        hex(&too_big),
        hex(&expired),
        hex(&expired_to_ce)
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scapy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("ip 10.255.255.222 10.96.1.100 41 64 184 df=0 ipsum-ok ip6 {lan} 2001:db8:0:f096:a60:164:0:1 63 184 icmp6 128 0 sum-ok")
    );
    assert_eq!(
        lines[1],
        format!("ip6 2001:db8:0:f096:aff:ffde:0:1 {lan} 64 0 icmp6 2 0 sum-ok mtu=1280")
    );
    assert_eq!(
        lines[2],
        format!("ip6 2001:db8:0:f096:aff:ffde:0:1 {lan} 64 0 icmp6 3 0 sum-ok")
    );
    assert_eq!(
        lines[3],
        "ip 10.255.255.222 10.96.1.100 41 64 0 df=0 ipsum-ok ip6 2001:db8:0:f096:aff:ffde:0:1 2001:db8:0:f096:a60:164:0:1 64 0 icmp6 3 0 sum-ok"
    );
}
