//! `br-daemon run`: validate, set up, forward, reload, stop.
//!
//! Start-up checks everything it can (configuration, interfaces, queues,
//! privileges) before touching the host. SIGHUP reloads the domains: a bad
//! file is refused with its file:line reasons and the running
//! configuration stays. SIGINT and SIGTERM stop the workers, detach XDP,
//! remove the TUN interface and print the counters. If the daemon is
//! killed, the kernel removes the bpf_link and the TUN interface with it,
//! so the host goes on forwarding its own traffic.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::announcer::Announcer;
use super::anycast::Health;
use super::counters::{self, Counters, Snapshot, Totals};
use super::fib::{self, Fib};
use super::interfaces::Interfaces;
use super::next_hops;
use super::publish::Published;
use super::selfcheck::{self, SelfCheck};
use super::slow_thread;
use super::slowpath::SlowPath;
use super::tracer::{self, TraceSources, Tracer};
use super::worker::{Port, Worker};
use super::xdp::Steering;
use super::xdp_egress::EgressProbe;
use super::xfrm;
use super::xsk::{RingSizes, Umem, XskSocket};
use crate::config::Config;
use crate::relay::Relay;

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SIGNAL.store(sig, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing a handler that only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Receive queues an interface has (from sysfs).
fn rx_queues(interface: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{interface}/queues"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(0)
}

/// Raises RLIMIT_MEMLOCK to unlimited (a no-op when it already is, as
/// under the unit's LimitMEMLOCK=infinity); false if it stays limited.
fn raise_memlock() -> bool {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a live rlimit; failure is reported by the caller.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) == 0 }
}

/// Checks what can be checked without changing the host.
fn preflight(config: &Config, fib: &Fib) -> Result<Vec<(String, u32)>> {
    super::capabilities::check(raise_memlock())?;
    if config.interfaces.is_empty() {
        bail!("no interfaces in [relay]: the BR would see no traffic");
    }
    let mut ports = Vec::new();
    for name in &config.interfaces {
        let ifindex = fib.ifindex(name).ok_or_else(|| {
            anyhow!("interface {name} does not exist on this host (ip link show)")
        })?;
        let queues = rx_queues(name);
        if queues < usize::from(config.queues) {
            bail!(
                "interface {name} has {queues} receive queue(s) and the configuration asks for {}: \
                 set queues = {queues}, or give it more (ethtool -L {name} combined {} or rx {} tx {})",
                config.queues,
                config.queues,
                config.queues,
                config.queues
            );
        }
        ports.push((name.clone(), ifindex));
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!("/dev/net/tun is missing: the slow path needs the tun module (modprobe tun)");
    }
    for (family, file) in [
        ("ipv6", "/proc/sys/net/ipv6/conf/all/forwarding"),
        ("ipv4", "/proc/sys/net/ipv4/conf/all/forwarding"),
    ] {
        if std::fs::read_to_string(file)
            .map(|s| s.trim() == "0")
            .unwrap_or(false)
        {
            tracing::warn!(
                "net.{family}.conf.all.forwarding is 0: the AF_XDP forwarder works, but the XDP \
                 fast path declines every packet (no-next-hop) and {family} that reaches the \
                 kernel on interfaces without XDP is not routed"
            );
        }
    }
    Ok(ports)
}

struct Running {
    stop: Arc<AtomicBool>,
    counters: Vec<Arc<Counters>>,
    sockets: Vec<(String, RawFd)>,
    steering: Arc<Mutex<Steering>>,
    interfaces: Arc<Interfaces>,
    trace: Arc<TraceSources>,
    /// `br-daemon drain`: withdraw the anycast announcements, keep relaying.
    draining: AtomicBool,
    /// The last health check and how many prefixes it left announced.
    health: Mutex<Option<(Health, usize)>>,
}

impl Running {
    fn totals(&self) -> Totals {
        Totals::sum(self.counters.iter().map(|c| c.as_ref()))
    }

