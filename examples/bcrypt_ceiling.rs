//! The machine's bcrypt ceiling: how many `bcrypt::hash` calls per second
//! this CPU can do at a given cost on a given number of threads, with no
//! HTTP, no database and no scheduling games in the way.
//!
//! It exists so `bench/run.sh` can express the server's signup throughput as
//! a fraction of what the hardware allows (signups are bcrypt-bound), instead
//! of as a raw number that means nothing on another machine.
//!
//! ```sh
//! cargo run --release --example bcrypt_ceiling -- --cost 12 --threads 2 --seconds 10
//! ```
//!
//! Prints one JSON line:
//! `{"cost":12,"threads":2,"hashes":40,"seconds":10.12,"hashes_per_sec":3.95}`.
//! Every hash that started before the deadline is finished and counted, so
//! `seconds` is the measured wall time (a little over the requested time) and
//! `hashes_per_sec` is `hashes / seconds`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: bcrypt_ceiling [--cost N] [--threads T] [--seconds S]";

/// A password of typical length; bcrypt's cost does not depend on it much.
const PASSWORD: &str = "benchpassword123";

struct Args {
    cost: u32,
    threads: usize,
    seconds: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        cost: 12,
        threads: thread::available_parallelism().map_or(1, |n| n.get()),
        seconds: 10.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}\n{USAGE}");
        match flag.as_str() {
            "--cost" => args.cost = value.parse().map_err(|e| bad(&e))?,
            "--threads" => args.threads = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => args.seconds = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if !(4..=31).contains(&args.cost) {
        return Err(format!("--cost must be 4-31\n{USAGE}"));
    }
    if args.threads == 0 || !(args.seconds > 0.0 && args.seconds.is_finite()) {
        return Err(format!("--threads and --seconds must be positive\n{USAGE}"));
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let hashes = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    thread::scope(|s| {
        for _ in 0..args.threads {
            s.spawn(|| {
                while Instant::now() < deadline {
                    let hash = bcrypt::hash(PASSWORD, args.cost).expect("cost is in range");
                    std::hint::black_box(hash);
                    hashes.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let hashes = hashes.into_inner();
    // Written by hand to keep the documented key order.
    println!(
        "{{\"cost\":{},\"threads\":{},\"hashes\":{},\"seconds\":{:.3},\"hashes_per_sec\":{:.3}}}",
        args.cost,
        args.threads,
        hashes,
        seconds,
        hashes as f64 / seconds
    );
    ExitCode::SUCCESS
}
