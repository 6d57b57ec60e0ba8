//! SCENARIO.md's real deployment inside one guest per Debian 12 kernel.
use std::path::Path;
use std::time::Duration;

use br_tests::daemon_binary;
use br_tests::vm::{GuestKernel, Vm};

#[test]
#[ignore]
fn explore() {
    let daemon = daemon_binary();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/deployment.sh");
    let kernel = if std::env::var("K").as_deref() == Ok("6.1") {
        GuestKernel::Debian6_1
    } else {
        GuestKernel::Debian6_12
    };
    let mut vm = Vm::boot_standalone(
        kernel,
        "gw",
        &[("/usr/bin/br-daemon", &daemon), ("/deployment.sh", &script)],
        1024,
    )
    .unwrap();
    let cmds = std::fs::read_to_string("/tmp/explore.sh").unwrap();
    for c in cmds.lines().filter(|l| !l.trim().is_empty()) {
        let t = std::time::Instant::now();
        let (st, out) = vm.run(&format!(". /deployment.sh; {c}"), Duration::from_secs(120));
        println!("$ {c}\n{out}[status {st}, {:?}]", t.elapsed());
    }
}
