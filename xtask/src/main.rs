//! Project chores: `cargo xtask test | run | fuzz | bench`.
//!
//! `test` is what CI runs on a fresh Debian machine: it installs the
//! packages the build and the tests need (as root, when missing), then
//! checks formatting and lints and runs every test, the privileged
//! network-namespace tests and a short fuzz run included.

mod deps;
mod package;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Chores for the 6rd BR workspace")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing, then fmt, clippy, every test and a short fuzz run.
    Test {
        /// Seconds of fuzzing at the end (0 skips it).
        #[arg(long, default_value_t = 30)]
        fuzz_seconds: u64,
        /// Skip fmt and clippy (faster iteration).
        #[arg(long)]
        no_lint: bool,
    },
    /// Run the BR: with no --config, a self-contained demo lab in network
    /// namespaces with the SCENARIO.md addresses.
    Run {
        /// A configuration file: run the BR on this host's real interfaces.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Demo only: stop after this many seconds; exit 0 only if every check passed.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Benchmark the BR against kernel forwarding and an XDP redirect,
    /// measured in the same run; writes target/bench/.
    Bench {
        /// The main scenarios only (minimum frames), in under 3 minutes.
        #[arg(long)]
        quick: bool,
        /// Only the scenarios whose name contains this.
        #[arg(long)]
        only: Option<String>,
        /// `pktgen`: the kernel's pktgen sends the IPv6 streams (needs
        /// /proc/net/pktgen: `modprobe pktgen`); default: AF_XDP.
        #[arg(long)]
        generator: Option<String>,
    },
    /// Build the Debian package (cargo-deb) into target/debian/.
    Deb {
        /// Then check it as `cargo xtask test` does (files, unit, config).
        #[arg(long)]
        check: bool,
    },
    /// Fuzz the relay's entry points with libFuzzer.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Task::Test {
            fuzz_seconds,
            no_lint,
        } => test(fuzz_seconds, no_lint),
        Task::Run { config, duration } => match config {
            Some(config) => run_on_host(&config),
            None => {
                let mut args = Vec::new();
                if let Some(d) = duration {
                    args = vec!["--duration".to_string(), d.to_string()];
                }
                run_lab_tool("br-demo", &["ce-emulator"], &args, &[])
            }
        },
        Task::Fuzz { seconds } => fuzz(seconds),
        Task::Deb { check } => {
            deps::ensure(deps::BUILD_PACKAGES)?;
            if check {
                package::check()
            } else {
                package::build().map(|_| ())
            }
        }
        Task::Bench {
            quick,
            only,
            generator,
        } => {
            let mut args = Vec::new();
            if quick {
                args.push("--quick".to_string());
            }
            if let Some(o) = only {
                args.extend(["--only".to_string(), o]);
            }
            if let Some(g) = generator {
                args.extend(["--generator".to_string(), g]);
            }
            run_lab_tool("br-bench", &[], &args, &["gnuplot-nox"])
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root; fails with the command line.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: {shown}");
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(fuzz_seconds: u64, no_lint: bool) -> Result<()> {
    deps::ensure(&deps::test_packages())?;
    if !no_lint {
        run(cargo().args(["fmt", "--all", "--check"]))?;
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    // The netns tests need the release daemon binary; build it first so
    // the tests do not time out building it.
    run(cargo().args(["build", "--release", "-p", "br-daemon"]))?;
    run(cargo()
        .args(["test", "--workspace"])
        .env("BR_DAEMON_BIN", root().join("target/release/br-daemon")))?;
    operator_tools_build_alone()?;
    package::check()?;
    if fuzz_seconds > 0 {
        fuzz(fuzz_seconds)?;
    }
    eprintln!("xtask: all tests passed");
    Ok(())
}

/// The operator commands build and pass their tests without the data
/// plane: no clang (CLANG points at `false`), no libbpf, no aya.
fn operator_tools_build_alone() -> Result<()> {
    let tree = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "tree",
            "-p",
            "br-daemon",
            "--no-default-features",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(root())
        .output()?;
    let tree = String::from_utf8_lossy(&tree.stdout);
    for forbidden in ["libbpf-sys", "libbpf-rs", "aya ", "tiny_http"] {
        if tree.lines().any(|l| l.starts_with(forbidden)) {
            bail!("br-daemon --no-default-features still depends on {forbidden}");
        }
    }
    run(cargo()
        .args([
            "test",
            "-p",
            "br-daemon",
            "--no-default-features",
            "--lib",
            "--test",
            "cli",
        ])
        .env("CLANG", "/bin/false")
        .env("CARGO_TARGET_DIR", root().join("target/operator-tools")))
}

/// Builds the libFuzzer target the way cargo-fuzz does (sanitizer
/// coverage; RUSTC_BOOTSTRAP lets the stable compiler take the flags) and
/// runs it from the committed seeds for `seconds`.
fn fuzz(seconds: u64) -> Result<()> {
    let dir = root().join("br-daemon/fuzz");
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg",
        "fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join(" ");
    let target = "x86_64-unknown-linux-gnu";
    run(cargo()
        .args(["build", "--release", "--target", target, "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", flags))?;
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus)?;
    run(
        Command::new(dir.join(format!("target/{target}/release/relay")))
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1")
            .arg(&corpus)
            .arg(dir.join("seeds")),
    )
}

/// Installs what the lab tools need, builds them and the daemon, and runs
/// one (as root) with its exit status. These tools link the XDP objects,
/// which need clang: that is why they are not part of xtask itself, which
/// must build on a machine that has nothing installed yet.
fn run_lab_tool(
    tool: &str,
    helpers: &[&str],
    args: &[String],
    extra_packages: &[&str],
) -> Result<()> {
    let mut packages = deps::test_packages();
    packages.extend_from_slice(extra_packages);
    deps::ensure(&packages)?;
    if !deps::is_root() {
        bail!("{tool} creates network namespaces and loads XDP programs: run it as root");
    }
    // Only the binaries the tool starts: each is a long LTO link, and a
    // fresh clone's `bench --quick` must stay under 3 minutes.
    let mut build = cargo();
    build.args(["build", "--release", "--bin", "br-daemon", "--bin", tool]);
    for helper in helpers {
        build.args(["--bin", helper]);
    }
    run(&mut build)?;
    // A fresh build leaves hundreds of MB dirty; their writeback would
    // take CPU from the first measurements.
    run(&mut Command::new("sync"))?;
    let mut child = Command::new(root().join("target/release").join(tool))
        .args(args)
        .current_dir(root())
        .spawn()
        .with_context(|| format!("cannot start {tool}"))?;
    // Ctrl-C is the tool's to handle (it tears its lab down); xtask waits.
    // SAFETY: ignoring SIGINT in this process only; the child already runs.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let status = child.wait()?;
    if !status.success() {
        bail!("{tool} failed: {status}");
    }
    Ok(())
}

fn run_on_host(config: &Path) -> Result<()> {
    deps::ensure(deps::BUILD_PACKAGES)?;
    run(cargo().args(["build", "--release", "-p", "br-daemon"]))?;
    let config = std::fs::canonicalize(config)
        .with_context(|| format!("cannot find {}", config.display()))?;
    run(Command::new(root().join("target/release/br-daemon"))
        .arg("run")
        .arg("--config")
        .arg(config))
}
