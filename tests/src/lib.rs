//! Test support: network namespaces, the SCENARIO.md lab, the daemon as
//! a child process. Everything is undone on drop, also when a test fails;
//! loops are bounded in count and time.
//!
//! ```text
//!  ns lan                 ns gw (br-daemon)                ns vpc (bridge)    ns ce1 / ce2
//!  lan0 ───────────── gw-lan [XDP]   gw-wan [XDP] ──────── vpc-gw ── br ── ce1 eth0 / ce2 eth0
//!  2001:db8:0:100:        2001:db8:0:100::1/64 10.96.0.1/16                  10.96.1.100 / .101
//!  5054:1cff:fe93:3ea8    2001:db8:0:f013::110/64                            sit1 (ce-emulator)
//!                         br6rd0 (TUN): 2001:db8:0:f096:aff:ffde::1, 10.255.255.222
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod pktgen;
pub mod vm;

pub const LAN_SERVER: &str = "2001:db8:0:100:5054:1cff:fe93:3ea8";
pub const GW_LAN: &str = "2001:db8:0:f013::110";
pub const GW_LAN_SUBNET_ADDR: &str = "2001:db8:0:100::1";
pub const CE1_V4: &str = "10.96.1.100";
pub const CE2_V4: &str = "10.96.1.101";
pub const CE1_V6: &str = "2001:db8:0:f096:a60:164:0:1";
pub const CE2_V6: &str = "2001:db8:0:f096:a60:165:0:1";
pub const BR_V4: &str = "10.255.255.222";
/// As ping prints it (RFC 5952: a single zero group is not compressed).
pub const BR_V6: &str = "2001:db8:0:f096:aff:ffde:0:1";
pub const GW_WAN_V4: &str = "10.96.0.1";

