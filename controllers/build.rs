//! Compiles the proxy's socket balancer (`bpf/socket_balancer.bpf.c`) to BPF bytecode,
//! which the agent loads into the kernel (`src/node/proxy/socket_balancer.rs`).
//!
//! Needs clang, and the headers of linux-libc-dev and libbpf-dev; `hack/setup.sh`
//! installs them. `CLANG` names another clang than the one on the PATH.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "bpf/socket_balancer.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("socket_balancer.bpf.o");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        // Nothing loads it elsewhere; an empty object keeps include_bytes! satisfied.
        std::fs::write(&object, []).expect("write to OUT_DIR");
        return;
    }
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // <asm/types.h>, which <linux/bpf.h> includes, is under the multiarch directory,
    // which clang does not search for the bpf target.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    let status = Command::new(&clang)
        // v3: the atomic fetch-and-add of the round-robin turn.
        .args([
            "-O2", "-g", "-target", "bpf", "-mcpu=v3", &multiarch, "-c", SOURCE, "-o",
        ])
        .arg(&object)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{clang} could not compile {SOURCE} ({status}); run hack/setup.sh, which installs clang and libbpf-dev"),
        Err(error) => panic!("cannot run {clang} to compile {SOURCE}: {error}; run hack/setup.sh, which installs clang and libbpf-dev"),
    }
}
