//! The Linux capabilities `br-daemon run` needs (capabilities(7)), checked
//! before anything is touched, so the daemon runs as root or as any user
//! given exactly these (the systemd unit's `AmbientCapabilities=`).

use anyhow::{bail, Result};

/// (bit, name, what needs it). CAP_SYS_ADMIN stands in for CAP_BPF and
/// CAP_PERFMON on kernels before 5.8, as the kernel itself accepts.
const NEEDED: [(u32, &str, &str); 4] = [
    (
        12,
        "CAP_NET_ADMIN",
        "XDP attach, AF_XDP, XSKMAP, TUN, routes",
    ),
    (13, "CAP_NET_RAW", "the slow path's raw sockets"),
    (39, "CAP_BPF", "loading the XDP program and its maps"),
    (
        38,
        "CAP_PERFMON",
        "the verifier's full checks of the XDP program",
    ),
];
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;

/// The needed capabilities missing from the effective set `effective`.
pub fn missing(effective: u64) -> Vec<&'static str> {
    let has = |bit: u32| effective & (1 << bit) != 0;
    NEEDED
        .iter()
        .filter(|(bit, name, _)| {
            let substitute = matches!(*name, "CAP_BPF" | "CAP_PERFMON") && has(CAP_SYS_ADMIN);
            !has(*bit) && !substitute
        })
        .map(|(_, name, _)| *name)
        .collect()
}

/// `CapEff` of a `/proc/PID/status` text.
pub fn effective_of(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Fails, naming each missing capability and why it is needed, unless
/// this process holds them all. AF_XDP's UMEM counts against
/// RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK: `memlock_unlimited`
/// says whether the limit could be raised.
pub fn check(memlock_unlimited: bool) -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let effective = effective_of(&status).unwrap_or(0);
    let missing = missing(effective);
    if !missing.is_empty() {
        let why: Vec<String> = NEEDED
            .iter()
            .filter(|(_, n, _)| missing.contains(n))
            .map(|(_, n, why)| format!("{n} ({why})"))
            .collect();
        bail!(
            "br-daemon run lacks {}: run it as root, or give it these capabilities \
             (the systemd unit's AmbientCapabilities= does)",
            why.join(", ")
        );
    }
    if !memlock_unlimited && effective & (1 << CAP_IPC_LOCK) == 0 {
        bail!(
            "RLIMIT_MEMLOCK is limited and br-daemon has no CAP_IPC_LOCK: AF_XDP's packet \
             memory would not fit; set LimitMEMLOCK=infinity (systemd) or ulimit -l unlimited"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u64 = 0x000001ffffffffff;

    #[test]
    fn root_lacks_nothing_and_none_lacks_all() {
        assert!(missing(ROOT).is_empty());
        assert_eq!(
            missing(0),
            ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF", "CAP_PERFMON"]
        );
    }

    #[test]
    fn the_unit_set_is_enough_and_sys_admin_stands_in_for_bpf() {
        let unit = 1 << 12 | 1 << 13 | 1 << 38 | 1 << 39 | 1 << 14;
        assert!(missing(unit).is_empty());
        assert!(missing(1 << 12 | 1 << 13 | 1 << 21).is_empty());
        assert_eq!(missing(1 << 12 | 1 << 39 | 1 << 38), ["CAP_NET_RAW"]);
    }

    #[test]
    fn reads_cap_eff_from_proc_status() {
        let status = "Name:\tbr-daemon\nCapInh:\t0000000000000000\nCapEff:\t000000c000003000\n";
        assert_eq!(effective_of(status), Some(0xc0_0000_3000));
        assert!(missing(effective_of(status).unwrap()).is_empty());
    }
}
