//! Real Linux 6rd CEs: a Debian cloud kernel (it has `sit` with 6rd)
//! booted under qemu (TCG: no KVM here) from a small initramfs with
//! busybox, iproute2's `ip` and the modules a CE needs, on a tap device in
//! the lab's VPC namespace.
//!
//! The kernel and busybox come from Debian's archive with `apt-get
//! download` and are cached under `target/vm-cache`. The guest runs the
//! commands the test sends on its serial console and reports each exit
//! status; everything is bounded in time, and the VM is killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The kernel modules a 6rd CE on virtio needs, dependencies first (from
/// the modules' own `depends=`); ones built into a kernel are skipped.
const MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "net/ipv4/tunnel4.ko",
    "net/ipv4/ip_tunnel.ko",
    "net/ipv6/sit.ko",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /bb
/bin/busybox --install -s /bb
export PATH=/usr/bin:/bb
# Debian's static busybox prefers its own applets to PATH; its ip lacks 6rd.
ip() { /usr/bin/ip "$@"; }
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod /mods/$m 2>/dev/null; done
ip link set lo up
stty -echo 2>/dev/null < /dev/ttyS0
echo "@@BOOTED $(uname -r)"
while read -r line; do
  id="${line%% *}"; cmd="${line#* }"
  ( eval "$cmd" ) 2>&1
  echo "@@DONE $id $?"
done < /dev/ttyS0
"#;

/// Kernel and base initramfs, built once and cached.
pub struct VmAssets {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/vm-cache")
}

