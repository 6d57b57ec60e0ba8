//! `cargo xtask deb`: the Debian package (cargo-deb), and the checks
//! `cargo xtask test` makes on it: its files, the unit under
//! `systemd-analyze verify` and `security`, and the default configuration.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, root, run};

/// The cargo-deb release the package is built with.
const CARGO_DEB: &str = "3.8.0";

/// What the package must install.
const FILES: &[&str] = &[
    "./usr/bin/br-daemon",
    "./etc/br-daemon/br-daemon.toml",
    "./usr/lib/systemd/system/br-daemon.service",
    "./usr/share/man/man8/br-daemon.8",
    "./usr/share/man/man8/br-daemon-run.8",
    "./usr/share/man/man8/br-daemon-map.8",
    "./usr/share/bash-completion/completions/br-daemon",
    "./usr/share/zsh/vendor-completions/_br-daemon",
    "./usr/share/fish/vendor_completions.d/br-daemon.fish",
    "./usr/share/doc/br-daemon/README.md",
];

/// systemd-analyze security's exposure score the unit must stay under
/// (0 best, 10 worst; "OK" is below 5).
const EXPOSURE_THRESHOLD: u32 = 50;

fn ensure_cargo_deb() -> Result<()> {
    let has = cargo()
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        run(cargo().args(["install", "cargo-deb", "--locked", "--version", CARGO_DEB]))?;
    }
    Ok(())
}

/// Builds target/debian/br-daemon_*.deb and returns its path.
pub fn build() -> Result<PathBuf> {
    ensure_cargo_deb()?;
    run(cargo().args(["build", "--release", "-p", "br-daemon"]))?;
    let release = root().join("target/release");
    run(Command::new(release.join("br-daemon"))
        .arg("assets")
        .arg(release.join("assets")))?;
    let out = root().join("target/debian");
    let _ = std::fs::remove_dir_all(&out);
    run(cargo()
        .args([
            "deb",
            "-p",
            "br-daemon",
            "--no-build",
            "--strip",
            "--output",
        ])
        .arg(&out))?;
    let deb = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("cargo deb wrote no .deb")?;
    eprintln!("xtask: {}", deb.display());
    Ok(deb)
}

fn output(cmd: &mut Command) -> Result<(bool, String, String)> {
    let o = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    Ok((
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

/// Builds the package and checks what it installs, without installing it.
pub fn check() -> Result<()> {
    let deb = build()?;
    let (_, listing, _) = output(Command::new("dpkg-deb").arg("-c").arg(&deb))?;
    for file in FILES {
        if !listing.lines().any(|l| l.ends_with(&format!(" {file}"))) {
            bail!("{} lacks {file}:\n{listing}", deb.display());
        }
    }
    let tree = root().join("target/debian/tree");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    verify_unit(&tree)?;
    // The installed default configuration is valid, and is run's default.
    let daemon = tree.join("usr/bin/br-daemon");
    run(Command::new(&daemon)
        .arg("check-config")
        .arg(tree.join("etc/br-daemon/br-daemon.toml")))?;
    let (_, help, _) = output(Command::new(&daemon).args(["run", "--help"]))?;
    if !help.contains("[default: /etc/br-daemon/br-daemon.toml]") {
        bail!("run does not default to the packaged configuration:\n{help}");
    }
    for page in ["br-daemon.8", "br-daemon-run.8"] {
        let text = std::fs::read_to_string(tree.join("usr/share/man/man8").join(page))?;
        if !text.starts_with(".ie") && !text.contains(".TH") {
            bail!("{page} is not a man page");
        }
    }
    eprintln!(
        "xtask: the package installs {} files and its unit verifies",
        FILES.len()
    );
    Ok(())
}

/// `systemd-analyze verify` of the unit inside `tree` (any warning fails)
/// and its `security` exposure under the threshold.
fn verify_unit(tree: &Path) -> Result<()> {
    // verify resolves the unit's dependencies (sysinit.target, ...) and
    // its commands inside --root: give it the host's units and kill.
    let units = tree.join("usr/lib/systemd");
    run(Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system/.")
        .arg(units.join("system")))?;
    std::fs::create_dir_all(tree.join("bin"))?;
    std::fs::copy("/bin/kill", tree.join("bin/kill"))?;
    let unit = "/usr/lib/systemd/system/br-daemon.service";
    let (ok, out, err) = output(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--root"])
            .arg(tree)
            .arg(unit),
    )?;
    if !ok || !err.trim().is_empty() {
        bail!("systemd-analyze verify {unit}:\n{out}{err}");
    }
    let (ok, out, err) = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={EXPOSURE_THRESHOLD}"))
            .arg("--root")
            .arg(tree)
            .arg(unit),
    )?;
    let verdict = out.lines().last().unwrap_or_default().to_string();
    if !ok {
        bail!("systemd-analyze security {unit}: over {EXPOSURE_THRESHOLD}:\n{out}{err}");
    }
    eprintln!("xtask: {}", verdict.trim());
    Ok(())
}
