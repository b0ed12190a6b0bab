//! The simulation's tests: many seeds against the invariants, exact replay of a seed, and
//! broken variants the checker must catch (without them the simulation would prove nothing).
//!
//! `SIM_SEEDS=N` runs N seeds instead of the default; `SIM_SEED=S` replays seed S alone and
//! prints its trace; `SIM_BUG=truncate_to_high_watermark|unclean_leader_election` runs the
//! seeds (or the replay) with that broken variant.

use std::time::Instant;

use super::*;

/// Seeds run by default: sized so that the debug test takes well under 40 s on two cores.
const DEFAULT_SEEDS: u64 = 500;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn with_bug(mut options: Options, bug: &str) -> Options {
    match bug {
        "truncate_to_high_watermark" => options.bugs.truncate_to_high_watermark = true,
        "unclean_leader_election" => options.config.unclean_leader_election = true,
        "" => {}
        other => panic!("unknown SIM_BUG {other}"),
    }
    options
}

fn replay(seed: u64) {
    let bug = std::env::var("SIM_BUG").unwrap_or_default();
    let mut options = with_bug(Options::seed(seed), &bug);
    options.tracing = true;
    match run(&options) {
        Ok(o) => println!("seed {seed}: {o:?}"),
        Err(v) => panic!("{v}"),
    }
}

/// Runs `seeds`, failing at the first violation; returns the events run.
fn run_seeds(
    seeds: impl Iterator<Item = u64>,
    options: impl Fn(u64) -> Options,
) -> (u64, u64, usize) {
    let (mut count, mut events, mut acked) = (0, 0, 0);
    for seed in seeds {
        match run(&options(seed)) {
            Ok(o) => {
                count += 1;
                events += o.events;
                acked += o.acked;
            }
            Err(v) => panic!("{v}"),
        }
    }
    (count, events, acked)
}

#[test]
fn simulation_many_seeds() {
    if let Some(seed) = env_u64("SIM_SEED") {
        return replay(seed);
    }
    let n = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let bug = std::env::var("SIM_BUG").unwrap_or_default();
    let started = Instant::now();
    let (count, events, acked) = run_seeds(0..n, |seed| with_bug(Options::seed(seed), &bug));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{count} seeds, {events} events ({} a seed), {acked} records acknowledged, in {secs:.1} s: {:.0} seeds/s, {:.0} events/s",
        events / count.max(1),
        count as f64 / secs,
        events as f64 / secs
    );
}

#[test]
fn simulation_five_brokers() {
    let options = |seed| {
        let mut o = Options::seed(seed);
        o.config.brokers = 5;
        o.config.partitions = 5;
        o
    };
    let n = env_u64("SIM_SEEDS").map_or(40, |n| n / 5);
    let (count, events, _) = run_seeds(1_000_000..1_000_000 + n, options);
    println!("five brokers: {count} seeds, {events} events");
}

#[test]
fn simulation_replays_a_seed_exactly() {
    for seed in [3, 17, 4242] {
        let first = run(&Options::seed(seed)).expect("the seed passes");
        let again = run(&Options::seed(seed)).expect("the seed passes");
        assert_eq!(first, again, "seed {seed} replays exactly");
    }
    let a = run(&Options::seed(1)).expect("the seed passes");
    let b = run(&Options::seed(2)).expect("the seed passes");
    assert_ne!(a.trace_hash, b.trace_hash, "two seeds make two runs");
}

/// The first violation a broken variant gives within `seeds`, with how many seeds it took;
/// `loss_only`: with only the checks of lost records (3, 4 and the end).
fn first_violation(bug: &str, seeds: u64, loss_only: bool) -> (Violation, u64) {
    let started = Instant::now();
    for seed in 0..seeds {
        let mut options = with_bug(Options::seed(seed), bug);
        options.check_in_sync_holds = !loss_only;
        if let Err(v) = run(&options) {
            let secs = started.elapsed().as_secs_f64();
            println!("{bug} (loss only: {loss_only}): caught at seed {seed}, {} seeds in {secs:.1} s: {v}", seed + 1);
            return (v, seed + 1);
        }
    }
    panic!("{bug}: no violation in {seeds} seeds: the checker cannot see this bug");
}

fn is_loss(v: &Violation) -> bool {
    ["3:", "4:", "end:"]
        .iter()
        .any(|i| v.message.starts_with(i))
}

#[test]
fn simulation_catches_a_follower_truncating_to_its_high_watermark() {
    let (v, _) = first_violation("truncate_to_high_watermark", 50, false);
    assert!(v.message.starts_with("2:") || is_loss(&v), "{v}");
    // Not only a replica short of the high watermark: committed records are lost.
    let (v, _) = first_violation("truncate_to_high_watermark", 300, true);
    assert!(is_loss(&v), "{v}");
}

#[test]
fn simulation_catches_unclean_elections_losing_records() {
    let (v, _) = first_violation("unclean_leader_election", 300, true);
    assert!(is_loss(&v), "{v}");
}
