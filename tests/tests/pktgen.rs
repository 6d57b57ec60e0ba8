//! `br-bench --generator pktgen` on a kernel that has pktgen: this host's
//! has none, the Debian 6.12 cloud kernel has it as a module. In a qemu
//! guest (TCG: rates mean nothing there, only what is sent), the bench's
//! own pktgen commands (`br_tests::pktgen`, rendered as a script) send the
//! encap stream of 65,536 CEs from one namespace to another over a veth,
//! and the receiving side counts exactly what pktgen says it sent, to
//! random CEs of the 6rd prefix, from the LAN host, with the frame size
//! asked for. It also shows pktgen refusing a `sit` device (why the
//! protocol-41 streams keep the AF_XDP generator).

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::time::Duration;

use br_tests::pktgen::{self, Stream};
use br_tests::vm::{GuestKernel, Vm};

const COUNT: u64 = 2000;
const SINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x5c];

fn must(vm: &mut Vm, cmd: &str) -> String {
    let (status, out) = vm.run(cmd, Duration::from_secs(120));
    assert_eq!(status, 0, "`{cmd}` failed:\n{out}");
    out
}

/// The sink's received frames so far.
fn rx(vm: &mut Vm) -> u64 {
    must(
        vm,
        "/usr/bin/ip netns exec sink cat /sys/class/net/sink0/statistics/rx_packets",
    )
    .trim()
    .parse()
    .unwrap()
}

/// The bench's encap stream of 65,536 CEs, paced, from the LAN host.
fn encap_stream() -> Stream {
    Stream {
        dev: "gen0".into(),
        thread: 0,
        dst_mac: SINK_MAC,
        src: "2001:db8:ee::2".parse().unwrap(),
        dst: (
            "2001:db8:0:f096:a60::1".parse().unwrap(),
            Some("2001:db8:0:f096:a60:ffff:0:1".parse().unwrap()),
        ),
        frame_len: 78,
        count: COUNT,
        rate: Some(5_000),
    }
}

