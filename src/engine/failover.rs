//! The failover and backoff policy of a channel's producer, as a pure state machine: after
//! each producer session the channel's worker reports how it went, and [`Failover::after`]
//! says what to do next (start again, switch source, back off, give up). No threads, no
//! clock, no libav: the worker (`channel.rs`) carries the steps out, and the unit tests
//! below drive every path.
//!
//! The rules: with `backup_sources`, a failed session moves on to the next source at once
//! (each is tried in turn, so none is skipped and none retried forever); only a whole
//! round without output backs off, 0.5 s, 1 s, 2 s, ... up to 10 s. A session that produced
//! output was healthy and starts the count over. A channel that never showed a keyframe
//! gives up after every source failed (at least twice in all).

use std::time::Duration;

/// How a producer session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Session {
    /// Asked to stop (no viewers, a change, shutdown, or the primary is back).
    Stopped,
    /// The source ended.
    Eof,
    /// The session failed with this error.
    Failed(String),
}

/// What the worker knows after a session.
#[derive(Clone, Debug)]
pub struct Report {
    pub session: Session,
    /// The session delivered output to the hub.
    pub produced: bool,
    /// The channel still wants to run (not stopped, not shut down, not idle).
    pub wanted: bool,
    /// The stream has `loop: true`.
    pub looping: bool,
    /// The current source is a local file.
    pub file: bool,
    /// The hub has held a keyframe (clients could start) at some point.
    pub has_keyframe: bool,
}

/// A change of source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    /// The source index switched to (0: the primary).
    pub to: usize,
    /// Why, for the status and the log.
    pub why: String,
}

/// What to do after a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Stop producing (not an end: the channel may start again later).
    Stop,
    /// Start the next session at once on the same source (a loop, a healthy source).
    Again,
    /// The primary source is healthy again: switch back to it and start at once.
    BackToPrimary,
    /// A file without `loop` finished: its clients get a clean end.
    FileEnded,
    /// The session failed (`error`); `retry` is None when the channel gives up.
    Failed { error: String, retry: Option<Retry> },
}

/// How a failed channel tries again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Move to another source first.
    pub switch: Option<Switch>,
    /// Wait this long before the next session (zero: at once).
    pub wait: Duration,
}

/// The failover state of one producer run.
#[derive(Clone, Debug)]
pub struct Failover {
    sources: usize,
    active: usize,
    failures: u32,
}

impl Failover {
    /// `sources`: the primary plus its backups (at least 1).
    pub fn new(sources: usize) -> Failover {
        Failover {
            sources: sources.max(1),
            active: 0,
            failures: 0,
        }
    }

    /// The source index in use (0: the primary).
    pub fn active(&self) -> usize {
        self.active
    }

    /// Decides the next step. `take_primary_back` is asked only when a session on a
    /// backup stopped while the channel is still wanted: whether the background check
    /// found the primary healthy (and clears that finding).
    pub fn after(&mut self, r: Report, take_primary_back: impl FnOnce() -> bool) -> Step {
        let error = match r.session {
            Session::Stopped if self.active != 0 && r.wanted && take_primary_back() => {
                self.active = 0;
                self.failures = 0;
                return Step::BackToPrimary;
            }
            Session::Stopped => return Step::Stop,
            Session::Eof if r.looping && r.produced => {
                self.failures = 0;
                return Step::Again;
            }
            Session::Eof if r.file => return Step::FileEnded,
            Session::Eof => "the source ended".to_owned(),
            Session::Failed(e) => e,
        };
        if !r.wanted {
            return Step::Stop;
        }
        if r.produced {
            self.failures = 0;
        }
        self.failures += 1;
        let n = self.sources as u32;
        if !r.has_keyframe && self.failures >= n.max(2) {
            return Step::Failed { error, retry: None };
        }
        let mut switch = None;
        if self.sources > 1 {
            let next = (self.active + 1) % self.sources;
            let what = if self.active == 0 {
                "the primary source".to_owned()
            } else {
                format!("backup source {}", self.active)
            };
            switch = Some(Switch {
                to: next,
                why: format!("{what} failed: {error}"),
            });
            self.active = next;
            if self.failures < n {
                // Not every source has failed yet this round: try the next one now.
                let retry = Retry {
                    switch,
                    wait: Duration::ZERO,
                };
                return Step::Failed {
                    error,
                    retry: Some(retry),
                };
            }
        }
        let rounds = self.failures.div_ceil(n).max(1);
        let wait =
            Duration::from_millis(500u64 << (rounds - 1).min(5)).min(Duration::from_secs(10));
        Step::Failed {
            error,
            retry: Some(Retry { switch, wait }),
        }
    }
}

/// The background check of a primary source while a backup plays: the wait before each
/// check, doubling after each failed one, at most 5 minutes.
#[derive(Clone, Debug)]
pub struct CheckBackoff {
    wait: Duration,
}

impl CheckBackoff {
    pub fn new(first: Duration) -> CheckBackoff {
        CheckBackoff {
            wait: first.max(Duration::from_secs(1)),
        }
    }

