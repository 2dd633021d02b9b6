//! Release builds link the functions named in hot-symbols.txt first and together, in that order:
//! the code start-up and requests run (scripts/hot-symbols.sh writes the list). The kernel maps
//! an executable's code in 64 KiB windows around each page touched, so code spread over the
//! whole binary costs RSS far beyond its size (docs/performance.md, "What idle RSS is made of").
//! A name the build no longer has is skipped by the linker: a stale list costs memory, never
//! correctness.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let order = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("hot-symbols.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("PROFILE").as_deref() == Ok("release") && order.exists() && links_with_lld() {
        println!(
            "cargo:rustc-link-arg-bin=sluice=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=sluice=-Wl,--no-warn-symbol-ordering");
    }
}

/// `--symbol-ordering-file` is LLD's: rustc links with its own LLD on x86_64 Linux since Rust
/// 1.90, unless the build chose another linker.
fn links_with_lld() -> bool {
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker")
        || flags.contains("fuse-ld")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version
        .lines()
        .find_map(|line| line.strip_prefix("release: 1."))
        .and_then(|rest| rest.split('.').next())
        .and_then(|minor| minor.parse::<u32>().ok());
    minor.is_some_and(|minor| minor >= 90)
}
