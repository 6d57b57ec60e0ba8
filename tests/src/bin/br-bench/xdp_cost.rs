//! The XDP program alone: its run time per frame of each stream, the
//! median of BPF_PROG_TEST_RUN calls in the gateway's namespace (its routes and
//! neighbours, so the fast path's FIB lookups succeed as in the trials).
//! No veth, no scheduler between runs: the figure moves by a few percent
//! where the trials' `XDP ns/run` moves by tens, so it is the one to
//! judge a change of the program by (the targets: encap ≤ 150 ns,
//! decap and hairpin ≤ 200 ns).

use anyhow::{bail, Context, Result};
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
const XDP_REDIRECT: u32 = 4;

/// ns per run of the BR's program (fast path on) for encap, decap and
/// hairpin frames arriving on in0 of `gw`, and of `xdp_pass` (a program
/// that returns at once: what the measurement itself costs).
pub fn measure(gw: &Netns, in_mac: [u8; 6]) -> Result<Vec<(&'static str, f64)>> {
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
        for (name, stream) in [
            ("encap", Stream::Encap),
            ("decap", Stream::Decap),
            ("hairpin", Stream::Hairpin),
        ] {
            let mut buf = vec![0u8; 2048];
            let len = write_frame(&mut buf, in_mac, stream, Size::Min, 0, 0);
            let mut md = [0u8; 24];
            md[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
            md[12..16].copy_from_slice(&in0.to_ne_bytes());
            let (stats, declines) = (steering.stats(), steering.declines());
            let mut times = Vec::with_capacity(RUNS as usize);
            for _ in 0..RUNS {
                let mut opts = TestRunOptions::new();
                opts.data_in = Some(&buf[..len]);
                opts.ctx_in = Some(&md);
                let run = steering.program().test_run(opts).context("test run")?;
                if run.return_value != XDP_REDIRECT {
                    let moved = |a: Vec<u64>, b: Vec<u64>| -> Vec<usize> {
                        (0..a.len()).filter(|&i| a[i] != b[i]).collect()
                    };
                    bail!(
                        "{name}: the fast path did not take the frame (XDP action {}; stats moved {:?}, declines {:?})",
                        run.return_value,
                        moved(steering.stats(), stats),
                        moved(steering.declines(), declines)
                    );
                }
                times.push(run.duration.as_nanos() as u64);
            }
            times.sort_unstable();
            out.push((name, times[times.len() / 2] as f64));
        }
        out.push(("xdp_pass", floor(in0)?));
        Ok(out)
    })
}

/// The median run time of `xdp_pass` measured the same way.
fn floor(in0: u32) -> Result<f64> {
    let mut e = aya::Ebpf::load(br_ebpf::bench_object())?;
    let p: &mut aya::programs::Xdp = e.program_mut("xdp_pass").context("xdp_pass")?.try_into()?;
    p.load()?;
    let frame = [0u8; 64];
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&in0.to_ne_bytes());
    let mut times = Vec::with_capacity(RUNS as usize);
    for _ in 0..RUNS {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        opts.ctx_in = Some(&md);
        times.push(p.test_run(opts)?.duration.as_nanos() as u64);
    }
    times.sort_unstable();
    Ok(times[times.len() / 2] as f64)
}