/// Labs share the two CPUs badly; run them one at a time.
static LAB_LOCK: Mutex<()> = Mutex::new(());
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Runs a command; panics with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// `sh -c cmd` inside the namespace; panics on failure.
    pub fn sh(&self, cmd: &str) -> String {
        let out = run("ip", &["netns", "exec", &self.name, "sh", "-c", cmd]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sh -c cmd` inside the namespace; returns the output whatever happens.
    pub fn try_sh(&self, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .expect("cannot run ip netns exec")
    }

    /// A command inside the namespace, for spawning.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that has entered the namespace (sockets it
    /// opens belong to the namespace).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_in(f).join().expect("namespace thread panicked")
    }

    /// Like [`Self::enter`], without waiting.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns file");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only, with a namespace fd.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}");
            f()
        })
    }

    /// The MAC address of an interface in the namespace.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let text = self.sh(&format!("cat /sys/class/net/{dev}/address"));
        let bytes: Vec<u8> = text
            .trim()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).expect("hex"))
            .collect();
        bytes.try_into().expect("6 bytes")
    }

    /// tcpdump on `dev` (`-v`, decoded, line-buffered) into `log`, once it
    /// listens; it stops with the returned process.
    pub fn tcpdump(&self, dev: &str, filter: &str, log: &std::path::Path) -> Proc {
        let mut cmd = self.command("tcpdump");
        cmd.args(["-n", "-v", "-l", "-i", dev, filter]);
        let p = spawn(cmd, log.to_path_buf());
        assert!(
            eventually(Duration::from_secs(5), || p
                .output()
                .contains("listening on")),
            "tcpdump did not start: {}",
            p.output()
        );
        p
    }

    /// Sends raw Ethernet frames out of `dev` (AF_PACKET: no kernel rewriting).
    pub fn send_frames(&self, dev: &str, frames: Vec<Vec<u8>>) {
        let dev = dev.to_string();
        self.enter(move || {
            // SAFETY: plain socket(2), checked below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            assert!(fd >= 0, "AF_PACKET socket");
            let name = std::ffi::CString::new(dev).expect("name");
            // SAFETY: a valid C string.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            // SAFETY: zeroed sockaddr_ll is valid; fields set below.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_ifindex = ifindex as i32;
            sa.sll_halen = 6;
            for f in frames {
                sa.sll_addr[..6].copy_from_slice(&f[..6]);
                // SAFETY: live buffer and address of the sizes passed.
                let n = unsafe {
                    libc::sendto(
                        fd,
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        (&sa as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(n as usize, f.len(), "sendto AF_PACKET");
            }
            // SAFETY: closing our own descriptor.
            unsafe { libc::close(fd) };
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill anything still running inside, then delete.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).output();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Sends a signal.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Waits up to `limit` for exit; the exit status if it exited.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// What the process wrote so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns a command with stdout and stderr to a log file.
pub fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
    use std::os::unix::process::CommandExt;
    let file = std::fs::File::create(&log).expect("create log");
    // Its own process group: a Ctrl-C meant for the demo does not reach it.
    cmd.process_group(0);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup log"))
        .stderr(file)
        .spawn()
        .expect("spawn");
    Proc { child, log }
}

/// The capabilities the systemd unit grants the daemon (its
/// AmbientCapabilities=), in setpriv's spelling: `net_admin`, ...
pub fn unit_capabilities() -> Vec<String> {
    let unit = include_str!("../../br-daemon/packaging/br-daemon.service");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit grants capabilities");
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// The br-daemon binary: `BR_DAEMON_BIN`, or the workspace's own build.
pub fn daemon_binary() -> PathBuf {
    if let Ok(p) = std::env::var("BR_DAEMON_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("br-daemon");
        if p.exists() {
            return p;
        }
    }
    panic!("br-daemon is not built: run cargo build -p br-daemon (cargo xtask test does)");
}

/// Retries `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Options of the lab.
#[derive(Clone, Debug)]
pub struct LabOptions {
    pub queues: u16,
    /// Lines added to the [relay] table.
    pub extra_config: String,
    /// Tables added after the SCENARIO domain (more [[domain]]s).
    pub extra_domains: String,
    /// Start the user-space CEs in ns ce1 and ce2 (false: the test brings its own).
    pub emulated_ces: bool,
    /// The ce-emulator binary (tests pass env!("CARGO_BIN_EXE_ce-emulator")).
    pub ce_emulator: PathBuf,
    /// An XDP pass program on the gateway's peers (lan0, vpc-gw): the
    /// gateway's veths can then transmit redirected frames and the XDP
    /// fast path forwards plain packets. Off, every packet goes through
    /// the AF_XDP forwarder. (Not GRO: it would merge protocol-41 TCP
    /// segments into packets the emulated CEs cannot take.)
    pub fast_path_peers: bool,
}

/// The SCENARIO.md lab with the daemon running on the gateway.
pub struct Lab {
    pub id: u32,
    pub dir: PathBuf,
    pub config: PathBuf,
    // Field order is drop order: processes first, then namespaces.
    pub daemon: Option<Proc>,
    pub ces: Vec<Proc>,
    /// XDP programs on the gateway's peers (fast_path_peers).
    peer_xdp: Vec<aya::Ebpf>,
    pub lan: Netns,
    pub gw: Netns,
    pub vpc: Netns,
    pub ce1: Netns,
    pub ce2: Netns,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Attaches `program` of the test/bench XDP object (`bench_sink`,
/// `xdp_pass`) to `dev` in `ns`; it stays while the returned object lives.
pub fn attach_bench_program(ns: &Netns, dev: &'static str, program: &'static str) -> aya::Ebpf {
    ns.enter(move || {
        let mut e = aya::Ebpf::load(br_ebpf::bench_object()).expect("load the test XDP object");
        let p: &mut aya::programs::Xdp = e
            .program_mut(program)
            .unwrap_or_else(|| panic!("no program {program}"))
            .try_into()
            .expect("an XDP program");
        p.load().unwrap_or_else(|e| panic!("load {program}: {e}"));
        p.attach(dev, aya::programs::XdpMode::Driver)
            .unwrap_or_else(|e| panic!("attach {program} to {dev}: {e}"));
        e
    })
}

/// Attaches `vlan_to_metadata` of the test object to the egress of `dev`
/// in `ns`: frames sent there with an 802.1Q tag of priority 7 leave with
/// the tag in metadata instead. [`vlan_tags_moved`] says how many.
pub fn move_vlan_tags_to_metadata(ns: &Netns, dev: &'static str) -> aya::Ebpf {
    ns.enter(move || {
        let mut e = aya::Ebpf::load(br_ebpf::bench_object()).expect("load the test object");
        let p: &mut aya::programs::SchedClassifier = e
            .program_mut("vlan_to_metadata")
            .expect("vlan_to_metadata")
            .try_into()
            .expect("a tc program");
        p.load().expect("load vlan_to_metadata");
        p.attach(dev, aya::programs::TcAttachType::Egress)
            .unwrap_or_else(|e| panic!("attach vlan_to_metadata to {dev}: {e}"));
        e
    })
}

/// Frames [`move_vlan_tags_to_metadata`] moved the tag of.
pub fn vlan_tags_moved(e: &aya::Ebpf) -> u64 {
    let map: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(e.map("vlan_moved").expect("vlan_moved")).expect("an array");
    map.get(&0, 0).expect("entry 0")
}

/// A veth pair between two namespaces, with `queues` queues on each end.
pub fn veth(a_ns: &Netns, a: &str, b_ns: &Netns, b: &str, queues: u16) {
    let q = queues.to_string();
    run(
        "ip",
        &[
            "link",
            "add",
            a,
            "netns",
            &a_ns.name,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            b,
            "netns",
            &b_ns.name,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ],
    );
}

impl Lab {
    /// Builds the namespaces and starts the CEs and the daemon.
    pub fn start(opts: LabOptions) -> Lab {
        let serial = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let id = std::process::id() % 10000 * 100 + NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let name = |role: &str| format!("br{id}-{role}");
        let dir = std::env::temp_dir().join(format!("br6rd-lab-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab dir");
        let mut lab = Lab {
            id,
            config: dir.join("br.toml"),
            dir,
            daemon: None,
            ces: Vec::new(),
            lan: Netns::new(name("lan")),
            gw: Netns::new(name("gw")),
            vpc: Netns::new(name("vpc")),
            ce1: Netns::new(name("ce1")),
            ce2: Netns::new(name("ce2")),
            peer_xdp: Vec::new(),
            _serial: serial,
        };
        let q = opts.queues;
        veth(&lab.lan, "lan0", &lab.gw, "gw-lan", q);
        veth(&lab.gw, "gw-wan", &lab.vpc, "vpc-gw", q);
        veth(&lab.ce1, "eth0", &lab.vpc, "vpc-ce1", 1);
        veth(&lab.ce2, "eth0", &lab.vpc, "vpc-ce2", 1);
        for (ns, dev) in [
            (&lab.lan, "lan0"),
            (&lab.gw, "gw-lan"),
            (&lab.gw, "gw-wan"),
            (&lab.vpc, "vpc-gw"),
        ] {
            // The receive queue follows the sender's transmit queue: both ends.
            ns.sh(&format!(
                "ethtool -L {dev} rx {q} tx {q} 2>/dev/null || true"
            ));
        }
        if opts.fast_path_peers {
            lab.peer_xdp
                .push(attach_bench_program(&lab.lan, "lan0", "xdp_pass"));
            lab.peer_xdp
                .push(attach_bench_program(&lab.vpc, "vpc-gw", "xdp_pass"));
        }
        // A bridge with br_netfilter would drop IPv4 with bad checksums
        // before the BR sees them (the malformed-packet test sends some).
        lab.vpc
            .sh("sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null || true");
        lab.vpc.sh(
            "ip link add name vpcbr type bridge && ip link set vpcbr up && \
             for p in vpc-gw vpc-ce1 vpc-ce2; do ip link set $p master vpcbr up; done",
        );
        // veth leaves TCP/UDP checksums to "hardware" that does not exist
        // (CHECKSUM_PARTIAL); a frame copied to AF_XDP would carry the
        // partial sum. Real NICs fill it in; here the senders must.
        lab.lan.sh("ethtool -K lan0 tx off >/dev/null");
        lab.lan.sh(&format!(
            "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0; \
             ip link set lan0 up && ip -6 addr add {LAN_SERVER}/64 dev lan0 nodad && \
             ip -6 route add default via {GW_LAN_SUBNET_ADDR}"
        ));
        lab.gw.sh(&format!(
            "sysctl -qw net.ipv6.conf.all.forwarding=1 net.ipv4.ip_forward=1 net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0; \
             ip link set gw-lan up && ip link set gw-wan up && \
             ip -6 addr add {GW_LAN}/64 dev gw-lan nodad && ip -6 addr add {GW_LAN_SUBNET_ADDR}/64 dev gw-lan nodad && \
             ip -4 addr add {GW_WAN_V4}/16 dev gw-wan"
        ));
        let emulated: &[(&Netns, &str, &str)] = if opts.emulated_ces {
            &[(&lab.ce1, CE1_V4, CE1_V6), (&lab.ce2, CE2_V4, CE2_V6)]
        } else {
            &[]
        };
        for &(ns, v4, v6) in emulated {
            ns.sh("ethtool -K eth0 tx off >/dev/null");
            ns.sh(&format!(
                "ip link set eth0 up && ip -4 addr add {v4}/16 dev eth0 && ip -4 route add default via {GW_WAN_V4}"
            ));
            let mut cmd = ns.command(opts.ce_emulator.to_str().expect("utf-8 path"));
            cmd.args(["sit1", v4, BR_V4, &format!("{v6}/96")]);
            let log = lab.dir.join(format!("{}.log", ns.name));
            lab.ces.push(spawn(cmd, log));
        }
        std::fs::write(
            &lab.config,
            format!(
                "[relay]\ninterfaces = [\"gw-lan\", \"gw-wan\"]\nce-interfaces = [\"gw-wan\"]\nqueues = {q}\n{}\n\n\
                 [[domain]]\nname = \"vpc\"\nprefix = \"2001:db8:0:f096::/64\"\nipv4-mask-len = 0\nbr-ipv4 = \"{BR_V4}\"\nce-ipv4-allow = [\"10.96.0.0/16\"]\n{}",
                opts.extra_config, opts.extra_domains
            ),
        )
        .expect("write config");
        lab.start_daemon(opts.emulated_ces);
        lab
    }

    /// Starts br-daemon in the gateway namespace and waits for its counters.
    pub fn start_daemon(&mut self, wait_for_ces: bool) {
        self.start_daemon_under(&[], wait_for_ces);
    }

    /// Like [`Self::start_daemon`], with the daemon run by `wrapper`
    /// (e.g. `setpriv ...`: its arguments before the daemon's command line).
    pub fn start_daemon_under(&mut self, wrapper: &[String], wait_for_ces: bool) {
        let daemon = daemon_binary();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = self.gw.command(program);
                c.args(args).arg(&daemon);
                c
            }
            None => self.gw.command(daemon.to_str().expect("utf-8 path")),
        };
        cmd.args(["run", "--config", self.config.to_str().expect("utf-8 path")]);
        let proc = spawn(cmd, self.dir.join("daemon.log"));
        self.daemon = Some(proc);
        let up = eventually(Duration::from_secs(20), || {
            self.try_metrics()
                .is_some_and(|m| m.contains("br6rd_io_packets_total"))
        });
        assert!(up, "br-daemon did not come up:\n{}", self.daemon_output());
        // The CEs' TUN interfaces are up by now as well.
        let ces: &[&Netns] = if wait_for_ces {
            &[&self.ce1, &self.ce2]
        } else {
            &[]
        };
        for ce in ces {
            assert!(
                eventually(Duration::from_secs(10), || ce
                    .try_sh("ip -6 route show default | grep -q sit1")
                    .status
                    .success()),
                "ce-emulator did not come up in {}",
                ce.name
            );
        }
    }

    /// The daemon's log.
    pub fn daemon_output(&self) -> String {
        self.daemon.as_ref().map(Proc::output).unwrap_or_default()
    }

    /// The counters page, if the daemon answers.
    pub fn try_metrics(&self) -> Option<String> {
        self.gw.enter(|| {
            let mut s =
                TcpStream::connect_timeout(&"127.0.0.1:9641".parse().ok()?, Duration::from_secs(1))
                    .ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            Some(body)
        })
    }

    /// The counters page.
    pub fn metrics(&self) -> String {
        self.try_metrics()
            .unwrap_or_else(|| panic!("no counters from br-daemon:\n{}", self.daemon_output()))
    }

    /// One counter: see [`counter_in`].
    pub fn counter(&self, kind: &str, name: &str) -> u64 {
        counter_in(&self.metrics(), kind, name)
    }

    /// Stops the daemon with SIGTERM and returns what it printed.
    pub fn stop_daemon(&mut self) -> String {
        let mut d = self.daemon.take().expect("daemon running");
        d.signal(libc::SIGTERM);
        let status = d.wait_for_exit(Duration::from_secs(15));
        let out = d.output();
        assert!(
            status.is_some_and(|s| s.success()),
            "br-daemon did not stop cleanly: {status:?}\n{out}"
        );
        out
    }
}

/// Pings from a namespace; returns (received, output).
pub fn ping(ns: &Netns, args: &str) -> (u32, String) {
    let out = ns.try_sh(&format!("ping -n -W 2 {args}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let received = text
        .lines()
        .find_map(|l| l.split(", ").find_map(|p| p.strip_suffix(" received")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (received, text)
}

/// An IPv6 packet (ICMPv6 echo request with a correct checksum).
pub fn icmpv6_echo(src: &str, dst: &str, hop_limit: u8, payload_len: usize) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv6(
        src.parse::<std::net::Ipv6Addr>().expect("src").octets(),
        dst.parse::<std::net::Ipv6Addr>().expect("dst").octets(),
        hop_limit,
    )
    .icmpv6_echo_request(0x6464, 1);
    let payload = vec![0x5a; payload_len];
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, &payload).expect("build");
    out
}

/// An Ethernet frame with an IPv4 header around `payload` (protocol 41
/// unless told); `checksum_ok = false` spoils the header checksum.
pub fn ipv4_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: &str,
    dst: &str,
    proto: u8,
    payload: &[u8],
    checksum_ok: bool,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut h = etherparse::Ipv4Header::new(
        payload.len() as u16,
        64,
        etherparse::IpNumber(proto),
        src.parse::<std::net::Ipv4Addr>().expect("src").octets(),
        dst.parse::<std::net::Ipv4Addr>().expect("dst").octets(),
    )
    .expect("header");
    h.header_checksum = h.calc_header_checksum();
    if !checksum_ok {
        h.header_checksum ^= 0x5555;
    }
    h.write_raw(&mut f).expect("write");
    f.extend_from_slice(payload);
    f
}

/// One counter of a counters page: `kind` is "path", "reason", "io",
/// "action" (of the XDP program), "declined" (by the XDP fast path, by
/// reason) or "tcp-mss" (MSS clamping, by event).
pub fn counter_in(text: &str, kind: &str, name: &str) -> u64 {
    let (metric, label) = match kind {
        "path" => ("br6rd_forwarded_packets_total", kind),
        "reason" => ("br6rd_dropped_packets_total", kind),
        "io" => ("br6rd_io_packets_total", kind),
        "action" => ("br6rd_xdp_packets_total", kind),
        "declined" => ("br6rd_xdp_fast_path_declined_total", "reason"),
        "tcp-mss" => ("br6rd_tcp_mss_total", "event"),
        other => panic!("no counter kind {other}"),
    };
    let key = format!("{metric}{{{label}=\"{name}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no counter {key} in\n{text}"))
}

/// The iproute2 lines `br-daemon ce-config` prints for a CE, as an
/// operator would paste them.
pub fn ce_config(config: &std::path::Path, ce: &str, domain: &str) -> Vec<String> {
    let out = Command::new(daemon_binary())
        .args(["ce-config", ce, "--config"])
        .arg(config)
        .args(["--domain", domain])
        .output()
        .expect("run br-daemon ce-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // The first section is the iproute2 one; the ifcfg section repeats the 6rd line.
    text.split("## RHEL")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| l.starts_with("ip "))
        .map(str::to_string)
        .collect()
}

/// Busybox ping's "N packets received" (the guests' ping).
pub fn busybox_received(out: &str) -> u32 {
    out.lines()
        .find_map(|l| {
            l.split(", ")
                .find_map(|p| p.strip_suffix(" packets received"))
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
