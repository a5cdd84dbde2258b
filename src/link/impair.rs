//! Impairments of a link, as Linux's netem makes them: loss, duplication, reordering,
//! corruption, delay with jitter, and a rate with a bounded queue. People test their own
//! programs under a bad network with them: `mem://lab[loss=2%/delay=5ms/jitter=1ms]`.
//!
//! This module decides what happens to each frame a member sends (its fate); the link
//! carries it out. Every choice comes from a seedable PRNG, so `seed=` repeats a run's
//! choices as long as the stacks send the same frames in the same order.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Frames a rate-limited link holds for the wire before it drops more (netem's default).
const LIMIT: usize = 1000;

/// What a locator's `[...]` asks for. Probabilities are fractions (0.02 for `2%`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    /// A frame is dropped with this probability.
    pub loss: f64,
    /// A frame is sent twice with this probability.
    pub dup: f64,
    /// A frame skips the delay and goes ahead of every frame queued with this probability.
    pub reorder: f64,
    /// A frame has one random bit flipped with this probability. `Some` (even `Some(0.0)`)
    /// asks for checksums on the segment.
    pub corrupt: Option<f64>,
    /// Every frame arrives this much after it left.
    pub delay: Duration,
    /// The delay varies by up to this much either way (uniformly), which reorders frames
    /// as netem does when it exceeds the gap between them.
    pub jitter: Duration,
    /// The link's rate in bits per second: frames leave one after another at this rate.
    pub rate: Option<u64>,
    /// Frames waiting for the wire (at `rate`) before more are dropped.
    pub limit: usize,
    /// The PRNG's seed; a random one when None.
    pub seed: Option<u64>,
    /// The member's MTU (IP packet size) in place of the link's own; it sends no larger.
    pub mtu: Option<usize>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Splits a locator's address from its parameters: `lab[loss=2%/dup=1%]` is `lab` with
/// loss and dup. Parameters are separated by `/`, as vdeplug4's are, or by `,`. Without
/// `[...]`, the parameters are None.
pub fn split(spec: &str) -> io::Result<(&str, Option<Params>)> {
    let Some(open) = spec.find('[') else {
        if spec.contains(']') {
            return Err(invalid(format!("{spec:?}: ']' without '['")));
        }
        return Ok((spec, None));
    };
    let (name, rest) = spec.split_at(open);
    let Some(body) = rest[1..].strip_suffix(']') else {
        return Err(invalid(format!(
            "{spec:?}: parameters go last, in one [...]: e.g. lab[loss=2%/delay=5ms]"
        )));
    };
    Ok((name, Some(parse(body)?)))
}

const KEYS: &str = "loss, dup, reorder, corrupt, delay, jitter, rate, limit, seed, mtu";

/// Parses `key=value` pairs separated by `/` or `,`.
pub fn parse(body: &str) -> io::Result<Params> {
    let mut p = Params {
        limit: LIMIT,
        ..Default::default()
    };
    let mut seen = Vec::new();
    for item in body.split(['/', ',']).filter(|s| !s.trim().is_empty()) {
        let (key, value) = item
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| invalid(format!("{item:?}: give a value, key=value ({KEYS})")))?;
        if seen.contains(&key) {
            return Err(invalid(format!("{key} given twice")));
        }
        seen.push(key);
        let what = |e: String| invalid(format!("{key}={value}: {e}"));
        match key {
            "loss" => p.loss = percent(value).map_err(what)?,
            "dup" => p.dup = percent(value).map_err(what)?,
            "reorder" => p.reorder = percent(value).map_err(what)?,
            "corrupt" => p.corrupt = Some(percent(value).map_err(what)?),
            "delay" => p.delay = time(value).map_err(what)?,
            "jitter" => p.jitter = time(value).map_err(what)?,
            "rate" => p.rate = Some(rate(value).map_err(what)?),
            "limit" => {
                p.limit = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| what("not a count of frames (1 or more)".into()))?
            }
            "mtu" => {
                p.mtu = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| (68..=65535).contains(n))
                        .ok_or_else(|| what("not an MTU from 68 to 65535".into()))?,
                )
            }
            "seed" => {
                p.seed = Some(
                    value
                        .parse()
                        .map_err(|_| what("not an unsigned 64-bit number".into()))?,
                )
            }
            _ => {
                return Err(invalid(format!(
                    "unknown parameter {key:?} (known: {KEYS})"
                )))
            }
        }
    }
    Ok(p)
}