#[test]
fn pktgen_sends_the_encap_stream_the_sink_counts() {
    let stream = encap_stream();
    // The bench's own commands, as a script the guest runs.
    let script = std::env::temp_dir().join(format!("br6rd-pktgen-{}.sh", std::process::id()));
    std::fs::write(&script, pktgen::script(&stream)).unwrap();
    let sender = std::path::Path::new(env!("CARGO_BIN_EXE_br-pktgen"));
    let vm = Vm::boot_standalone(
        GuestKernel::Debian6_12,
        "pktgen",
        &[
            ("/pktgen-setup.sh", &script),
            ("/usr/bin/br-pktgen", sender),
        ],
        512,
    );
    let _ = std::fs::remove_file(&script);
    let mut vm = vm.expect("boot the 6.12 guest");
    let ip = "/usr/bin/ip";
    must(
        &mut vm,
        &format!(
            "{ip} netns add gen && {ip} netns add sink && \
             {ip} link add gen0 netns gen type veth peer sink0 netns sink && \
             {ip} -n sink link set sink0 address 02:00:00:00:00:5c && \
             {ip} netns exec gen sysctl -qw net.ipv6.conf.gen0.disable_ipv6=1 && \
             {ip} -n gen link set gen0 up && {ip} -n sink link set sink0 up && \
             {ip} -n gen link set lo up"
        ),
    );
    must(&mut vm, &format!("{ip} netns exec gen sh /pktgen-setup.sh"));
    // A sample of what arrives, while pktgen sends.
    must(
        &mut vm,
        &format!(
            "({ip} netns exec sink tcpdump -n -Q in -c 400 -i sink0 ip6 and udp > /tmp/sample 2>/dev/null &) ; sleep 2"
        ),
    );
    let before = rx(&mut vm);
    must(
        &mut vm,
        &format!("{ip} netns exec gen sh -c \"echo start > /proc/net/pktgen/pgctrl\""),
    );
    let status = must(
        &mut vm,
        &format!("{ip} netns exec gen cat /proc/net/pktgen/gen0"),
    );
    assert_eq!(pktgen::sent(&status), Some(COUNT), "{status}");
    let after = rx(&mut vm);
    // gen0 has no IPv6 of its own (no DAD, MLD or RS): only pktgen sends.
    assert_eq!(after - before, COUNT, "the sink counts what pktgen sent");

    let sample = must(&mut vm, "sleep 1; cat /tmp/sample");
    let lines: Vec<&str> = sample.lines().filter(|l| l.contains(" > ")).collect();
    assert!(lines.len() >= 300, "a sample of the stream:\n{sample}");
    let mut ces = BTreeSet::new();
    for l in &lines {
        // "... IP6 2001:db8:ee::2.9 > 2001:db8:0:f096:a60:1234:0:1.9: UDP, length 16"
        let words: Vec<&str> = l.split_whitespace().collect();
        let at = words.iter().position(|w| *w == ">").expect("a >");
        assert!(words[at - 1].starts_with("2001:db8:ee::2."), "{l}");
        let (dst, _port) = words[at + 1]
            .trim_end_matches(':')
            .rsplit_once('.')
            .expect("address.port");
        let dst: Ipv6Addr = dst.parse().expect("an IPv6 destination");
        let s = dst.segments();
        // The 6rd prefix, the CE's IPv4 address in 10.96/16, subnet 0, host 1.
        assert_eq!(
            (s[..4].to_vec(), s[4], s[6], s[7]),
            (vec![0x2001, 0xdb8, 0, 0xf096], 0x0a60, 0, 1),
            "{l}"
        );
        ces.insert(dst);
        assert!(l.contains("UDP"), "{l}");
    }
    eprintln!(
        "pktgen: {COUNT} sent and counted; {} distinct CEs in a sample of {}",
        ces.len(),
        lines.len()
    );
    assert!(
        ces.len() * 10 >= lines.len() * 9,
        "random CEs: {}",
        ces.len()
    );

    // pktgen refuses a sit device: not Ethernet.
    let (status, out) = vm.run(
        &format!(
            "{ip} -n gen link add sit1 type sit local 10.96.1.100 remote 10.255.255.222 && \
             {ip} -n gen link set sit1 up && \
             {ip} netns exec gen sh -c \"echo 'add_device sit1' > /proc/net/pktgen/kpktgend_0\"; \
             {ip} netns exec gen cat /proc/net/pktgen/kpktgend_0"
        ),
        Duration::from_secs(60),
    );
    // The bench's own runner (br_tests::pktgen::run, as br-bench calls
    // it): paced with a count, then flat out until stopped.
    for (count, rate, seconds) in [(1000, 10_000, 0.0), (0, 0, 0.5)] {
        let before = rx(&mut vm);
        let out = must(
            &mut vm,
            &format!(
                "{ip} netns exec gen br-pktgen gen0 02:00:00:00:00:5c 2001:db8:ee::2 \
                 2001:db8:0:f096:a60::1 2001:db8:0:f096:a60:ffff:0:1 64 {count} {rate} {seconds}"
            ),
        );
        let sent: u64 = out
            .split_whitespace()
            .skip_while(|w| *w != "sent")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count sent in {out}"));
        if count > 0 {
            assert_eq!(sent, count, "{out}");
        }
        assert!(sent > 0, "{out}");
        assert_eq!(
            rx(&mut vm) - before,
            sent,
            "flat out: the sink counts what was sent"
        );
        eprintln!("pktgen: br-pktgen count {count} rate {rate}: {sent} sent and counted");
    }

    let listed = out
        .lines()
        .any(|l| (l.starts_with("Running:") || l.starts_with("Stopped:")) && l.contains("sit1"));
    assert!(
        status == 0 && out.contains("ERROR: can not add device sit1") && !listed,
        "pktgen refuses sit1:\n{out}"
    );
}
