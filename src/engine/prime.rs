//! Fast start: a source is opened with a small probe (a few tens of kilobytes, so a live
//! source starts at the pace of its own bytes, not after a megabyte of probing), and what
//! the probe left unknown is learnt from the first packets instead: an audio stream's
//! sample rate and channels (the MPEG-TS muxer needs them before its header for a stream
//! it copies) come from decoding its first packet. The packets read meanwhile are kept
//! and written first, so nothing is lost and the first keyframe goes out as soon as the
//! upstream sends it. A stream that is only encoded is not waited for: its encoder opens
//! with the profile's format (or 48 kHz stereo) and resamples what comes.

use ff::format::context::Input;
use ff::Packet;
use ffmpeg_next as ff;
use std::time::{Duration, Instant};

/// How long priming may read before giving up on the streams still incomplete.
const LIMIT: Duration = Duration::from_secs(3);
/// How many bytes priming may hold.
const BUDGET: usize = 16 * 1024 * 1024;

/// Whether the muxer (or an encoder) can take input stream `index` as it is.
fn complete(ictx: &Input, index: usize) -> bool {
    let Some(st) = ictx.stream(index) else {
        return true;
    };
    let par = st.parameters();
    if par.medium() != ff::media::Type::Audio {
        return true;
    }
    // SAFETY: reading plain fields of valid codec parameters.
    unsafe { (*par.as_ptr()).sample_rate > 0 && (*par.as_ptr()).ch_layout.nb_channels > 0 }
}

/// What priming gives back.
pub struct Primed {
    /// Packets read while priming, in order: to be processed before reading on.
    pub packets: Vec<Packet>,
    /// Streams whose parameters never came (to be left out).
    pub incomplete: Vec<usize>,
}

/// A decoder for one incomplete audio stream, until its first frame.
struct Learner {
    index: usize,
    dec: ff::decoder::Audio,
}

/// Whether the streams are not all known for what they are: some stream's kind is
/// unknown, or an MPEG-TS source was joined where its PMT came after the probe's bytes.
/// The demuxer then made its streams from their packets alone, and guessed from their
/// content: a mid-GOP H.264 stream came out unknown, or as MP3 audio. The PMT names
/// them, and the demuxer corrects the streams when it comes.
fn unidentified(ictx: &Input) -> bool {
    let unknown = ictx
        .streams()
        .any(|st| st.parameters().medium() == ff::media::Type::Unknown);
    // SAFETY: reading the context's program list (count and pointers it owns).
    let no_pmt = ictx.format().name() == "mpegts"
        && unsafe {
            let c = ictx.as_ptr();
            (0..(*c).nb_programs as usize).all(|i| (**(*c).programs.add(i)).nb_stream_indexes == 0)
        };
    unknown || no_pmt
}

/// Reads packets while the streams are not all known (see [`unidentified`]), or until
/// [`LIMIT`] passes or the source ends or fails: the packets read, to be processed first.
/// Without this, the stream would be left out of the session (for the video: a channel
/// with sound and no picture) or taken for what it is not. A packet read while its
/// stream was taken for another codec is dropped: it was cut by that codec's parser.
pub fn identify(
    ictx: &mut Input,
    keep_going: &dyn Fn() -> bool,
    mut on_packet: impl FnMut(),
) -> Vec<Packet> {
    let codec = |ictx: &Input, i: usize| ictx.stream(i).map(|st| st.parameters().id());
    let mut read = Vec::new();
    let (t0, mut bytes) = (Instant::now(), 0usize);
    while unidentified(ictx) && t0.elapsed() < LIMIT && bytes < BUDGET && keep_going() {
        let mut pkt = Packet::empty();
        if pkt.read(ictx).is_err() {
            break;
        }
        on_packet();
        bytes += pkt.size();
        let was = codec(ictx, pkt.stream());
        read.push((pkt, was));
    }
    read.into_iter()
        .filter(|(p, was)| codec(ictx, p.stream()) == *was)
        .map(|(p, _)| p)
        .collect()
}

