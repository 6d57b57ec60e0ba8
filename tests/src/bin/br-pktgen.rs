//! Sends one IPv6 stream with the kernel's pktgen through the bench's own
//! code (`br_tests::pktgen::run`), for the guest check of
//! `br-bench --generator pktgen` (tests/tests/pktgen.rs):
//!
//! `br-pktgen DEV DST_MAC SRC DST_MIN DST_MAX FRAME_LEN COUNT RATE SECONDS`
//!
//! COUNT 0 sends flat out for SECONDS; RATE 0 means no pacing. Prints
//! `sent N`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use br_tests::pktgen::{self, Stream};

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 9 {
        bail!("usage: br-pktgen DEV DST_MAC SRC DST_MIN DST_MAX FRAME_LEN COUNT RATE SECONDS");
    }
    let mac: Vec<u8> = a[1]
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .context("DST_MAC")?;
    let (min, max) = (a[3].parse()?, a[4].parse()?);
    let rate: u64 = a[7].parse()?;
    let stream = Stream {
        dev: a[0].clone(),
        thread: 0,
        dst_mac: mac
            .try_into()
            .map_err(|_| anyhow::anyhow!("DST_MAC: 6 bytes"))?,
        src: a[2].parse()?,
        dst: (min, (max != min).then_some(max)),
        frame_len: a[5].parse()?,
        count: a[6].parse()?,
        rate: (rate > 0).then_some(rate),
    };
    if !pktgen::available() {
        bail!("no /proc/net/pktgen here");
    }
    let sent = pktgen::run(&[stream], Duration::from_secs_f64(a[8].parse()?))?;
    println!("sent {}", sent[0]);
    Ok(())
}