    fn snapshot(&self) -> Snapshot {
        let (xdp, declines) = {
            let steering = self.steering.lock().unwrap_or_else(|e| e.into_inner());
            (steering.stats(), steering.declines())
        };
        let mut afxdp = Vec::new();
        for (label, fd) in &self.sockets {
            let s = super::xsk::stats_of(*fd);
            for (kind, v) in [
                ("rx-dropped", s.rx_dropped),
                ("rx-ring-full", s.rx_ring_full),
                ("rx-invalid-descs", s.rx_invalid_descs),
                ("tx-invalid-descs", s.tx_invalid_descs),
                ("rx-fill-ring-empty", s.rx_fill_ring_empty),
            ] {
                afxdp.push((label.clone(), kind, v));
            }
        }
        Snapshot {
            totals: self.totals(),
            xdp,
            declines,
            afxdp,
        }
    }

    fn metrics(&self) -> String {
        let mut text = counters::render(&self.snapshot());
        text.push_str(&self.health_metrics());
        text
    }

    /// Gauges of the anycast state (docs/anycast.md).
    fn health_metrics(&self) -> String {
        let health = *self.health.lock().unwrap_or_else(|e| e.into_inner());
        let draining = u8::from(self.draining.load(Ordering::Relaxed));
        let mut out = format!(
            "# HELP br6rd_draining 1 while br-daemon drain holds the announcements back.\n\
             # TYPE br6rd_draining gauge\nbr6rd_draining {draining}\n"
        );
        if let Some((h, announced)) = health {
            out.push_str(&format!(
                "# HELP br6rd_relaying 1 while every worker turns and XDP is attached.\n\
                 # TYPE br6rd_relaying gauge\nbr6rd_relaying {}\n\
                 # HELP br6rd_announced_prefixes Prefixes announced in announce-table now.\n\
                 # TYPE br6rd_announced_prefixes gauge\nbr6rd_announced_prefixes {announced}\n",
                u8::from(h.relaying())
            ));
        }
        out
    }

    /// `/health` as JSON.
    fn health_json(&self) -> String {
        let health = *self.health.lock().unwrap_or_else(|e| e.into_inner());
        let draining = self.draining.load(Ordering::Relaxed);
        let value = match health {
            Some((h, announced)) => serde_json::json!({
                "relaying": h.relaying(), "draining": draining, "announced": h.announce(),
                "announced-prefixes": announced, "state": h.reason(),
            }),
            None => serde_json::json!({
                "relaying": null, "draining": draining, "announced": false,
                "announced-prefixes": 0, "state": "no announce-table configured",
            }),
        };
        value.to_string()
    }
}

