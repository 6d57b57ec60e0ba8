//! Debian packages the build and the tests need, installed when missing.

use std::process::Command;

use anyhow::{bail, Result};

/// To build the XDP program (clang, libbpf headers) and the bundled
/// libxdp/libbpf of xsk-rs (m4, pkg-config, libelf, zlib).
pub const BUILD_PACKAGES: &[&str] = &[
    "clang",
    "llvm",
    "libbpf-dev",
    "libelf-dev",
    "zlib1g-dev",
    "pkg-config",
    "m4",
    "iproute2",
    "ethtool",
];

/// What `cargo xtask test` adds: the tools the netns tests drive (ping,
/// tcpdump, scapy for cross-checks, qemu for the real Linux CEs and
/// the guest deployments).
const TEST_EXTRAS: &[&str] = &[
    "iputils-ping",
    "tcpdump",
    "python3-scapy",
    "procps",
    "qemu-system-x86",
    // The guests' initramfs: depmod for the kernel package's modules.dep,
    // xz for 6.12's compressed modules.
    "kmod",
    "xz-utils",
    // The package's checks: systemd-analyze for the unit, dpkg-shlibdeps
    // for its dependencies, setpriv (util-linux) for the capability test.
    "systemd",
    "dpkg-dev",
    "util-linux",
    // Two BRs behind ECMP routers (tests/tests/anycast.rs).
    "bird2",
];

/// Everything `cargo xtask test` uses.
pub fn test_packages() -> Vec<&'static str> {
    BUILD_PACKAGES.iter().chain(TEST_EXTRAS).copied().collect()
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the missing packages with apt-get (root only).
pub fn ensure(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}: run as root, or `apt-get install {}`",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {missing:?}");
    crate::run(Command::new("apt-get").args(["update", "-q"]))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Whether we run as root (`id -u` prints 0).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}