/// Reads packets until every stream of `streams` is complete, or [`LIMIT`] passes, or
/// the source ends or fails (`read` gives libav's error; priming then ends and the
/// caller reads on and meets the same state). `held`: packets already read (see
/// [`identify`]), learnt from first and given back first.
pub fn prime(
    ictx: &mut Input,
    streams: &[usize],
    held: Vec<Packet>,
    keep_going: &dyn Fn() -> bool,
    mut on_packet: impl FnMut(),
) -> Primed {
    let mut learners: Vec<Learner> = streams
        .iter()
        .filter(|i| !complete(ictx, **i))
        .filter_map(|&index| {
            let st = ictx.stream(index)?;
            let dec = ff::codec::context::Context::from_parameters(st.parameters())
                .ok()?
                .decoder()
                .audio()
                .ok()?;
            Some(Learner { index, dec })
        })
        .collect();
    for pkt in &held {
        if let Some(pos) = learners.iter().position(|l| l.index == pkt.stream()) {
            if learn(ictx, &mut learners[pos], pkt) {
                learners.swap_remove(pos);
            }
        }
    }
    let (t0, mut bytes) = (Instant::now(), held.iter().map(Packet::size).sum::<usize>());
    let mut packets = held;
    while !learners.is_empty() && t0.elapsed() < LIMIT && bytes < BUDGET && keep_going() {
        let mut pkt = Packet::empty();
        if pkt.read(ictx).is_err() {
            break;
        }
        on_packet();
        bytes += pkt.size();
        if let Some(pos) = learners.iter().position(|l| l.index == pkt.stream()) {
            if learn(ictx, &mut learners[pos], &pkt) {
                learners.swap_remove(pos);
            }
        }
        packets.push(pkt);
    }
    let incomplete = streams
        .iter()
        .copied()
        .filter(|i| !complete(ictx, *i))
        .collect();
    Primed {
        packets,
        incomplete,
    }
}

/// Decodes `pkt`; on the first frame, writes its rate, channels and format into the
/// stream's parameters (see [`record`]). True once learnt.
fn learn(ictx: &mut Input, l: &mut Learner, pkt: &Packet) -> bool {
    if l.dec.send_packet(pkt).is_err() {
        return false;
    }
    // SAFETY: allocates an empty AVFrame (av_frame_alloc); the decoder fills it.
    let mut frame = unsafe { ff::frame::Frame::empty() };
    if l.dec.receive_frame(&mut frame).is_err() {
        return false;
    }
    record(ictx, l.index, &frame);
    true
}

/// Writes audio frame `f`'s rate, channels and format into the parameters of input
/// stream `index`, where the probe left them unknown: what priming does for a stream to
/// be copied, and what a session does on the first frame its own decoder gives for a
/// stream it only encodes (it starts without waiting for it). Nothing for other streams.
pub fn record(ictx: &mut Input, index: usize, f: &ff::frame::Frame) {
    if index >= ictx.nb_streams() as usize || complete(ictx, index) {
        return;
    }
    // SAFETY: the stream exists (checked above); plain field writes on its parameters,
    // and a channel layout copy that allocates only for custom layouts. `f` is a decoded
    // audio frame (the stream is audio: `complete` is true for every other kind).
    unsafe {
        let f = f.as_ptr();
        if (*f).sample_rate <= 0 || (*f).ch_layout.nb_channels <= 0 {
            return;
        }
        let st = *(*ictx.as_mut_ptr()).streams.add(index);
        let par = (*st).codecpar;
        (*par).sample_rate = (*f).sample_rate;
        (*par).format = (*f).format;
        ff::ffi::av_channel_layout_uninit(&mut (*par).ch_layout);
        ff::ffi::av_channel_layout_copy(&mut (*par).ch_layout, &(*f).ch_layout);
        if (*par).frame_size <= 0 {
            (*par).frame_size = (*f).nb_samples;
        }
    }
}
