//! `br-daemon`: the 6rd Border Relay and its operator tools.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use br_daemon::config::{Config, ConfigError};
use br_daemon::dataplane::counters::Io;
use br_daemon::log::LogFormat;
use br_daemon::relay::{Domain, DomainSpec, DropReason, MssEvent, Path};
use br_daemon::trace::{TraceFilter, TraceRequest};
use br_daemon::{ce_config, cisco, lookup};
use clap::{Args, Parser, Subcommand};
use ipnet::Ipv6Net;

/// A 6rd Border Relay (RFC 5969) for Linux gateways: XDP steering and an
/// AF_XDP forwarder, with the kernel as slow path.
#[derive(Parser)]
#[command(version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the BR on the interfaces of the configuration file.
    ///
    /// Validates everything before touching an interface. SIGHUP reloads
    /// the domains (a bad file is refused and the running configuration
    /// stays); SIGINT or SIGTERM detach and print the counters.
    Run {
        /// The configuration file (TOML; see docs/configuration.md).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// auto: journald's form when stderr is the journal, else text
        /// (colours only on a terminal); json: one object per line.
        #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
        log_format: LogFormat,
    },
    /// Show the other side of the 6rd mapping.
    ///
    /// An IPv4 CE address gives its delegated IPv6 prefix; an IPv6 address
    /// gives the CE IPv4 address it embeds; an IPv6 prefix gives the CE
    /// addresses it covers.
    #[command(
        after_help = "Examples:\n  br-daemon map 10.96.1.100 --config br.toml\n  \
        br-daemon map 2001:db8:0:f096:a60:164::1 --prefix 2001:db8:0:f096::/64"
    )]
    Map {
        /// 10.96.1.100, 2001:db8:0:f096:a60:164::1 or 2001:db8:0:f096:a60::/80
        query: String,
        #[command(flatten)]
        domain: DomainArgs,
        /// A JSON array of answers (query, domain, answer, relayed, note, drop-reason).
        #[arg(long)]
        json: bool,
    },
    /// Print the configuration of a Linux 6rd CE: ip commands, ifcfg file.
    #[command(after_help = "Example:\n  br-daemon ce-config 10.96.1.100 --config br.toml")]
    CeConfig {
        /// The CE's IPv4 address.
        ce: Ipv4Addr,
        /// Name of the CE's tunnel device.
        #[arg(long, default_value = "sit1")]
        dev: String,
        #[command(flatten)]
        domain: DomainArgs,
        /// The plan as JSON (addresses, relay prefix, commands, ifcfg file).
        #[arg(long)]
        json: bool,
    },
    /// Translate a Cisco IOS 6rd BR configuration into ours (on stdout).
    ///
    /// Warns on stderr about each line it does not use. The Linux interface
    /// names are left as CHANGE-ME placeholders.
    ImportCisco {
        /// A file with the `show running-config` text.
        file: PathBuf,
    },
    /// Check a configuration file: exit 0 when valid, else print
    /// file:line: reason for each mistake.
    CheckConfig {
        file: PathBuf,
        /// One JSON object: valid, domains, interfaces, warnings, errors
        /// (each with its line); the exit status is the same.
        #[arg(long)]
        json: bool,
    },
    /// List every counter with its meaning; with --live, the running
    /// daemon's non-zero counters.
    Counters {
        /// Read the counters of the daemon serving this address.
        #[arg(long, num_args = 0..=1, default_missing_value = br_daemon::config::DEFAULT_METRICS, value_name = "ADDRESS")]
        live: Option<String>,
        /// As JSON: `/metrics.json` with --live, else every name and meaning.
        #[arg(long)]
        json: bool,
    },
    /// Show what the running daemon does with each packet: its headers,
    /// the path it took or why it was dropped (the counter's name), and
    /// where it went. Covers the XDP program, the AF_XDP forwarder and the
    /// slow path; stops after --count packets or on Ctrl-C.
    Trace {
        /// Packets from or to this CE (outer IPv4, or embedded in IPv6).
        #[arg(long, group = "filter")]
        ce: Option<Ipv4Addr>,
        /// Packets with this IPv6 source or destination.
        #[arg(long, group = "filter")]
        ipv6: Option<std::net::Ipv6Addr>,
        /// Packets with an IPv6 source or destination in this prefix.
        #[arg(long, group = "filter")]
        prefix: Option<Ipv6Net>,
        /// Stop after this many packets.
        #[arg(long, default_value_t = br_daemon::trace::DEFAULT_TRACE_COUNT)]
        count: u64,
        /// One JSON object per packet.
        #[arg(long)]
        json: bool,
        /// The daemon's metrics address.
        #[arg(long, default_value = br_daemon::config::DEFAULT_METRICS, value_name = "ADDRESS")]
        live: String,
    },
    /// Take this BR out of an anycast group without losing a packet: the
    /// announcements in announce-table are withdrawn (the routers move the
    /// traffic to the other BRs) while the BR keeps relaying what still
    /// reaches it; stop it once its counters stand still. --resume undoes
    /// it; --status only shows the state (docs/anycast.md).
    Drain {
        /// Announce again (when healthy).
        #[arg(long, conflicts_with = "status")]
        resume: bool,
        /// Print the health state only.
        #[arg(long)]
        status: bool,
        /// The daemon's metrics address (drain is taken from this host only).
        #[arg(long, default_value = br_daemon::config::DEFAULT_METRICS, value_name = "ADDRESS")]
        live: String,
    },
    /// Write the man pages (section 8) and the bash, zsh and fish
    /// completions into DIR/man8 and DIR/completions (for packagers).
    #[command(hide = true)]
    Assets { dir: PathBuf },
}

