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

/// The Debian 12 cloud kernels the guests run: what the product's users
/// run (Debian 12 ships 6.1 and 6.12; Amazon Linux 2023 runs 6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestKernel {
    /// `linux-image-cloud-amd64`: 6.1.
    Debian6_1,
    /// `linux-image-6.12-cloud-amd64`: 6.12.
    Debian6_12,
}

impl GuestKernel {
    fn meta_package(self) -> &'static str {
        match self {
            GuestKernel::Debian6_1 => "linux-image-cloud-amd64",
            GuestKernel::Debian6_12 => "linux-image-6.12-cloud-amd64",
        }
    }

    /// A short name, for cache directories and messages.
    pub fn label(self) -> &'static str {
        match self {
            GuestKernel::Debian6_1 => "6.1",
            GuestKernel::Debian6_12 => "6.12",
        }
    }
}

/// The modules a guest loads at boot, by name; their dependencies come
/// from the kernel's own modules.dep, and ones built in are skipped.
/// virtio_pci and virtio_net for the CE guests' NIC; the rest for a gateway: veth and tun
/// (namespaces, the daemon's TUN), bridge (the VPC's subnet), sit (kernel CEs), pktgen, ESP with static keys
/// (esp4, xfrm_user for `ip xfrm`, authenc and echainiv for
/// cbc(aes)+hmac(sha256)), xfrm interfaces and VTI.
const MODULES: &[&str] = &[
    // The PCI transport is no dependency of virtio_net: name it.
    "virtio_pci",
    "virtio_net",
    "veth",
    "bridge",
    "tun",
    "sit",
    // The kernel's packet generator (br-bench --generator pktgen; tests/tests/pktgen.rs).
    "pktgen",
    "esp4",
    "xfrm_user",
    "xfrm_interface",
    "ip_vti",
    "authenc",
    "echainiv",
    // echainiv's IVs come from the default RNG (drbg, seeded by
    // jitterentropy): built into 6.12, modules on 6.1, where nothing loads
    // them on demand (the initramfs has no modprobe) and ESP states fail
    // with "unable to initialize cryptographic operations".
    "drbg",
    "jitterentropy_rng",
];

/// Programs copied into every guest, with their shared libraries:
/// iproute2's ip (busybox's lacks 6rd, netns and xfrm), tcpdump, ethtool,
/// setpriv (the daemon runs with the systemd unit's capabilities only).
const PROGRAMS: &[&str] = &[
    "/usr/bin/ip",
    "/usr/bin/tcpdump",
    "/usr/sbin/ethtool",
    "/usr/bin/setpriv",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /bb
/bin/busybox --install -s /bb
export PATH=/usr/bin:/usr/sbin:/bb
# Debian's static busybox prefers its own applets to PATH; its ip lacks 6rd.
ip() { /usr/bin/ip "$@"; }
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /run /tmp; mount -t tmpfs run /run; mount -t tmpfs tmp /tmp
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

static ASSETS: Mutex<Vec<(GuestKernel, Arc<VmAssets>)>> = Mutex::new(Vec::new());

/// Downloads (once) and assembles the 6.1 kernel and its base initramfs.
pub fn assets() -> Result<Arc<VmAssets>> {
    assets_for(GuestKernel::Debian6_1)
}

/// Downloads (once) and assembles a kernel and its base initramfs.
pub fn assets_for(kernel: GuestKernel) -> Result<Arc<VmAssets>> {
    let mut guard = ASSETS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, a)) = guard.iter().find(|(k, _)| *k == kernel) {
        return Ok(Arc::clone(a));
    }
    // A new init, module or program list makes a new cache entry.
    let recipe = format!("{INIT}{MODULES:?}{PROGRAMS:?}");
    let hash = recipe.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let cache = cache_dir().join(format!("{}-{hash:016x}", kernel.label()));
    std::fs::create_dir_all(&cache)?;
    let image = cache.join("vmlinuz");
    let initramfs = cache.join("base.cpio");
    if !image.exists() || !initramfs.exists() {
        build_assets(kernel, &cache, &image, &initramfs)?;
    }
    let a = Arc::new(VmAssets {
        kernel: image,
        initramfs,
    });
    guard.push((kernel, Arc::clone(&a)));
    Ok(a)
}

