//! The XDP program alone: its run time per frame of each stream, the
//! median of BPF_PROG_TEST_RUN calls in the gateway's namespace (its routes and
//! neighbours, so the fast path's FIB lookups succeed as in the trials).
//! No veth, no scheduler between runs: the figure moves by a few percent
//! where the trials' `XDP ns/run` moves by tens, so it is the one to
//! judge a change of the program by (the targets: encap ≤ 150 ns,
//! decap and hairpin ≤ 200 ns).

use std::net::IpAddr;

use anyhow::{Context, Result};
use aya::maps::{Array, MapData};
use aya::programs::{TestRun, TestRunOptions};
use br_daemon::dataplane::fib;
use br_daemon::dataplane::interfaces::Interfaces;
use br_daemon::dataplane::xdp::Steering;
use br_daemon::relay::{Domain, DomainSpec};
use br_tests::Netns;

use super::{write_frame, Size, Stream, BR_V4};

/// Runs per stream, one per BPF_PROG_TEST_RUN call (a repeated run would
/// meet the frame its predecessor rewrote): the median is reported.
pub const RUNS: u32 = 20_000;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// ns per run of the BR's program (fast path on) for encap, decap and
/// hairpin frames arriving on in0 of `gw`; of `bench_fib` (one
/// `bpf_fib_lookup` to a CE, one to the LAN); and of `xdp_pass` (a program
/// that returns at once: what the measurement itself costs).
pub fn measure(gw: &Netns, in_mac: [u8; 6]) -> Result<Vec<(String, f64)>> {
    gw.enter(move || {
        let spec = DomainSpec::new(
            "vpc",
            "2001:db8:0:f096::/64".parse().expect("prefix"),
            0,
            BR_V4,
        );
        let domains = vec![Domain::new(&spec).map_err(|e| anyhow::anyhow!("{e}"))?.0];
        let fib = fib::snapshot().context("the gateway's FIB")?;
        let (in0, out0) = (
            fib.ifindex("in0").context("in0")?,
            fib.ifindex("out0").context("out0")?,
        );
        let mut steering = Steering::load(&domains, true)?;
        let ports = vec![("in0".to_string(), in0), ("out0".to_string(), out0)];
        Interfaces::new(ports, None).sync(&mut steering, &fib)?;
        steering.set_fast_egress(&[in0, out0])?;
        let mut out = Vec::new();
        // As the daemon runs it (default rules here: the cache on), then
        // with the cache off: every frame asks the kernel.
        for (cache, suffix) in [(true, ""), (false, ", no next-hop cache")] {
            steering.renew_next_hops(cache, cache)?;
            for (name, stream) in [
                ("encap", Stream::Encap),
                ("decap", Stream::Decap),
                ("hairpin", Stream::Hairpin),
            ] {
                let ns = median_run(&steering, name, stream, in_mac, in0)?;
                out.push((format!("{name}{suffix}"), ns));
            }
        }
        // The helper alone, to the CE (IPv4) and to the LAN (IPv6).
        let ce: IpAddr = "10.96.0.1".parse().expect("address");
        let lan: IpAddr = super::LAN_SERVER.parse().expect("address");
        out.push((
            "bpf_fib_lookup v4".into(),
            bench_program("bench_fib", in0, Some(ce))?,
        ));
        out.push((
            "bpf_fib_lookup v6".into(),
            bench_program("bench_fib", in0, Some(lan))?,
        ));
        out.push(("xdp_pass".into(), bench_program("xdp_pass", in0, None)?));
        Ok(out)
    })
}

/// The median run time of the BR's program on one minimum-size frame of
/// `stream` arriving on in0 (asserting the fast path takes it).
fn median_run(
    steering: &Steering,
    name: &str,
    stream: Stream,
    in_mac: [u8; 6],
    in0: u32,
) -> Result<f64> {
    let mut buf = vec![0u8; 2048];
    let len = write_frame(&mut buf, in_mac, stream, Size::Min, 0, 0);
    let (stats, declines) = (steering.stats(), steering.declines());
    median_ns(
        steering.program(),
        &buf[..len],
        in0,
        XDP_REDIRECT,
        |action| {
            let moved = |a: Vec<u64>, b: &[u64]| -> Vec<usize> {
                (0..a.len()).filter(|&i| a[i] != b[i]).collect()
            };
            anyhow::anyhow!(
            "{name}: the fast path did not take the frame (XDP action {action}; stats moved {:?}, declines {:?})",
            moved(steering.stats(), &stats),
            moved(steering.declines(), &declines)
        )
        },
    )
}

/// The median run time of RUNS runs of `program` on `frame` arriving on
/// in0, one BPF_PROG_TEST_RUN call each, every one ending in `want`
/// (else the error `wrong` makes of the action).
fn median_ns(
    program: &aya::programs::Xdp,
    frame: &[u8],
    in0: u32,
    want: u32,
    wrong: impl Fn(u32) -> anyhow::Error,
) -> Result<f64> {
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&in0.to_ne_bytes());
    let mut times = Vec::with_capacity(RUNS as usize);
    for _ in 0..RUNS {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.ctx_in = Some(&md);
        let run = program.test_run(opts).context("test run")?;
        if run.return_value != want {
            return Err(wrong(run.return_value));
        }
        times.push(run.duration.as_nanos() as u64);
    }
    times.sort_unstable();
    Ok(times[times.len() / 2] as f64)
}

/// The median run time of the bench object's `program` measured the same
/// way, with `fib_dst` set to `dst` (for `bench_fib`).
fn bench_program(program: &str, in0: u32, dst: Option<IpAddr>) -> Result<f64> {
    let mut e = aya::Ebpf::load(br_ebpf::bench_object())?;
    if let Some(dst) = dst {
        let mut value = [0u8; 20];
        let family: u32 = match dst {
            IpAddr::V4(a) => {
                value[4..8].copy_from_slice(&a.octets());
                2
            }
            IpAddr::V6(a) => {
                value[4..20].copy_from_slice(&a.octets());
                10
            }
        };
        value[..4].copy_from_slice(&family.to_ne_bytes());
        let mut map: Array<&mut MapData, [u8; 20]> =
            Array::try_from(e.map_mut("fib_dst").context("fib_dst")?)?;
        map.set(0, value, 0)?;
    }
    let p: &mut aya::programs::Xdp = e.program_mut(program).context("program")?.try_into()?;
    p.load()?;
    median_ns(p, &[0u8; 64], in0, XDP_PASS, |action| {
        anyhow::anyhow!("{program} {dst:?}: XDP action {action}")
    })
}