/// Where the 6rd domain comes from: a configuration file, or flags.
#[derive(Args)]
struct DomainArgs {
    /// Take the domains from this configuration file.
    #[arg(long, short, conflicts_with = "prefix")]
    config: Option<PathBuf>,
    /// Only this domain of the configuration file.
    #[arg(long, requires = "config")]
    domain: Option<String>,
    /// The 6rd prefix (instead of --config).
    #[arg(long)]
    prefix: Option<Ipv6Net>,
    /// IPv4MaskLen: high-order IPv4 bits common to all CEs.
    #[arg(long, default_value_t = 0, requires = "prefix")]
    ipv4_mask_len: u8,
    /// The BR's IPv4 address (with --prefix).
    #[arg(long, requires = "prefix")]
    br_ipv4: Option<Ipv4Addr>,
}

/// Where `run` looks for its configuration by default (the Debian
/// package installs the example there).
const DEFAULT_CONFIG: &str = "/etc/br-daemon/br-daemon.toml";

/// A stand-in BR address (TEST-NET-1) for a domain given by flags
/// without --br-ipv4: the mapping needs none, and no answer mentions it.
const NO_BR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

impl DomainArgs {
    /// The domains to use, and whether they know their BR (false: given by
    /// flags without --br-ipv4). `sample` is an IPv4 address known to be in
    /// the common prefix when no BR address is given.
    fn domains(&self, sample: Option<Ipv4Addr>) -> Result<(Vec<Domain>, bool)> {
        if let Some(path) = &self.config {
            let config = Config::load(path)?;
            let domains: Vec<Domain> = config
                .domains
                .into_iter()
                .filter(|d| self.domain.as_deref().is_none_or(|n| n == d.name()))
                .collect();
            if domains.is_empty() {
                bail!(
                    "{} has no domain named {:?}",
                    path.display(),
                    self.domain.as_deref().unwrap_or("")
                );
            }
            return Ok((domains, true));
        }
        let Some(prefix) = self.prefix else {
            bail!(
                "give the domain: --config FILE, or --prefix P [--ipv4-mask-len K] [--br-ipv4 A]"
            );
        };
        if let Some(br) = self.br_ipv4 {
            let (domain, _) =
                Domain::new(&DomainSpec::new("flags", prefix, self.ipv4_mask_len, br))?;
            return Ok((vec![domain], true));
        }
        let mut spec = DomainSpec::new("flags", prefix, self.ipv4_mask_len, NO_BR);
        if self.ipv4_mask_len > 0 {
            let Some(s) = sample.filter(|s| !br_daemon::relay::is_martian_ipv4(*s)) else {
                bail!(
                    "--ipv4-mask-len {} needs --br-ipv4 (or an IPv4 query) to know the common IPv4 prefix",
                    self.ipv4_mask_len
                );
            };
            spec.ce_ipv4_sample = Some(s);
            // The stand-in is outside the common prefix: any address of
            // the prefix satisfies the BR-address rule; no answer shows it.
            spec.br_ipv6 = Some(prefix.network());
        }
        let (domain, _) = Domain::new(&spec)?;
        Ok((vec![domain], false))
    }
}

