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

/// The scheduling policy this process runs under (`/proc/self/stat` field 41: 0 SCHED_OTHER,
/// 3 SCHED_BATCH), and that of a child process it starts.
#[task(name = "p.policy")]
pub fn policy() -> Result<(u32, u32), String> {
    fn of(stat: &str) -> Result<u32, String> {
        // Fields after the command name, which is in parentheses and may hold spaces; field 41
        // is the 39th of them.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or("no ')' in stat")?;
        let field = rest.split_whitespace().nth(38).ok_or("stat is too short")?;
        field.parse().map_err(|e| format!("policy {field:?}: {e}"))
    }
    let own = of(&std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?)?;
    let child = std::process::Command::new("cat")
        .arg("/proc/self/stat")
        .output()
        .map_err(|e| e.to_string())?;
    Ok((own, of(&String::from_utf8_lossy(&child.stdout))?))
}

#[task(name = "p.sleep")]
pub fn sleep(seconds: f64) -> u32 {
    std::thread::sleep(Duration::from_secs_f64(seconds));
    std::process::id()
}

/// Sleeps `seconds` under a 0.3 s timeout; returns its pid.
#[task(name = "p.brief", timeout = 0.3)]
pub fn brief(seconds: f64) -> u32 {
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

/// Appends this process's id to the file `path` (one line per run), and returns it: a job that
/// ran twice leaves two lines.
#[task(name = "p.mark")]
pub fn mark(path: String) -> Result<u32, String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{path}: {e}"))?;
    writeln!(f, "{}", std::process::id()).map_err(|e| format!("{path}: {e}"))?;
    Ok(std::process::id())
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

/// Which attempt the running Call is.
#[task(name = "p.attempt", context)]
pub fn attempt_number(ctx: &TaskContext) -> u32 {
    ctx.attempt()
}

/// Allocates and touches `mb` megabytes, a megabyte at a time, then holds them.
#[task(name = "p.eat")]
pub fn eat(mb: usize) -> usize {
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mb {
        held.push(vec![1u8; 1 << 20]);
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_secs(30));
    held.len()
}

/// Starts `n` `sleep 60` processes, writes their pids to `path`, then waits.
#[task(name = "p.spawn_many")]
pub fn spawn_many(n: usize, path: String) -> Result<(), String> {
    let mut pids = Vec::new();
    let mut children = Vec::new();
    for _ in 0..n {
        let c = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .map_err(|e| e.to_string())?;
        pids.push(c.id().to_string());
        children.push(c);
    }
    std::fs::write(&path, pids.join(" ")).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// These tasks and the pool conformance suite's (which the workers must find too).
pub fn registry() -> TaskRegistry {
    dispatcher_testkit::conformance::pool::with_tasks(TaskRegistry::new())
        .register::<double>()
        .register::<noop>()
        .register::<pid>()
        .register::<brief>()
        .register::<policy>()
        .register::<mark>()
        .register::<sleep>()
        .register::<slow>()
        .register::<spin>()
        .register::<abort>()
        .register::<panics>()
        .register::<print>()
        .register::<fanout>()
        .register::<eat>()
        .register::<spawn_many>()
        .register::<attempt_number>()
}