/// Runs the BR until SIGINT or SIGTERM.
pub fn run(config_path: &Path) -> Result<()> {
    // Kept as a ConfigError: the exit status tells an invalid file apart.
    let config = Config::load(config_path)?;
    for (line, w) in &config.warnings {
        tracing::warn!("{}:{line}: {w}", config_path.display());
    }
    let mut fib = fib::snapshot().context("reading routes and neighbours over rtnetlink")?;
    let ports = preflight(&config, &fib)?;
    fib.set_ipsec(Arc::new(read_ipsec()));
    install_signal_handlers();

    // From here on the host is changed; everything below is undone by
    // dropping it (or by the kernel when the process dies).
    let slow = Arc::new(SlowPath::open(&config.tun, &config.domains)?);
    let mut steering = Steering::load(&config.domains, config.xdp_fast_path)?;
    let interfaces = Arc::new(Interfaces::new(ports.clone(), config.ce_interfaces.clone()));
    interfaces.sync(&mut steering, &fib)?;
    match &config.ce_interfaces {
        Some(names) => tracing::info!("protocol 41 accepted on {names:?} only"),
        None => {
            tracing::warn!("protocol 41 accepted on every interface (no ce-interfaces in [relay])")
        }
    }
    // Before anything is attached: no window in which IPsec traffic could
    // take the fast path.
    steering
        .set_ipsec(fib.ipsec(), &xfrm::br_addresses(&config.domains))
        .context("mirroring the IPsec policies into the XDP program")?;
    for line in xfrm::describe_coverage(&config.domains, fib.ipsec()) {
        tracing::info!("{line}");
    }
    let relay = Published::new(config.relay());
    let fib = Published::new(fib);
    let stop = Arc::new(AtomicBool::new(false));
    let tracer = Arc::new(Tracer::default());
    let mut threads = Vec::new();
    let mut all_counters = Vec::new();
    let mut sockets = Vec::new();

    for queue in 0..u32::from(config.queues) {
        let umem = Umem::new(4096 * ports.len() as u32).context("allocating the UMEM")?;
        let mut worker_ports: Vec<Port> = Vec::new();
        for (slot, (name, ifindex)) in ports.iter().enumerate() {
            let owner = worker_ports.first().map(|p| &p.socket);
            let socket = XskSocket::new(&umem, owner, *ifindex, queue, RingSizes::default(), true)
                .with_context(|| format!("AF_XDP socket on {name} queue {queue}"))?;
            tracing::info!(
                "{name} queue {queue}: AF_XDP socket bound ({:?}, {} frames per TX kick)",
                socket.mode(),
                socket.tx_budget()
            );
            steering.bind_socket(slot as u32, queue, &socket)?;
            sockets.push((format!("{name}/{queue}"), socket.as_raw_fd()));
            worker_ports.push(Port::new(*ifindex, socket));
        }
        let counters = Arc::new(Counters::default());
        all_counters.push(Arc::clone(&counters));
        let w = Worker {
            queue,
            ports: worker_ports,
            umem,
            relay: relay.reader(),
            fib: fib.reader(),
            slow: Arc::clone(&slow),
            counters,
            busy_poll: config.busy_poll,
            stop: Arc::clone(&stop),
            tracer: Arc::clone(&tracer),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("br-worker-{queue}"))
                .spawn(move || {
                    pin_to_cpu(queue as usize);
                    w.run()
                })?,
        );
    }
    for (name, _) in &ports {
        steering.attach(name, config.xdp_mode)?;
        tracing::info!(
            "XDP steering attached to {name} ({:?} mode)",
            config.xdp_mode
        );
    }

    let steering = Arc::new(Mutex::new(steering));
    let slow_counters = Arc::new(Counters::default());
    all_counters.push(Arc::clone(&slow_counters));
    {
        let (slow, interfaces, relay, fib, stop, tracer) = (
            Arc::clone(&slow),
            Arc::clone(&interfaces),
            relay.reader(),
            fib.reader(),
            Arc::clone(&stop),
            Arc::clone(&tracer),
        );
        threads.push(
            std::thread::Builder::new()
                .name("br-slow-path".into())
                .spawn(move || {
                    slow_thread::run_slow_path(
                        slow,
                        interfaces,
                        relay,
                        fib,
                        slow_counters,
                        stop,
                        tracer,
                    )
                })?,
        );
    }
    {
        let (fib, stop) = (Arc::clone(&fib), Arc::clone(&stop));
        let (steering, relay) = (Arc::clone(&steering), Arc::clone(&relay));
        let on_ipsec = move |ipsec: &xfrm::Ipsec| mirror_ipsec(&steering, &relay.get(), ipsec);
        threads.push(
            std::thread::Builder::new()
                .name("br-netlink".into())
                .spawn(move || {
                    if let Err(e) = fib::monitor(fib, stop, on_ipsec) {
                        tracing::error!(
                            "rtnetlink monitor stopped: {e}; next hops are no longer updated"
                        );
                    }
                })?,
        );
    }
    {
        let (steering, fib, stop) = (Arc::clone(&steering), Arc::clone(&fib), Arc::clone(&stop));
        threads.push(
            std::thread::Builder::new()
                .name("br-next-hops".into())
                .spawn(move || next_hops::keep(steering, fib, stop))?,
        );
    }
    let running = Arc::new(Running {
        stop: Arc::clone(&stop),
        counters: all_counters,
        sockets,
        interfaces,
        trace: Arc::new(TraceSources {
            tracer,
            steering: Arc::clone(&steering),
            relay: Arc::clone(&relay),
            stop: Arc::clone(&stop),
        }),
        steering,
        draining: AtomicBool::new(false),
        health: Mutex::new(None),
    });
    {
        let (r, fib) = (Arc::clone(&running), Arc::clone(&fib));
        threads.push(
            std::thread::Builder::new()
                .name("br-interfaces".into())
                .spawn(move || track_interfaces(r, fib))?,
        );
    }
    {
        // Also without the fast path: a reload may turn it on.
        let (r, ifindexes) = (Arc::clone(&running), ports.iter().map(|p| p.1).collect());
        threads.push(
            std::thread::Builder::new()
                .name("br-fast-egress".into())
                .spawn(move || track_fast_egress(r, ifindexes))?,
        );
    }
    if let Some(addr) = config.metrics {
        let r = Arc::clone(&running);
        threads.push(
            std::thread::Builder::new()
                .name("br-metrics".into())
                .spawn(move || serve_metrics(addr, r))?,
        );
    }
    tracing::info!(
        "relaying {} domain(s) on {:?} with {} queue(s); slow path on {}",
        config.domains.len(),
        config.interfaces,
        config.queues,
        slow.tun_name()
    );

    let mut announcer = config
        .announce_table
        .map(|table| Announcer::new(table, slow.tun_name()));
    let mut self_check = SelfCheck::default();
    for tick in 0u64.. {
        std::thread::sleep(Duration::from_millis(100));
        match SIGNAL.swap(0, Ordering::SeqCst) {
            libc::SIGHUP => reload(config_path, &config, &relay, &running, &slow, &fib),
            libc::SIGINT | libc::SIGTERM => break,
            _ => {}
        }
        if let Some(a) = announcer.as_mut().filter(|_| tick % 5 == 4) {
            check_health(a, &mut self_check, &running, &relay, &fib);
        }
    }
    tracing::info!("stopping");
    if let Some(a) = announcer.as_mut() {
        a.withdraw();
    }
    // Give the kernel back the traffic first, then stop the workers.
    running
        .steering
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .detach_all();
    let final_metrics = running.metrics();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    eprintln!("{}", summary(&running.totals(), &final_metrics));
    Ok(())
}