fn sh(cmd: &str, dir: &Path) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()?;
    if !out.status.success() {
        bail!("{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `apt-get download`, with one `apt-get update` if the lists are stale.
fn apt_download(package: &str, dir: &Path) -> Result<()> {
    let cmd = format!("apt-get download -q {package}");
    if sh(&cmd, dir).is_err() {
        sh("apt-get update -q", dir)?;
        sh(&cmd, dir)?;
    }
    Ok(())
}

static ASSETS: Mutex<Option<Arc<VmAssets>>> = Mutex::new(None);

/// Downloads (once) and assembles the kernel and the base initramfs.
pub fn assets() -> Result<Arc<VmAssets>> {
    let mut guard = ASSETS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(a) = guard.as_ref() {
        return Ok(Arc::clone(a));
    }
    let cache = cache_dir();
    std::fs::create_dir_all(&cache)?;
    let kernel = cache.join("vmlinuz");
    let initramfs = cache.join("base.cpio");
    if !kernel.exists() || !initramfs.exists() {
        let work = cache.join("work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let image = sh(
            "apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}'",
            &work,
        )?;
        let image = image.trim();
        if image.is_empty() {
            bail!("apt-cache knows no linux-image-cloud-amd64 (apt-get update?)");
        }
        apt_download(image, &work)?;
        apt_download("busybox-static", &work)?;
        sh("for d in *.deb; do dpkg-deb -x \"$d\" x; done", &work)?;
        let version = sh("ls x/lib/modules", &work)?;
        let version = version.trim();
        let root = work.join("root");
        for d in ["bin", "usr/bin", "mods", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::fs::copy(work.join("x/bin/busybox"), root.join("bin/busybox"))?;
        // iproute2's ip (busybox's lacks 6rd), with its libraries.
        std::fs::copy("/usr/bin/ip", root.join("usr/bin/ip")).context("iproute2's /usr/bin/ip")?;
        let libs = sh("ldd /usr/bin/ip | grep -o '/lib[^ ]*'", &work)?;
        for lib in libs.lines() {
            let dest = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
            std::fs::copy(lib, &dest).with_context(|| format!("copy {lib}"))?;
        }
        let mut list = String::new();
        for m in MODULES {
            let src = work.join(format!("x/lib/modules/{version}/kernel/{m}"));
            if src.exists() {
                let name = Path::new(m)
                    .file_name()
                    .expect("a file")
                    .to_string_lossy()
                    .into_owned();
                std::fs::copy(&src, root.join("mods").join(&name))?;
                list.push_str(&name);
                list.push('\n');
            }
        }
        std::fs::write(root.join("modules.list"), list)?;
        std::fs::write(root.join("init"), INIT)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(&initramfs, newc_archive(&root)?)?;
        std::fs::copy(work.join(format!("x/boot/vmlinuz-{version}")), &kernel)?;
        let _ = std::fs::remove_dir_all(&work);
    }
    let a = Arc::new(VmAssets { kernel, initramfs });
    *guard = Some(Arc::clone(&a));
    Ok(a)
}

/// A cpio "newc" archive of a directory tree (what the kernel unpacks as
/// an initramfs).
fn newc_archive(root: &Path) -> Result<Vec<u8>> {
    fn entry(out: &mut Vec<u8>, ino: &mut u32, name: &str, mode: u32, data: &[u8]) {
        *ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            *ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    fn walk(out: &mut Vec<u8>, ino: &mut u32, root: &Path, dir: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let name = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let meta = e.metadata()?;
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                entry(out, ino, &name, 0o040000 | (mode & 0o7777), &[]);
                walk(out, ino, root, &path)?;
            } else {
                entry(
                    out,
                    ino,
                    &name,
                    0o100000 | (mode & 0o7777),
                    &std::fs::read(&path)?,
                );
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    let mut ino = 0;
    walk(&mut out, &mut ino, root, root)?;
    entry(&mut out, &mut ino, "TRAILER!!!", 0, &[]);
    Ok(out)
}

/// A running guest.
pub struct Vm {
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    console: Arc<Mutex<String>>,
    next_id: u32,
}

impl Vm {
    /// Boots a guest in namespace `ns` on tap device `tap` (created here,
    /// attached to `bridge`), and waits for its shell.
    pub fn boot(ns: &crate::Netns, name: &str, tap: &str, bridge: &str, mac: &str) -> Result<Vm> {
        let a = assets()?;
        ns.sh(&format!(
            "ip tuntap add dev {tap} mode tap && ip link set {tap} master {bridge} up"
        ));
        let mut child = ns
            .command("qemu-system-x86_64")
            .args([
                "-m",
                "256",
                "-nodefaults",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&a.kernel)
            .arg("-initrd")
            .arg(&a.initramfs)
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            ])
            .args([
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("qemu-system-x86_64 (cargo xtask test installs qemu-system-x86)")?;
        let stdin = child.stdin.take().expect("piped");
        let console = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let console = Arc::clone(&console);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut c = console.lock().unwrap_or_else(|e| e.into_inner());
                    c.push_str(&line);
                    c.push('\n');
                }
            });
        }
        let mut vm = Vm {
            name: name.to_string(),
            child,
            stdin,
            console,
            next_id: 0,
        };
        if !vm.wait_for("@@BOOTED", Duration::from_secs(120)) {
            bail!("{name} did not boot:\n{}", vm.console());
        }
        Ok(vm)
    }

    /// Everything the guest printed.
    pub fn console(&self) -> String {
        self.console
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn wait_for(&mut self, marker: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.console().contains(marker) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Runs a shell command in the guest: (exit status, output).
    pub fn run(&mut self, cmd: &str, limit: Duration) -> (i32, String) {
        self.next_id += 1;
        let id = self.next_id;
        let before = self.console().len();
        let _ = writeln!(self.stdin, "{id} {cmd}");
        let _ = self.stdin.flush();
        let marker = format!("@@DONE {id} ");
        if !self.wait_for(&marker, limit) {
            return (
                -1,
                format!("timed out after {limit:?}:\n{}", &self.console()[before..]),
            );
        }
        let text = self.console()[before..].to_string();
        let (output, rest) = text.split_once(&marker).expect("marker seen");
        let status = rest
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        (status, output.to_string())
    }

    /// Runs a command that must succeed; panics with its output otherwise.
    pub fn must(&mut self, cmd: &str) -> String {
        let (status, out) = self.run(cmd, Duration::from_secs(60));
        assert_eq!(status, 0, "{}: `{cmd}` failed:\n{out}", self.name);
        out
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