/// Exit status of an invalid configuration (sysexits.h EX_CONFIG, which
/// systemd shows as `status=78/CONFIG`); 1 is any other failure, 2 a
/// usage error (clap).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<ConfigError>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("br-daemon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { config, log_format } => br_daemon_run(&config, log_format),
        Command::Map {
            query,
            domain,
            json,
        } => {
            let (domains, br_known) = domain.domains(query.parse().ok())?;
            let answers = lookup::map(&domains, &query, br_known).map_err(anyhow::Error::msg)?;
            if json {
                let all: Vec<_> = answers.iter().map(|a| a.to_json(&query)).collect();
                println!("{}", serde_json::Value::from(all));
                return Ok(ExitCode::SUCCESS);
            }
            let several = answers.len() > 1;
            for a in answers {
                if several {
                    println!("{}\t# domain {:?}", a.text(), a.domain);
                } else {
                    println!("{}", a.text());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CeConfig {
            ce,
            dev,
            domain,
            json,
        } => {
            let (domains, br_known) = domain.domains(Some(ce))?;
            if !br_known {
                bail!("a CE needs its BR's IPv4 address: give --br-ipv4 (or --config FILE)");
            }
            let d = domains
                .iter()
                .find(|d| d.contains_ipv4(ce))
                .with_context(|| format!("{ce} is in the common IPv4 prefix of no domain"))?;
            if json {
                println!("{}", ce_config::render_json(d, ce, &dev)?);
            } else {
                print!("{}", ce_config::render(d, ce, &dev)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportCisco { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let origin = file.display().to_string();
            match cisco::import(&text, &origin) {
                Ok(out) => {
                    for w in &out.warnings {
                        eprintln!("{w}");
                    }
                    print!("{}", out.toml);
                    Ok(ExitCode::SUCCESS)
                }
                Err(failure) => {
                    for w in &failure.warnings {
                        eprintln!("{w}");
                    }
                    eprintln!("{}", failure.error.located(&origin));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::CheckConfig { file, json } => Ok(check_config(&file, json)),
        Command::Drain {
            resume,
            status,
            live,
        } => {
            let (method, path) = match (status, resume) {
                (true, _) => ("GET", "/health"),
                (_, true) => ("POST", "/resume"),
                _ => ("POST", "/drain"),
            };
            let (status, body) = http(&live, method, path)?;
            if !is_ok(&status) {
                bail!(
                    "{live} answered {method} {path} with {status:?}: {}",
                    body.trim()
                );
            }
            println!("{}", body.trim());
            Ok(ExitCode::SUCCESS)
        }
        Command::Assets { dir } => {
            write_assets(&dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Counters {
            live: None,
            json: true,
        } => {
            let mut all = serde_json::Map::new();
            let mut put = |kind: &str, name: &str, meaning: &str| {
                all.insert(format!("{kind}:{name}"), serde_json::Value::from(meaning));
            };
            Io::ALL
                .iter()
                .for_each(|x| put("io", x.name(), x.meaning()));
            Path::ALL
                .iter()
                .for_each(|x| put("path", x.name(), x.meaning()));
            DropReason::ALL
                .iter()
                .for_each(|x| put("reason", x.name(), x.meaning()));
            MssEvent::ALL
                .iter()
                .for_each(|x| put("event", x.name(), x.meaning()));
            br_ebpf::STAT_NAMES
                .iter()
                .for_each(|(n, m)| put("action", n, m));
            br_ebpf::DECLINE_NAMES
                .iter()
                .for_each(|(n, m)| put("declined", n, m));
            println!("{}", serde_json::Value::Object(all));
            Ok(ExitCode::SUCCESS)
        }
        Command::Counters { live: None, .. } => {
            for io in Io::ALL {
                println!("{:<26} {}", io.name(), io.meaning());
            }
            for p in Path::ALL {
                println!("{:<26} {}", p.name(), p.meaning());
            }
            for r in DropReason::ALL {
                println!("drop:{:<21} {}", r.name(), r.meaning());
            }
            for (name, meaning) in br_ebpf::STAT_NAMES {
                println!("xdp:{name:<22} {meaning}");
            }
            for (name, meaning) in br_ebpf::DECLINE_NAMES {
                println!("declined:{name:<17} {meaning}");
            }
            for e in MssEvent::ALL {
                println!("tcp-mss:{:<18} {}", e.name(), e.meaning());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Trace {
            ce,
            ipv6,
            prefix,
            count,
            json,
            live,
        } => {
            let filter = match (ce, ipv6, prefix) {
                (Some(a), _, _) => TraceFilter::Ce(a),
                (_, Some(a), _) => TraceFilter::Ipv6(a),
                (_, _, Some(p)) => TraceFilter::Prefix(p),
                _ => TraceFilter::All,
            };
            trace(
                &live,
                &TraceRequest {
                    filter,
                    count,
                    json,
                },
            )
        }
        Command::Counters {
            live: Some(addr),
            json,
        } => {
            let path = if json { "/metrics.json" } else { "/metrics" };
            let text = fetch_metrics(&addr, path)?;
            if json {
                println!("{text}");
                return Ok(ExitCode::SUCCESS);
            }
            for line in text
                .lines()
                .filter(|l| l.starts_with("br6rd_") && !l.ends_with(" 0"))
            {
                match sample_meaning(line) {
                    Some(m) => println!("{line}\t# {m}"),
                    None => println!("{line}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Man pages: br-daemon(8) and one per command (br-daemon-map(8), ...),
/// then the shell completions.
fn write_assets(dir: &std::path::Path) -> Result<()> {
    use clap::CommandFactory;
    let man = dir.join("man8");
    std::fs::create_dir_all(&man)?;
    let root = Cli::command();
    let page = |cmd: clap::Command, name: &str| -> Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).section("8").render(&mut out)?;
        std::fs::write(man.join(format!("{name}.8")), out)
            .with_context(|| format!("writing {}", man.display()))
    };
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("br-daemon-{}", sub.get_name());
        page(
            sub.clone().name(name.clone()).display_name(name.clone()),
            &name,
        )?;
    }
    page(root.clone(), "br-daemon")?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut Cli::command(), "br-daemon", &completions)?;
    }
    Ok(())
}

/// `check-config`: the verdict on stdout (text or JSON), the problems
/// on stderr (text), exit 0 or EX_CONFIG.
fn check_config(file: &std::path::Path, json: bool) -> ExitCode {
    let shown = file.display();
    let verdict = Config::load(file);
    if json {
        let lines = |items: Vec<(usize, String)>| -> Vec<serde_json::Value> {
            items
                .into_iter()
                .map(|(line, message)| serde_json::json!({"line": line, "message": message}))
                .collect()
        };
        let report = match &verdict {
            Ok(c) => serde_json::json!({
                "file": shown.to_string(), "valid": true,
                "domains": c.domains.iter().map(|d| d.name()).collect::<Vec<_>>(),
                "interfaces": c.interfaces,
                "warnings": lines(c.warnings.iter().map(|(l, w)| (*l, w.to_string())).collect()),
                "errors": [],
            }),
            Err(e) => serde_json::json!({
                "file": shown.to_string(), "valid": false, "domains": [], "interfaces": [],
                "warnings": [],
                "errors": lines(e.problems.iter().map(|p| (p.line, p.message.clone())).collect()),
            }),
        };
        println!("{report}");
    }
    match verdict {
        Ok(config) => {
            if !json {
                for (line, w) in &config.warnings {
                    eprintln!("{shown}:{line}: warning: {w}");
                }
                println!(
                    "{shown}: valid: {} domain(s), interfaces {:?}",
                    config.domains.len(),
                    config.interfaces
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if !json {
                eprintln!("{e}");
            }
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Streams a trace from the daemon at `addr` to stdout.
fn trace(addr: &str, request: &TraceRequest) -> Result<ExitCode> {
    use std::io::{BufRead, BufReader, Write};
    let mut conn = std::net::TcpStream::connect(addr).with_context(|| {
        format!("no br-daemon answers on {addr} (is it running? is metrics set?)")
    })?;
    write!(conn, "GET /trace?{} HTTP/1.0\r\n\r\n", request.to_query())?;
    let mut lines = BufReader::new(conn).lines();
    let status = lines.next().transpose()?.unwrap_or_default();
    // The headers end at the first empty line.
    for line in lines.by_ref() {
        if line?.is_empty() {
            break;
        }
    }
    let ok = status.split_whitespace().nth(1) == Some("200");
    if !ok && !status.starts_with("HTTP/") {
        bail!("{addr} is not br-daemon (it answered {status:?})");
    }
    let mut out = std::io::stdout().lock();
    for line in lines {
        let line = line?;
        if ok {
            // `#.` lines keep the stream alive: not for people.
            if line != "#." {
                writeln!(out, "{line}")?;
                out.flush()?;
            }
        } else {
            eprintln!("br-daemon at {addr}: {line}");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The body of `GET path` from br-daemon at `addr`; an error that says
/// so when something else answers.
fn fetch_metrics(addr: &str, path: &str) -> Result<String> {
    let (status, body) = http(addr, "GET", path)?;
    if !is_ok(&status) {
        bail!("{addr} is not br-daemon's metrics endpoint: GET {path} answered {status:?}");
    }
    if !body.contains("br6rd_io_packets_total") && !body.contains("\"br6rd_io_packets_total\"") {
        bail!("{addr} answered GET {path}, but without br-daemon's counters: is it br-daemon?");
    }
    Ok(body)
}

/// Whether an HTTP status line says 200.
fn is_ok(status: &str) -> bool {
    status.starts_with("HTTP/") && status.split_whitespace().nth(1) == Some("200")
}

/// One HTTP/1.0 request to the daemon: (its status line, its body).
fn http(addr: &str, method: &str, path: &str) -> Result<(String, String)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).with_context(|| {
        format!("no br-daemon answers on {addr} (is it running? is metrics set?)")
    })?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
    // One write: a server that answers on the first bytes and closes
    // must not turn the rest of the request into a broken pipe.
    conn.write_all(format!("{method} {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .with_context(|| format!("{addr} closed the connection: is it br-daemon?"))?;
    let mut text = String::new();
    conn.read_to_string(&mut text)
        .with_context(|| format!("{addr} does not answer like br-daemon"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, body.to_string()))
}

/// The meaning of a Prometheus sample line `metric{label="name"} value`.
fn sample_meaning(line: &str) -> Option<&'static str> {
    let (metric, rest) = line.split_once('{')?;
    let name = rest.split('"').nth(1)?;
    br_daemon::dataplane::counters::meaning(metric, name)
}

#[cfg(feature = "dataplane")]
fn br_daemon_run(config: &std::path::Path, log_format: LogFormat) -> Result<ExitCode> {
    br_daemon::log::init(log_format);
    br_daemon::dataplane::daemon::run(config)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "dataplane"))]
fn br_daemon_run(config: &std::path::Path, _: LogFormat) -> Result<ExitCode> {
    bail!(
        "this br-daemon has the operator tools only (built without the dataplane feature): \
         cannot run {}",
        config.display()
    )
}