/// `POST /drain` and `POST /resume`, from this host only: any scraper may
/// read the counters, only the operator may take the BR out of service.
fn drain(request: tiny_http::Request, on: bool, running: &Running) {
    let local = request.remote_addr().is_some_and(|a| a.ip().is_loopback());
    let (code, text) = if *request.method() != tiny_http::Method::Post {
        (405, "use POST\n".to_string())
    } else if !local {
        (
            403,
            "drain and resume are taken from this host only\n".to_string(),
        )
    } else {
        let was = running.draining.swap(on, Ordering::SeqCst);
        if was != on {
            tracing::warn!(
                "{}",
                if on {
                    "drain: withdrawing the anycast announcements; still relaying"
                } else {
                    "resume: announcing again once healthy"
                }
            );
        }
        (200, running.health_json() + "\n")
    };
    let _ = request.respond(tiny_http::Response::from_string(text).with_status_code(code));
}

/// One health check: every thread's loop turned, XDP attached, the
/// self-check's probes relayed, drain.
fn check_health(
    announcer: &mut Announcer,
    self_check: &mut SelfCheck,
    running: &Running,
    relay: &Published<crate::relay::Relay>,
    fib: &Published<Fib>,
) {
    let turns = running.counters.iter().map(|c| c.turns()).collect();
    let relayed = running.totals().paths[crate::relay::Path::SelfCheck.index()];
    let (attached, probe) = {
        let steering = running.steering.lock().unwrap_or_else(|e| e.into_inner());
        let probe = self_check.check(relayed, || {
            selfcheck::send_probe(&steering, &running.interfaces, &fib.get(), &relay.get())
        });
        (steering.is_attached(), probe)
    };
    let draining = running.draining.load(Ordering::Relaxed);
    let domains: Vec<crate::relay::Domain> = relay.get().domains().iter().cloned().collect();
    let health = announcer.check(turns, attached, probe, draining, &domains);
    *running.health.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((health, announcer.announced()));
}

