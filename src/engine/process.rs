//! The `custom_ffmpeg` producer: a child process whose stdout is MPEG-TS, fed into the same
//! hub as the in-process pipeline (same fan-out, same keyframe start for late joiners).
//!
//! The child runs in its own process group with a parent-death signal, so it dies with
//! the worker thread that started it, even if amps itself is killed. Stopping sends SIGTERM
//! to the group, then SIGKILL after a grace period. stderr is drained continuously by a
//! helper thread (a child blocked on a full pipe is a classic hang) and its last lines are
//! kept in the channel status.

use super::command::argv;
use super::error::{Error, Stage};
use super::hub::HubWriter;
use super::pipeline::{Ctx, End};
use super::status::Status;
use crate::config::CustomFfmpeg;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const STDERR_LINES: usize = 20;
const TERM_GRACE: Duration = Duration::from_secs(2);

/// Starts the command in its own process group, with amps' environment minus the token.
fn spawn(args: &[String], cmd: &CustomFfmpeg) -> Result<Child, String> {
    let mut command = Command::new(&args[0]);
    command
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &cmd.cwd {
        command.current_dir(dir);
    }
    // The child gets amps' environment minus the token, plus the channel's `env`.
    command.env_remove("AMPS_TOKEN").envs(&cmd.env);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", args[0]))
}

/// Keeps the last [`STDERR_LINES`] lines of the child's stderr in the status and logs a
/// few of them (at most 5 every 10 s).
fn read_stderr(
    stderr: std::process::ChildStderr,
    channel: u32,
    status: Arc<Mutex<Status>>,
) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(format!("amps-ch-{channel}-err"))
        .spawn(move || {
            let mut logged = 0u32;
            let mut window = Instant::now();
            for line in Lines::new(stderr) {
                if window.elapsed() > Duration::from_secs(10) {
                    window = Instant::now();
                    logged = 0;
                }
                if logged < 5 {
                    tracing::warn!(channel, "custom command: {line}");
                }
                logged += 1;
                let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
                st.stderr_tail.push(line);
                let excess = st.stderr_tail.len().saturating_sub(STDERR_LINES);
                st.stderr_tail.drain(..excess);
            }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))
}