fn build_assets(kernel: GuestKernel, cache: &Path, image: &Path, initramfs: &Path) -> Result<()> {
    let work = cache.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let meta = kernel.meta_package();
    let package = sh(
        &format!("apt-cache depends {meta} | awk '/Depends: linux-image-/{{print $2; exit}}'"),
        &work,
    )?;
    let package = package.trim();
    if package.is_empty() {
        bail!("apt-cache knows no {meta} (apt-get update?)");
    }
    apt_download(package, &work)?;
    apt_download("busybox-static", &work)?;
    sh("for d in *.deb; do dpkg-deb -x \"$d\" x; done", &work)?;
    let version = sh("ls x/lib/modules", &work)?;
    let version = version.trim();
    let root = work.join("root");
    for d in [
        "bin", "usr/bin", "usr/sbin", "mods", "proc", "sys", "dev", "tmp", "etc", "run",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(work.join("x/bin/busybox"), root.join("bin/busybox"))?;
    for program in PROGRAMS {
        copy_with_libraries(program, &root)?;
    }
    // tcpdump looks its user up even as root.
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\ntcpdump:x:100:100:tcpdump:/:/bin/false\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\ntcpdump:x:100:\n")?;
    let modules = work.join(format!("x/lib/modules/{version}"));
    // The package leaves modules.dep to its postinst.
    sh(&format!("/sbin/depmod -b x {version}"), &work).context("depmod (kmod)")?;
    let mut list = String::new();
    for path in load_order(&std::fs::read_to_string(modules.join("modules.dep"))?)? {
        let name = Path::new(&path)
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .trim_end_matches(".xz")
            .to_string();
        let dest = root.join("mods").join(&name);
        if path.ends_with(".xz") {
            // 6.12's modules are xz-compressed; busybox insmod wants them plain.
            let out = Command::new("xz")
                .arg("-dc")
                .arg(modules.join(&path))
                .output()
                .context("xz (xz-utils)")?;
            anyhow::ensure!(out.status.success(), "xz -d {path} failed");
            std::fs::write(&dest, out.stdout)?;
        } else {
            std::fs::copy(modules.join(&path), &dest)?;
        }
        list.push_str(&name);
        list.push('\n');
    }
    std::fs::write(root.join("modules.list"), list)?;
    std::fs::write(root.join("init"), INIT)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(initramfs, newc_archive(&root)?)?;
    std::fs::copy(work.join(format!("x/boot/vmlinuz-{version}")), image)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Copies a host program and the shared libraries ldd names for it.
fn copy_with_libraries(program: &str, root: &Path) -> Result<()> {
    let dest = root.join(program.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
    std::fs::copy(program, &dest).with_context(|| format!("copy {program}"))?;
    copy_libraries(Path::new(program), root)
}

/// Copies the shared libraries ldd names for a file (none for a script).
fn copy_libraries(file: &Path, root: &Path) -> Result<()> {
    let libs = sh(
        &format!(
            "ldd {} 2>/dev/null | grep -o '/lib[^ ]*' || true",
            file.display()
        ),
        root,
    )?;
    for lib in libs.lines() {
        let dest = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
        std::fs::copy(lib, &dest).with_context(|| format!("copy {lib}"))?;
    }
    Ok(())
}

/// The module files to load, dependencies first, for [`MODULES`]:
/// modules.dep lists each module's dependencies in the order modprobe
/// loads them backwards.
fn load_order(modules_dep: &str) -> Result<Vec<String>> {
    let mut order: Vec<String> = Vec::new();
    for wanted in MODULES {
        let line = modules_dep.lines().find(|l| {
            let file = l.split(':').next().unwrap_or("");
            let base = file.rsplit('/').next().unwrap_or("");
            base.trim_end_matches(".xz").trim_end_matches(".ko") == *wanted
        });
        // Built in: nothing to load.
        let Some(line) = line else { continue };
        let (file, deps) = line.split_once(':').expect("found by its colon");
        for m in deps.split_whitespace().rev().chain([file]) {
            if !order.iter().any(|o| o == m) {
                order.push(m.to_string());
            }
        }
    }
    Ok(order)
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

/// qemu's arguments for a TCG guest on the serial console.
fn qemu_args(cmd: &mut Command, kernel: &Path, initrd: &Path, memory_mb: u32) {
    cmd.args(["-m", &memory_mb.to_string()])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"]);
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
    /// Boots a 6.1 guest in namespace `ns` on tap device `tap` (created
    /// here, attached to `bridge`), and waits for its shell.
    pub fn boot(ns: &crate::Netns, name: &str, tap: &str, bridge: &str, mac: &str) -> Result<Vm> {
        let a = assets()?;
        ns.sh(&format!(
            "ip tuntap add dev {tap} mode tap && ip link set {tap} master {bridge} up"
        ));
        let mut cmd = ns.command("qemu-system-x86_64");
        qemu_args(&mut cmd, &a.kernel, &a.initramfs, 256);
        cmd.args([
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        ])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
        ]);
        Vm::start(name, cmd)
    }

    /// Boots a guest without a network card that holds a whole deployment
    /// in its own namespaces: `files` (guest path, host file) are added to
    /// the base initramfs, executables stripped of debug information.
    pub fn boot_standalone(
        kernel: GuestKernel,
        name: &str,
        files: &[(&str, &Path)],
        memory_mb: u32,
    ) -> Result<Vm> {
        let a = assets_for(kernel)?;
        let dir = std::env::temp_dir().join(format!("br6rd-vm-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        for (guest, host) in files {
            let dest = root.join(guest.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
            std::fs::copy(host, &dest).with_context(|| format!("copy {}", host.display()))?;
            copy_libraries(host, &root)?;
            let _ = Command::new("strip")
                .arg("--strip-debug")
                .arg(&dest)
                .output();
        }
        // The kernel unpacks concatenated archives one after the other.
        let mut initrd = std::fs::read(&a.initramfs)?;
        initrd.extend(newc_archive(&root)?);
        let initrd_path = dir.join("initrd.cpio");
        std::fs::write(&initrd_path, initrd)?;
        let mut cmd = Command::new("qemu-system-x86_64");
        qemu_args(&mut cmd, &a.kernel, &initrd_path, memory_mb);
        let vm = Vm::start(name, cmd);
        let _ = std::fs::remove_dir_all(&dir);
        vm
    }

    fn start(name: &str, mut cmd: Command) -> Result<Vm> {
        let mut child = cmd
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
