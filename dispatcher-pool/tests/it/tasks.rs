//! Tasks run by the worker processes.

use std::time::Duration;

use dispatcher_core::{task, TaskContext, TaskRegistry};

#[task(name = "p.double")]
pub fn double(x: i64) -> i64 {
    x * 2
}

#[task(name = "p.noop")]
pub fn noop() {}

#[task(name = "p.pid")]
pub fn pid() -> u32 {
    std::process::id()
}

#[task(name = "p.sleep")]
pub fn sleep(seconds: f64) -> u32 {
    std::thread::sleep(Duration::from_secs_f64(seconds));
    std::process::id()
}

#[task(name = "p.slow", timeout = 0.3)]
pub fn slow() {
    std::thread::sleep(Duration::from_secs(60));
}

#[task(name = "p.spin", timeout = 0.3)]
pub fn spin() {
    // ignores SIGTERM's default? no: a busy loop; SIGTERM ends it.
    let mut x = 0u64;
    loop {
        x = x.wrapping_add(1);
        std::hint::black_box(x);
    }
}

#[task(name = "p.abort")]
pub fn abort() {
    std::process::abort();
}

#[task(name = "p.panic")]
pub fn panics(message: String) {
    panic!("{message}");
}

#[task(name = "p.print")]
pub fn print(line: String) {
    println!("{line}");
    eprintln!("err: {line}");
}

#[task(name = "p.fanout", context)]
pub fn fanout(ctx: &TaskContext, n: i64) -> Result<(), dispatcher_core::Error> {
    for i in 0..n {
        ctx.submit(double::call(i))?;
    }
    Ok(())
}

pub fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .register::<double>()
        .register::<noop>()
        .register::<pid>()
        .register::<sleep>()
        .register::<slow>()
        .register::<spin>()
        .register::<abort>()
        .register::<panics>()
        .register::<print>()
        .register::<fanout>()
}