    /// The wait before the next check; each call doubles the one after.
    pub fn next_wait(&mut self) -> Duration {
        let w = self.wait;
        self.wait = (self.wait * 2).min(Duration::from_secs(300));
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(session: Session) -> Report {
        Report {
            session,
            produced: false,
            wanted: true,
            looping: false,
            file: false,
            has_keyframe: true,
        }
    }

    fn failed(e: &str) -> Report {
        report(Session::Failed(e.into()))
    }

    fn waits(step: &Step) -> Option<Duration> {
        match step {
            Step::Failed { retry: Some(r), .. } => Some(r.wait),
            _ => None,
        }
    }

    #[test]
    fn a_single_source_backs_off_doubling_up_to_ten_seconds() {
        let mut f = Failover::new(1);
        let got: Vec<u128> = (0..8)
            .map(|_| {
                waits(&f.after(failed("boom"), || false))
                    .unwrap()
                    .as_millis()
            })
            .collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
        // A healthy session starts the count over.
        let mut ok = failed("boom");
        ok.produced = true;
        assert_eq!(
            waits(&f.after(ok, || false)),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn backups_are_tried_in_turn_before_a_round_backs_off() {
        let mut f = Failover::new(3);
        let s1 = f.after(failed("a"), || false);
        assert_eq!(
            s1,
            Step::Failed {
                error: "a".into(),
                retry: Some(Retry {
                    switch: Some(Switch {
                        to: 1,
                        why: "the primary source failed: a".into()
                    }),
                    wait: Duration::ZERO
                })
            }
        );
        let s2 = f.after(failed("b"), || false);
        assert_eq!(waits(&s2), Some(Duration::ZERO));
        let s3 = f.after(failed("c"), || false);
        // The round is over: back to the primary, after a wait.
        match s3 {
            Step::Failed {
                retry:
                    Some(Retry {
                        switch: Some(s),
                        wait,
                    }),
                ..
            } => {
                assert_eq!(s.to, 0);
                assert_eq!(s.why, "backup source 2 failed: c");
                assert_eq!(wait, Duration::from_millis(500));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.active(), 0);
        // The second round waits longer.
        f.after(failed("a"), || false);
        f.after(failed("b"), || false);
        assert_eq!(
            waits(&f.after(failed("c"), || false)),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_channel_that_never_started_gives_up_after_every_source_failed() {
        let mut never = failed("x");
        never.has_keyframe = false;
        let mut f = Failover::new(1);
        assert!(waits(&f.after(never.clone(), || false)).is_some());
        assert_eq!(
            f.after(never.clone(), || false),
            Step::Failed {
                error: "x".into(),
                retry: None
            }
        );
        let mut f = Failover::new(3);
        assert!(waits(&f.after(never.clone(), || false)).is_some());
        assert!(waits(&f.after(never.clone(), || false)).is_some());
        assert!(matches!(
            f.after(never, || false),
            Step::Failed { retry: None, .. }
        ));
    }

    #[test]
    fn ends_loops_and_stops() {
        let mut f = Failover::new(1);
        assert_eq!(f.after(report(Session::Stopped), || true), Step::Stop);
        let mut eof = report(Session::Eof);
        eof.file = true;
        assert_eq!(f.after(eof.clone(), || false), Step::FileEnded);
        eof.looping = true;
        eof.produced = true;
        assert_eq!(f.after(eof.clone(), || false), Step::Again);
        // A loop that produced nothing is a failure, not a busy loop.
        eof.produced = false;
        eof.file = false;
        assert_eq!(
            waits(&f.after(eof, || false)),
            Some(Duration::from_millis(500))
        );
        // A live source that ends is a failure to retry.
        match f.after(report(Session::Eof), || false) {
            Step::Failed { error, .. } => assert_eq!(error, "the source ended"),
            other => panic!("{other:?}"),
        }
        // Not wanted any more: stop, whatever happened.
        let mut gone = failed("x");
        gone.wanted = false;
        assert_eq!(f.after(gone, || false), Step::Stop);
    }

    #[test]
    fn the_primary_is_taken_back_only_from_a_backup_that_stopped() {
        let mut f = Failover::new(2);
        f.after(failed("down"), || false);
        assert_eq!(f.active(), 1);
        // A failure on the backup is not asked about the primary.
        let mut asked = false;
        f.after(failed("b"), || {
            asked = true;
            true
        });
        assert!(!asked);
        assert_eq!(f.active(), 0);
        f.after(failed("down"), || false);
        assert_eq!(f.active(), 1);
        // Stopped while the primary check found it healthy: back, counts reset.
        assert_eq!(
            f.after(report(Session::Stopped), || true),
            Step::BackToPrimary
        );
        assert_eq!(f.active(), 0);
        assert_eq!(waits(&f.after(failed("x"), || false)), Some(Duration::ZERO));
        // Stopped on a backup without the primary back: a plain stop.
        assert_eq!(f.after(report(Session::Stopped), || false), Step::Stop);
    }

    #[test]
    fn primary_checks_double_up_to_five_minutes() {
        let mut c = CheckBackoff::new(Duration::from_secs(30));
        let got: Vec<u64> = (0..6).map(|_| c.next_wait().as_secs()).collect();
        assert_eq!(got, [30, 60, 120, 240, 300, 300]);
        assert_eq!(
            CheckBackoff::new(Duration::ZERO).next_wait(),
            Duration::from_secs(1)
        );
    }
}