/// Copies the child's stdout into the hub until it ends, stalls, or the channel stops.
fn pump(ctx: &Ctx, stdout: &mut ChildStdout) -> Result<End, String> {
    let mut writer = HubWriter::new(ctx.hub.clone());
    let mut buf = vec![0u8; 188 * 256];
    let mut last_data = Instant::now();
    let fd = stdout.as_raw_fd();
    loop {
        if !(ctx.keep_going)() {
            return Ok(End::Stopped);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, 100 ms timeout.
        let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ready < 0 {
            // EINTR and friends: poll again (never fall through to a blocking read).
            continue;
        }
        if ready == 0 {
            if last_data.elapsed() > ctx.stall_timeout {
                return Err(format!(
                    "the command wrote nothing for {} s",
                    ctx.stall_timeout.as_secs()
                ));
            }
            continue;
        }
        match stdout.read(&mut buf) {
            Ok(0) => return Ok(End::Eof),
            Ok(n) => {
                last_data = Instant::now();
                let _ = writer.write_all(&buf[..n]);
                if ctx.hub.has_keyframe() {
                    (ctx.on_running)();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the command's output: {e}")),
        }
    }
}

/// Runs the command until its output ends, it stalls, or the channel stops.
pub fn run(ctx: &Ctx, cmd: &CustomFfmpeg, ffmpeg_path: Option<&str>) -> Result<End, Error> {
    let fail = |stage, detail| Error::new(ctx.stream.id, &ctx.stream.source, stage, detail);
    let args = argv(cmd, ctx.stream, ffmpeg_path).map_err(|e| fail(Stage::Setup, e))?;
    supervise(ctx, cmd, &args).map_err(|e| fail(Stage::Process, e))
}

/// Starts the command and feeds its output to the hub until it ends.
fn supervise(ctx: &Ctx, cmd: &CustomFfmpeg, args: &[String]) -> Result<End, String> {
    let mut child = spawn(args, cmd)?;
    tracing::info!(channel = ctx.stream.id, pid = child.id(), program = %args[0], "custom command started");
    let lock = || ctx.status.lock().unwrap_or_else(|p| p.into_inner());
    lock().stderr_tail.clear();
    let stderr = child.stderr.take().expect("piped");
    let reader = read_stderr(stderr, ctx.stream.id, ctx.status.clone())?;
    let mut stdout = child.stdout.take().expect("piped");
    let outcome = pump(ctx, &mut stdout);
    let exit = terminate(&mut child, matches!(outcome, Ok(End::Eof)));
    let _ = reader.join();
    let last = lock().stderr_tail.last().cloned();
    match outcome {
        Ok(End::Eof) => {
            let why = match exit {
                Some(code) => format!("the command exited ({code})"),
                None => "the command closed its output".to_owned(),
            };
            Err(match last {
                Some(l) => format!("{why}: {l}"),
                None => why,
            })
        }
        other => other,
    }
}

/// Lines of a child's stderr, split at `\n` or `\r` (ffmpeg's progress lines end with
/// `\r` alone) and cut to [`MAX_LINE`] bytes, so a chatty child cannot grow a line forever.
struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<String>,
    eof: bool,
}

const MAX_LINE: usize = 1024;

impl<R: Read> Lines<R> {
    fn new(inner: R) -> Self {
        Lines {
            inner,
            buf: Vec::new(),
            pending: Default::default(),
            eof: false,
        }
    }
}

impl<R: Read> Iterator for Lines<R> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut chunk = [0u8; 4096];
        while self.pending.is_empty() && !self.eof {
            match self.inner.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    self.eof = true;
                    if !self.buf.is_empty() {
                        let line = String::from_utf8_lossy(&self.buf).into_owned();
                        self.pending.push_back(line);
                        self.buf.clear();
                    }
                }
                Ok(n) => {
                    for &b in &chunk[..n] {
                        if b == b'\n' || b == b'\r' {
                            if !self.buf.is_empty() {
                                let line = String::from_utf8_lossy(&self.buf).into_owned();
                                self.pending.push_back(line);
                                self.buf.clear();
                            }
                        } else if self.buf.len() < MAX_LINE {
                            self.buf.push(b);
                        }
                    }
                }
            }
        }
        self.pending.pop_front()
    }
}

/// Whether child `pid` has exited, without reaping it (its id stays taken).
fn exited_unreaped(pid: u32) -> bool {
    // SAFETY: waitid with WNOWAIT only reads the child's state into `info`.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r == 0 && info.si_pid() != 0
    }
}

/// Stops the child's whole process group: SIGTERM, then SIGKILL after a grace period.
/// Returns how it exited, if it did on its own. `exiting`: its output just ended, so give
/// it a moment to exit by itself (its exit status is what the user needs to see).
fn terminate(child: &mut Child, exiting: bool) -> Option<String> {
    let patience = Instant::now()
        + if exiting {
            Duration::from_millis(500)
        } else {
            Duration::ZERO
        };
    let pgid = child.id() as i32;
    loop {
        if exited_unreaped(child.id()) {
            // The leader is gone; what it started (a shell's pipeline) must not outlive it.
            // Until it is reaped its zombie holds the id, so the group id cannot have been
            // reused by anyone else.
            // SAFETY: signalling the process group we created for this child.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.to_string());
            }
        }
        if Instant::now() >= patience {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signalling the process group we created for this child.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // SAFETY: as above; reaps stragglers of the group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_split_on_cr_and_are_bounded() {
        let mut data = b"frame=1\rframe=2\rerror: boom\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 10_000));
        data.extend(b"\nlast");
        let lines: Vec<String> = Lines::new(&data[..]).collect();
        assert_eq!(lines[..3], ["frame=1", "frame=2", "error: boom"]);
        assert_eq!(lines[3].len(), MAX_LINE);
        assert_eq!(lines[4], "last");
    }
}