/// A probability given as a percentage, `2%` or `2` (as tc reads it).
fn percent(s: &str) -> Result<f64, String> {
    let n = s.strip_suffix('%').unwrap_or(s);
    match n.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v / 100.0),
        _ => Err("not a percentage from 0% to 100%".into()),
    }
}

/// A time with its unit: `5ms`, `200us`, `1.5s`.
fn time(s: &str) -> Result<Duration, String> {
    let units = [("us", 1e-6), ("ms", 1e-3), ("s", 1.0)];
    for (u, scale) in units {
        if let Some(n) = s.strip_suffix(u) {
            return match n.parse::<f64>() {
                Ok(v) if (0.0..=3600.0).contains(&(v * scale)) => {
                    Ok(Duration::from_secs_f64(v * scale))
                }
                _ => Err("not a time from 0 to 1 hour".into()),
            };
        }
    }
    Err("give a unit: us, ms or s (e.g. 5ms)".into())
}

/// A rate as tc writes it: `100mbit`, `1gbit`, `500kbit`, `bit`; `bps` and its multiples
/// are bytes per second.
fn rate(s: &str) -> Result<u64, String> {
    let units = [
        ("kbit", 1e3),
        ("mbit", 1e6),
        ("gbit", 1e9),
        ("tbit", 1e12),
        ("bit", 1.0),
        ("kbps", 8e3),
        ("mbps", 8e6),
        ("gbps", 8e9),
        ("tbps", 8e12),
        ("bps", 8.0),
    ];
    let lower = s.to_ascii_lowercase();
    for (u, scale) in units {
        if let Some(n) = lower.strip_suffix(u) {
            return match n.parse::<f64>() {
                Ok(v) if v * scale >= 8.0 && v * scale <= 1e15 => Ok((v * scale) as u64),
                _ => Err("not a rate from 8bit to 1000tbit".into()),
            };
        }
    }
    Err("give a unit: bit, kbit, mbit, gbit (or bps, kbps, ... in bytes)".into())
}

/// A small, fast, seedable PRNG (xorshift64*), seeded through splitmix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniform number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// A uniform number in [0, n), n > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// What the impairments of one network did, counted over all its impaired members.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Frames the members sent.
    pub sent: u64,
    /// Frames of which no copy reached the wire (`loss`, or a full `rate` queue).
    pub lost: u64,
    /// Frames sent twice.
    pub duplicated: u64,
    /// Copies that went ahead of the frames queued.
    pub reordered: u64,
    /// Copies with a bit flipped.
    pub corrupted: u64,
}

#[derive(Debug, Default)]
struct Counters([AtomicU64; 5]);

/// The counters of every impaired network of the process, by name (`mem://NAME`).
static COUNTERS: Mutex<Option<HashMap<String, Arc<Counters>>>> = Mutex::new(None);

/// What the impairments of the network called `name` (`lab` for `mem://lab[...]`) have done
/// so far in this process; None if no member of that name was impaired.
pub fn counts(name: &str) -> Option<Counts> {
    let map = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    let c = map.as_ref()?.get(name)?;
    let n = |i: usize| c.0[i].load(Relaxed);
    Some(Counts {
        sent: n(0),
        lost: n(1),
        duplicated: n(2),
        reordered: n(3),
        corrupted: n(4),
    })
}

/// One copy of a sent frame that reaches the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    /// When it arrives; None: at once.
    pub due: Option<Instant>,
    /// It goes ahead of every frame the receiver has queued (reordered).
    pub ahead: bool,
    /// The byte to flip a bit of, and the bit (a mask), if it is corrupted.
    pub flip: Option<(usize, u8)>,
}

impl Copy {
    /// Applies the corruption chosen for this copy to `frame`.
    pub fn corrupt(&self, frame: &mut [u8]) {
        if let Some((i, bit)) = self.flip {
            if let Some(b) = frame.get_mut(i) {
                *b ^= bit;
            }
        }
    }
}

