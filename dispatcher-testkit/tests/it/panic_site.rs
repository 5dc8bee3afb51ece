//! Where a panic was reported: a panic hook that, on the thread that asks, records the location
//! and message instead of printing them (other threads' panics go to the previous hook).

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

/// A caught panic: its message and the location the panic machinery reported.
#[derive(Debug)]
pub struct Site {
    pub message: String,
    pub file: String,
    pub line: u32,
}

thread_local! {
    static CAPTURE: RefCell<Option<Option<(String, u32)>>> = const { RefCell::new(None) };
}

fn install() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CAPTURE.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(slot) => {
                        *slot = info.location().map(|l| (l.file().to_owned(), l.line()));
                        true
                    }
                    None => false,
                }
            });
            if !captured {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, which must panic on this thread, and returns where the panic was reported.
pub fn panic_site(f: impl FnOnce()) -> Site {
    install();
    CAPTURE.with(|c| *c.borrow_mut() = Some(None));
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("it must panic");
    let location = CAPTURE.with(|c| c.borrow_mut().take()).flatten();
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    let (file, line) = location.expect("the panic hook saw the panic");
    Site {
        message,
        file,
        line,
    }
}