/// The kernel's IPsec policies; none (with a warning) where the kernel
/// has no NETLINK_XFRM.
fn read_ipsec() -> xfrm::Ipsec {
    xfrm::snapshot().unwrap_or_else(|e| {
        tracing::warn!(
            "cannot read the kernel's IPsec policies over NETLINK_XFRM ({e}): assuming none \
             (policies set through PF_KEY alone are not seen)"
        );
        xfrm::Ipsec::default()
    })
}

/// Mirrors new IPsec policies into the XDP program and logs what they cover.
fn mirror_ipsec(steering: &Mutex<Steering>, relay: &Relay, ipsec: &xfrm::Ipsec) {
    let domains: Vec<&crate::relay::Domain> = relay.domains().iter().collect();
    mirror_ipsec_for(steering, &domains, ipsec);
    for line in xfrm::describe_coverage(domains, ipsec) {
        tracing::info!("IPsec policies changed: {line}");
    }
}

/// Mirrors IPsec policies into the XDP program for the BR addresses of `domains`.
fn mirror_ipsec_for(
    steering: &Mutex<Steering>,
    domains: &[&crate::relay::Domain],
    ipsec: &xfrm::Ipsec,
) {
    let result = steering
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_ipsec(ipsec, &xfrm::br_addresses(domains.iter().copied()));
    if let Err(e) = result {
        tracing::error!("updating the XDP program's IPsec prefixes failed: {e:#}");
    }
}

fn reload(
    path: &Path,
    running_config: &Config,
    relay: &Published<Relay>,
    running: &Running,
    slow: &SlowPath,
    fib: &Published<Fib>,
) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload refused, the running configuration stays:\n{e}");
            return;
        }
    };
    if new.interfaces != running_config.interfaces
        || new.queues != running_config.queues
        || new.tun != running_config.tun
        || new.xdp_mode != running_config.xdp_mode
    {
        tracing::warn!(
            "reload: interfaces, queues, tun and xdp-mode take effect only after a restart"
        );
    }
    // Old and new BR addresses both, while the domains change: neither
    // an old nor a new domain's IPsec traffic may take the fast path.
    let both: Vec<&crate::relay::Domain> =
        running_config.domains.iter().chain(&new.domains).collect();
    mirror_ipsec_for(&running.steering, &both, fib.get().ipsec());
    if let Err(e) = running
        .steering
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_domains(&new.domains, new.xdp_fast_path)
    {
        tracing::error!("reload: updating the XDP maps failed: {e:#}");
        return;
    }
    if let Err(e) = slow.set_domains(&new.domains) {
        tracing::error!("reload: updating the TUN addresses and routes failed: {e:#}");
    }
    running
        .interfaces
        .set_ce_interfaces(new.ce_interfaces.clone());
    sync_interfaces(running, &fib.get());
    let domains: Vec<&crate::relay::Domain> = new.domains.iter().collect();
    mirror_ipsec_for(&running.steering, &domains, fib.get().ipsec());
    relay.publish(new.relay());
    tracing::info!(
        "reloaded {}: {} domain(s)",
        path.display(),
        new.domains.len()
    );
}