/// The impairments of one member's sending side: its parameters, PRNG and the state of its
/// rate (when the wire is next free, and what waits for it).
#[derive(Debug)]
pub struct Impair {
    p: Params,
    rng: Rng,
    busy_until: Option<Instant>,
    /// When each frame waiting for the wire finishes leaving (at most `limit`).
    waiting: VecDeque<Instant>,
    counters: Arc<Counters>,
    /// What the last fate did, for a packet capture (see [`Impair::last_note`]).
    last: Option<&'static str>,
}

impl Impair {
    /// Impairs with `p`, from a PRNG seeded with `seed`; counts what it does under `name`
    /// (see [`counts`]).
    pub fn new(p: Params, seed: u64, name: &str) -> Impair {
        let mut map = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
        let counters = map
            .get_or_insert_with(HashMap::new)
            .entry(name.to_string())
            .or_default()
            .clone();
        Impair {
            p,
            rng: Rng::new(seed),
            busy_until: None,
            waiting: VecDeque::new(),
            counters,
            last: None,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.p
    }

    /// What happens to a frame of `len` bytes sent at `now`: none, one or two copies reach
    /// the wire. As in netem, loss is decided once (a lost frame that is also duplicated
    /// leaves once); each copy then has its own corruption, reordering and jitter, and
    /// takes its own time at `rate`.
    pub fn fate(&mut self, len: usize, now: Instant) -> [Option<Copy>; 2] {
        let mut count = 1;
        if self.rng.chance(self.p.loss) {
            count -= 1;
        }
        if self.rng.chance(self.p.dup) {
            count += 1;
        }
        let mut out = [None, None];
        for slot in out.iter_mut().take(count) {
            *slot = self.copy(len, now);
        }
        let c = &self.counters.0;
        c[0].fetch_add(1, Relaxed);
        let copies = out.iter().flatten().count();
        c[1].fetch_add((copies == 0) as u64, Relaxed);
        c[2].fetch_add((copies == 2) as u64, Relaxed);
        c[3].fetch_add(
            out.iter().flatten().filter(|c| c.ahead).count() as u64,
            Relaxed,
        );
        let flipped = out.iter().flatten().filter(|c| c.flip.is_some()).count();
        c[4].fetch_add(flipped as u64, Relaxed);
        self.last = match (copies, flipped) {
            (0, _) => Some("dropped by the link's impairments (loss, or its rate queue full)"),
            (_, 1..) => Some("corrupted by the link's impairments (a bit flipped on the wire)"),
            (2, _) => Some("duplicated by the link's impairments"),
            _ => None,
        };
        if let Some(note) = self.last {
            tracing::debug!(len, "frame {note}");
        }
        out
    }

    /// What the last [`Impair::fate`] did to its frame, if anything: dropped, corrupted or
    /// duplicated it.
    pub fn last_note(&self) -> Option<&'static str> {
        self.last
    }

    fn copy(&mut self, len: usize, now: Instant) -> Option<Copy> {
        let flip = match self.p.corrupt {
            Some(c) if len > 0 && self.rng.chance(c) => {
                let i = self.rng.below(len as u64) as usize;
                Some((i, 1u8 << self.rng.below(8)))
            }
            _ => None,
        };
        let left = match self.p.rate {
            Some(bps) => {
                while self.waiting.front().is_some_and(|t| *t <= now) {
                    self.waiting.pop_front();
                }
                if self.waiting.len() >= self.p.limit {
                    return None; // the queue is full: tail drop, as a real link's
                }
                let start = self.busy_until.filter(|b| *b > now).unwrap_or(now);
                let bits = len as u128 * 8;
                let t = start + Duration::from_nanos((bits * 1_000_000_000 / bps as u128) as u64);
                self.busy_until = Some(t);
                self.waiting.push_back(t);
                t
            }
            None => now,
        };
        let ahead = self.rng.chance(self.p.reorder);
        let arrive = if ahead {
            left
        } else {
            let j = self.p.jitter.as_nanos() as u64;
            let delay = self.p.delay.as_nanos() as i128
                + if j > 0 {
                    self.rng.below(2 * j + 1) as i128 - j as i128
                } else {
                    0
                };
            left + Duration::from_nanos(delay.max(0) as u64)
        };
        Some(Copy {
            due: (arrive > now).then_some(arrive),
            ahead,
            flip,
        })
    }
}

#[cfg(test)]
#[path = "impair_tests.rs"]
mod tests;
