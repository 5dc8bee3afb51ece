//! UI tests of `#[task]`: what it accepts (`tests/ui/pass`, built and run) and the diagnostics it
//! gives for what it rejects (`tests/ui/fail`, compared with the `.stderr` next to each case).
//!
//! The `.stderr` files hold rustc's exact output, which changes between compiler versions, so the
//! compile-fail half runs on a stable compiler only. Regenerate them with
//! `TRYBUILD=overwrite cargo test -p dispatcher-macros --test ui` and review the diff by hand.

use std::process::Command;

/// Whether the compiler building the cases is a stable release (not nightly, beta or dev).
fn stable_rustc() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    match Command::new(rustc).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            !["nightly", "beta", "dev"]
                .iter()
                .any(|channel| version.contains(channel))
        }
        _ => false,
    }
}

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    if stable_rustc() {
        t.compile_fail("tests/ui/fail/*.rs");
    } else {
        eprintln!("not a stable rustc: skipping the compile-fail cases");
    }
}