/// Keeps the fast path's egress list to the attached interfaces that can
/// transmit redirected frames now (a veth can only while its peer has XDP
/// or GRO), checking every second. Logs each change.
fn track_fast_egress(running: Arc<Running>, attached: Vec<u32>) {
    let mut features = match EgressProbe::open() {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(
                "XDP fast path off: cannot ask the kernel which interfaces take redirected \
                 frames ({e}); the AF_XDP forwarder handles every packet"
            );
            return;
        }
    };
    tracing::info!("XDP fast path egress: known from {}", features.method());
    let mut current: Option<Vec<u32>> = None;
    while !running.stop.load(Ordering::Relaxed) {
        let capable: Vec<u32> = attached
            .iter()
            .copied()
            .filter(|&i| features.can_transmit(i))
            .collect();
        if current.as_ref() != Some(&capable) {
            let result = running
                .steering
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_fast_egress(&capable);
            match result {
                Ok(()) if capable.is_empty() => tracing::warn!(
                    "XDP fast path: none of the attached interfaces {attached:?} can transmit \
                     redirected frames (no ndo_xdp_xmit; for a veth, give its peer XDP, or GRO \
                     on Linux 6.3+): the AF_XDP forwarder handles every packet"
                ),
                Ok(()) => tracing::info!(
                    "XDP fast path may transmit on ifindex {capable:?} of {attached:?} \
                     (the others lack ndo_xdp_xmit: for a veth, give its peer XDP or GRO)"
                ),
                Err(e) => tracing::error!("XDP fast path: updating its egress map: {e:#}"),
            }
            current = Some(capable);
        }
        for _ in 0..10 {
            if running.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Keeps the XDP program's view of the attached interfaces (their MACs,
/// which may change while running) in step with the kernel's, checking
/// every second.
fn track_interfaces(running: Arc<Running>, fib: Arc<Published<Fib>>) {
    while !running.stop.load(Ordering::Relaxed) {
        sync_interfaces(&running, &fib.get());
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn sync_interfaces(running: &Running, fib: &Fib) {
    let mut steering = running.steering.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = running.interfaces.sync(&mut steering, fib) {
        tracing::error!("updating the XDP program's interface map: {e:#}");
    }
}

fn pin_to_cpu(index: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity
    // take live pointers. Failure only loses the pinning.
    unsafe {
        let cpus = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(index % cpus, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// What the operator sees when the daemon stops.
pub fn summary(totals: &Totals, metrics: &str) -> String {
    let (inputs, outputs, drops) = totals.balance();
    let mut s = String::from("br-daemon counters (zero counters omitted):\n");
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
    {
        s.push_str("  ");
        s.push_str(line);
        s.push('\n');
    }
    let fast = |action: &str| {
        counters::sample(metrics, "br6rd_xdp_packets_total", "action", action).unwrap_or(0)
    };
    s.push_str(&format!(
        "  XDP fast path: {} encapsulated, {} decapsulated, {} hairpinned (not in the forwarder's balance)\n",
        fast("fast-encap"),
        fast("fast-decap"),
        fast("fast-hairpin")
    ));
    s.push_str(&format!(
        "  forwarder: packets in {inputs} = out {outputs} + dropped {drops}{}\n",
        if inputs == outputs + drops {
            ""
        } else {
            "  (MISMATCH: in flight at stop)"
        }
    ));
    s
}

fn serve_metrics(addr: SocketAddr, running: Arc<Running>) {
    let server = match tiny_http::Server::http(addr) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("metrics: cannot listen on {addr}: {e}");
            return;
        }
    };
    tracing::info!("counters on http://{addr}/metrics");
    while !running.stop.load(Ordering::Relaxed) {
        // Blocks for a request; wakes now and then only to see `stop`.
        let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        // Each request on its own thread: scrapes run side by side, and a
        // trace streams for as long as it lasts.
        let r = Arc::clone(&running);
        let _ = std::thread::Builder::new()
            .name("br-http".into())
            .spawn(move || answer(request, &r));
    }
}

/// One HTTP request: /metrics, /metrics.json, /trace; 404 otherwise.
fn answer(request: tiny_http::Request, running: &Running) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let header = |value: &str| {
        tiny_http::Header::from_bytes(&b"Content-Type"[..], value.as_bytes()).expect("valid header")
    };
    let response = match path {
        "/trace" => return tracer::serve(request, query, &running.trace),
        "/" | "/metrics" => tiny_http::Response::from_string(running.metrics())
            .with_header(header("text/plain; version=0.0.4")),
        "/health" => tiny_http::Response::from_string(running.health_json())
            .with_header(header("application/json")),
        "/drain" | "/resume" => return drain(request, path == "/drain", running),
        "/metrics.json" => {
            tiny_http::Response::from_string(counters::render_json(&running.snapshot()))
                .with_header(header("application/json"))
        }
        other => tiny_http::Response::from_string(format!(
            "no {other} here: /metrics, /metrics.json or /trace\n"
        ))
        .with_status_code(404)
        .with_header(header("text/plain")),
    };
    let _ = request.respond(response);
}
